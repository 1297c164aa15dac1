"""pushgate's answers in Picky's shape: ``{"status": <code>, "message": ..., ...}`` as JSON,
and the mapping of the errors routes raise to such answers.

``PUSHGATE_ALWAYS_HTTP_200`` (for Picky clients that read only the body) makes every such
answer a 200; the error helpers take it as ``always_200``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response

from pushgate.api import metrics
from pushgate.core.errors import ApiError, Code
from pushgate.core.pricing import credit_text, format_credits
from pushgate.store.errors import InsufficientCredit, StoreUnavailable
from pushgate.store.outage import outage_of

if TYPE_CHECKING:
    from pushgate.store.base import Store


JSON = "application/json"
_JSON_HEADER = (b"content-type", JSON.encode("latin-1"))


class JsonAnswer(Response):
    """The ``Response`` Starlette builds for JSON ``body`` bytes with no headers of the
    caller's (the same status, ``raw_headers`` and body), set directly: ``Response.__init__``
    renders and inspects its arguments generically, a visible cost on every push answered.
    tests/api/test_answers.py compares the two."""

    media_type = JSON

    def __init__(self, body: bytes, status_code: int = 200) -> None:
        self.status_code = status_code
        self.background = None
        self.body = body
        self.raw_headers = [(b"content-length", b"%d" % len(body)), _JSON_HEADER]


def answer(payload: dict[str, Any], http_status: int = 200,
           headers: dict[str, str] | None = None, always_200: bool = False) -> Response:
    """``payload`` as JSON; ``always_200`` answers 200 whatever ``http_status`` says."""
    if always_200:
        http_status = 200
    if headers is None and http_status >= 200 and http_status not in (204, 304):
        return JsonAnswer(orjson.dumps(payload), http_status)
    return Response(orjson.dumps(payload), status_code=http_status, media_type=JSON,
                    headers=headers)


def short_of_credit(what: str, exc: InsufficientCredit) -> ApiError:
    """The refusal of a push (or number filter) the balance cannot cover, with both sums."""
    needed, balance = format_credits(exc.needed_micro), format_credits(exc.balance_micro)
    return ApiError(Code.INSUFFICIENT_CREDIT,
                    f"{what} costs {needed}, the balance is {balance}",
                    credit_total=needed, balance=balance)


def accepted_answer(push_id: int, data: list[dict[str, Any]], accepted: int, rejected: int,
                    credit_total_micro: int, balance_micro: int) -> Response:
    """Picky's answer to an accepted push, with pushgate's totals."""
    return answer({
        "status": int(Code.SUCCESS),
        "push_id": str(push_id),
        "message": "Success",
        "data": data,
        "accepted": accepted,
        "rejected": rejected,
        "credit_total": credit_text(credit_total_micro),
        "balance": format_credits(balance_micro),
    })


def iso_time(ts: float | None) -> str | None:
    """pushgate's own time format: ISO 8601 in UTC with its offset, to the millisecond (one
    width, so the texts sort as the times do). Picky's fields keep Picky's formats."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def success(**fields: Any) -> Response:
    """Picky's success envelope around ``fields`` (e.g. ``data``)."""
    return answer({"status": int(Code.SUCCESS), "message": "Success", **fields})


def error_answer(exc: ApiError, always_200: bool) -> Response:
    """An ``ApiError`` as Picky's envelope; its ``retry_after`` becomes a header."""
    metrics.ERRORS.labels(code=str(int(exc.code))).inc()
    payload: dict[str, Any] = {"status": int(exc.code), "message": exc.message}
    headers = None
    for key, value in exc.extra.items():
        if key == "retry_after":
            headers = {"Retry-After": str(value)}
        else:
            payload[key] = value
    return answer(payload, exc.http_status, headers, always_200)


def error_response(exc: Exception, always_200: bool, store: Store) -> Response | None:
    """pushgate's answer to an error a route raised, or None for a bug. A store outage is
    logged once for the process (and its end once), not once per refused request."""
    if isinstance(exc, ApiError):
        return error_answer(exc, always_200)
    if isinstance(exc, StoreUnavailable):
        outage = outage_of(store)
        outage.failed(exc, time.monotonic())
        outage.watch(store.ping)
        return error_answer(ApiError(Code.UNAVAILABLE, str(exc)), always_200)
    return None
