"""The app's message states, read: a phone's reports (``PATCH /message``) checked and turned
into send results and status updates, and the faults that make the phone rest.

Sent → submitted, Delivered → delivered, Failed → read from the result code in the app's text
(``read_app_error``, ``channel.py``): Android's limit and a phone that cannot send re-queue the
message without counting an attempt, a passing fault is retried, anything else is failed and
refunded; Cancelled → refunded. Pending and Processed only renew the lease (the store notes
them). Ids the phone was never handed are ignored, as the original server does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

import msgspec

from pushgate.channels.android.channel import (
    FAULT_OUTCOMES,
    PhoneFault,
    PhoneSettings,
    read_app_error,
)
from pushgate.core.devices import Device
from pushgate.core.lifecycle import State
from pushgate.core.models import Outcome, SendResult, StatusUpdate

# Message states of the app (``states`` keys and ``state`` values of a report).
APP_STATES = frozenset({"Pending", "Processed", "Sent", "Delivered", "Failed", "Cancelling",
                        "Cancelled"})


class RecipientReport(msgspec.Struct):
    phoneNumber: str | None = None  # noqa: N815 - the app's field names
    state: str | None = None
    error: str | None = None


class MessageReport(msgspec.Struct):
    id: str | int
    state: str
    recipients: list[RecipientReport] = msgspec.field(default_factory=list)
    states: dict[str, str | int | float] = msgspec.field(default_factory=dict)


reports_decoder = msgspec.json.Decoder(list[MessageReport])


class Report(NamedTuple):
    """One message's report, read: pushgate's message id, the app's state, when (never in
    the future) and the app's error text, if any."""

    message_id: int
    state: str
    at: float
    error: str | None


class ReportRefused(ValueError):
    """A report the app's server answers 400 (the text is the answer's message)."""


def parse_app_time(value: str | int | float, now: float) -> float:
    """A time from the app: an RFC 3339 string, or epoch milliseconds (older app builds).
    Never later than ``now``: a phone's clock running ahead must not date the future."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        at = float(value) / 1000.0
    else:
        at = datetime.fromisoformat(str(value).strip()).timestamp()
    return min(at, now)


def read_reports(reports: list[MessageReport], now: float) -> list[Report]:
    """The reports about ids pushgate hands out; raises ``ReportRefused`` for an unknown
    state or an unreadable time."""
    parsed: list[Report] = []
    for report in reports:
        unknown = ({report.state} | set(report.states)) - APP_STATES
        if unknown:
            raise ReportRefused(f"unknown state {sorted(unknown)[0]!r}")
        try:
            at = parse_app_time(report.states[report.state], now) \
                if report.state in report.states else now
        except (ValueError, OverflowError, OSError):
            raise ReportRefused(f"invalid time in `states` of message {report.id!r}") from None
        text = str(report.id).strip()
        if text.isascii() and text.isdigit() and len(text) < 19:
            error = next((r.error for r in report.recipients if r.error), None)
            if error is not None:   # PostgreSQL's text columns refuse NUL
                error = error.replace("\x00", "")
            parsed.append(Report(int(text), report.state, at, error))
        # Anything else is not an id pushgate hands out: ignored like unknown ids.
    return parsed


def rest_seconds(faults: set[PhoneFault], phone: PhoneSettings) -> float | None:
    """How long a phone rests after reporting ``faults`` (the longest rest they call for)."""
    return max((phone.limit_pause_seconds if f is PhoneFault.LIMIT
                else phone.trouble_pause_seconds for f in faults), default=None)


def outcomes_of(
    device: Device,
    reports: list[Report],
    known: dict[int, Any],
) -> tuple[list[SendResult], list[StatusUpdate], set[PhoneFault]]:
    """Turn a phone's reports into send results (for messages it holds) and status updates
    (for messages that moved on since it was handed them), and the faults that mean the phone
    must rest (Android's limit, or a phone that cannot send: ``PhoneFault.LIMIT`` / ``PHONE``).
    ``known`` (message id → ``ReportedMessage``) is updated as reports apply, so a message
    reported twice in one batch counts once. A failure is read from the app's text, e.g.
    "Send result: RESULT_ERROR_LIMIT_EXCEEDED (…)" (``read_app_error``)."""
    results: list[SendResult] = []
    updates: list[StatusUpdate] = []
    rests: set[PhoneFault] = set()
    label = device.name or device.id
    for mid, state, at, error in reports:
        info = known.get(mid)
        if info is None:
            continue
        if state in ("Sent", "Delivered"):
            if info.held:
                results.append(SendResult.sent(mid, f"{device.id}/{mid}"))
                info.held, info.state = False, State.SUBMITTED.value
            elif state == "Sent":
                updates.append(StatusUpdate(State.SUBMITTED, at, message_id=mid))
            if state == "Delivered":
                updates.append(StatusUpdate(State.DELIVERED, at, message_id=mid))
        elif state == "Failed":
            failure = read_app_error(error)
            code = failure.code or failure.text or "failed"
            reason = f"phone {label}: {failure.text or 'failed'}"
            if failure.fault in (PhoneFault.LIMIT, PhoneFault.PHONE):
                rests.add(failure.fault)
            if not info.held:
                if info.state == State.SUBMITTED.value:
                    # Failed after it was sent (the SMS centre's delivery report).
                    updates.append(StatusUpdate(State.FAILED, at, message_id=mid,
                                                error_code=code, error_message=reason,
                                                refund=True))
                continue
            outcome = FAULT_OUTCOMES[failure.fault]
            if outcome is Outcome.DEFER:
                # Not the message's fault and not an attempt: back to the queue for a phone
                # that may still send.
                why = ("reached Android's SMS limit" if failure.fault is PhoneFault.LIMIT
                       else "cannot send now")
                results.append(SendResult.defer(
                    mid, code, f"phone {label} {why} ({failure.text}); re-queued",
                    retry_after=0.0))
                info.held, info.state = False, State.QUEUED.value
            elif outcome is Outcome.RETRY:
                results.append(SendResult.retry(mid, code, reason))
                info.held, info.state = False, State.QUEUED.value
            else:
                results.append(SendResult.failed(mid, code, reason))
                info.held, info.state = False, State.REFUNDED.value
        elif state == "Cancelled" and info.held:
            results.append(SendResult.failed(mid, "Cancelled", f"phone {label} cancelled it"))
            info.held, info.state = False, State.REFUNDED.value
    return results, updates, rests
