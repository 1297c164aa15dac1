"""Scheduled pushes: when a push's ``send_at`` asks it to be sent, decided with no I/O.

``send_at`` is ISO 8601 with an offset (``2026-12-24T09:00:00+01:00``, or ``Z``) or unix
seconds, as a number or a string of one. A time already past (a clock a little behind, a
client that computed "now") sends now, as a user expects; a time more than
``PUSHGATE_MAX_SCHEDULE_SECONDS`` ahead, a time without an offset (ambiguous: whose local
time?) or anything unreadable is refused with ``Code.INVALID_SEND_AT``, nothing charged.
"""

from __future__ import annotations

import math
from datetime import datetime

from pushgate.core.errors import ApiError, Code

#: A ``send_at`` at most this far ahead of the accept time is sent at once, not scheduled:
#: scheduling a push due within the dispatcher's own reaction time would only delay it.
SEND_NOW_WITHIN_SECONDS = 0.5

# Unix seconds before 2001-09-09 are refused as typos (milliseconds would be 1,000 times
# larger and land far in the future, refused by the horizon).
_MIN_UNIX = 1_000_000_000


def parse_send_at(value: str | int | float, now: float, max_ahead: float) -> float | None:
    """The unix time ``value`` names, or None when the push is to be sent now (no value, or a
    time not later than ``now`` + ``SEND_NOW_WITHIN_SECONDS``). ``ApiError`` with
    ``INVALID_SEND_AT`` when it cannot be read, has no offset, or is more than ``max_ahead``
    seconds ahead."""
    at = _unix(value)
    if at - now <= SEND_NOW_WITHIN_SECONDS:
        return None
    if at - now > max_ahead:
        raise ApiError(Code.INVALID_SEND_AT,
                       f"`send_at` {_shown(value)} is more than {max_ahead:.0f} seconds ahead")
    return at


def send_at_instant(value: str | int | float) -> float:
    """The unix time ``value`` names, whatever the clock says (``INVALID_SEND_AT`` when it
    cannot be read): what identifies a schedule in an idempotency key or a digest, where
    "past, so now" must not turn the same request into another."""
    return _unix(value)


def _unix(value: str | int | float) -> float:
    if isinstance(value, bool):
        raise ApiError(Code.INVALID_SEND_AT, f"`send_at` must be a time, got {value!r}")
    if isinstance(value, int | float):
        number = float(value)
    else:
        text = value.strip()
        if not text:
            raise ApiError(Code.INVALID_SEND_AT, "`send_at` is empty")
        try:
            number = float(text) if _numeric(text) else _iso(text, value)
        except (ValueError, OverflowError):
            raise ApiError(Code.INVALID_SEND_AT,
                           f"`send_at` is neither ISO 8601 with an offset nor unix seconds,"
                           f" got {_shown(value)}") from None
    if not math.isfinite(number) or number < _MIN_UNIX:
        raise ApiError(Code.INVALID_SEND_AT,
                       f"`send_at` is not a plausible unix time, got {_shown(value)}")
    return number


def _numeric(text: str) -> bool:
    return text.isascii() and text.replace(".", "", 1).isdigit()


def _iso(text: str, original: str) -> float:
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ApiError(Code.INVALID_SEND_AT,
                       f"`send_at` needs an offset (e.g. `Z` or `+05:30`), got"
                       f" {_shown(original)}")
    return parsed.timestamp()


def _shown(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def starts_at(send_at: float | None, now: float) -> float:
    """When a push's messages start to count: validity runs from here (its send_at, or the
    accept time ``now``), not from accept."""
    return now if send_at is None else max(now, send_at)
