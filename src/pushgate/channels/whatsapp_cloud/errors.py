"""What a Graph send's failure means: the error table (Graph error ``code`` → retry, wait, fail
or pause), ``GraphError``, and reading one from a response."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pushgate.channels.transport import TransportResponse


class Action(enum.Enum):
    RETRY = "retry"            # nothing went out; try again after a back-off
    WAIT = "wait"              # not an attempt: wait (defer), e.g. the pair limit
    FAIL = "fail"              # permanent for this message: fail and refund
    PAUSE = "pause"            # the channel itself is refused: pause it, keep the message


@dataclass(frozen=True, slots=True)
class ErrorRule:
    action: Action
    # Seconds to wait before the next try, when the provider's advice is known.
    retry_after: float | None = None


# The one table turning a Graph error ``code`` into an outcome (channel-wire-formats.md §1.3).
ERROR_RULES: dict[int, ErrorRule] = {
    # Throughput and rate limits: nothing was sent, slow down and retry.
    130429: ErrorRule(Action.RETRY, 1.0),      # number's messages/s exceeded
    4: ErrorRule(Action.RETRY, 60.0),          # app-level call limit
    80007: ErrorRule(Action.RETRY, 60.0),      # WABA rate limit
    131048: ErrorRule(Action.RETRY, 300.0),    # spam rate limit (quality): a long back-off
    # Pair limit: only this recipient must wait (the pair interval, from the config).
    131056: ErrorRule(Action.WAIT),
    # Meta's side failed.
    1: ErrorRule(Action.RETRY),                # API unknown
    2: ErrorRule(Action.RETRY),                # API service
    131000: ErrorRule(Action.RETRY),           # something went wrong
    131016: ErrorRule(Action.RETRY),           # service unavailable
    # Permanent for this message: a retry would get the same answer.
    100: ErrorRule(Action.FAIL),               # invalid parameter (e.g. `to`)
    131008: ErrorRule(Action.FAIL),            # required parameter missing
    131009: ErrorRule(Action.FAIL),            # parameter value invalid
    131026: ErrorRule(Action.FAIL),            # undeliverable (not on WhatsApp, old client)
    131030: ErrorRule(Action.FAIL),            # recipient not in the test number's allowed list
    131047: ErrorRule(Action.FAIL),            # 24 h window closed: only a template may go
    131049: ErrorRule(Action.FAIL),            # Meta chose not to deliver (per-user cap)
    131051: ErrorRule(Action.FAIL),            # unsupported message type
    131052: ErrorRule(Action.FAIL),            # media download error
    131053: ErrorRule(Action.FAIL),            # media upload error
    132000: ErrorRule(Action.FAIL),            # template parameter count mismatch
    132001: ErrorRule(Action.FAIL),            # template does not exist
    132005: ErrorRule(Action.FAIL),            # template hydrated text too long
    132007: ErrorRule(Action.FAIL),            # template format character policy violated
    132012: ErrorRule(Action.FAIL),            # template parameter format mismatch
    132015: ErrorRule(Action.FAIL),            # template paused
    132016: ErrorRule(Action.FAIL),            # template disabled
    # The number or the credentials are refused: every message would fail the same way.
    0: ErrorRule(Action.PAUSE),                # AuthException
    190: ErrorRule(Action.PAUSE),              # access token expired or invalid
    10: ErrorRule(Action.PAUSE),               # permission denied
    368: ErrorRule(Action.PAUSE),              # temporarily blocked for policy violations
    131031: ErrorRule(Action.PAUSE),           # account locked
    133010: ErrorRule(Action.PAUSE),           # phone number not registered
}
# Graph's permission errors span a range of codes.
PERMISSION_CODES = range(200, 300)
# A code missing from the table: nothing was sent, so a retry costs nothing and the retry limit
# ends it; HTTP 401 means the token, whatever the code.
UNKNOWN_ERROR = ErrorRule(Action.RETRY)


def error_rule(code: int | None, http_status: int | None) -> ErrorRule:
    if code is not None and code in ERROR_RULES:
        return ERROR_RULES[code]
    if code is not None and code in PERMISSION_CODES:
        return ErrorRule(Action.PAUSE)
    if http_status == 401:
        return ErrorRule(Action.PAUSE)
    return UNKNOWN_ERROR


@dataclass(frozen=True, slots=True)
class GraphError:
    """A send that Meta refused or that never got an answer."""

    code: int | None
    message: str
    http_status: int | None = None
    # A provider-independent code when Meta gave none ("timeout", "network", "http-502").
    local_code: str | None = None
    retry_after: float | None = None

    @property
    def error_code(self) -> str:
        return str(self.code) if self.code is not None else (self.local_code or "unknown")


class Unsendable(Exception):
    """A message this channel cannot turn into a Graph request (fails it permanently)."""


def graph_error(response: TransportResponse) -> GraphError:
    retry_after = None
    header = response.headers.get("retry-after")
    if header and header.replace(".", "", 1).isdigit():
        retry_after = float(header)
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if not isinstance(error, dict):
        return GraphError(None, f"Graph API answered HTTP {response.status_code}",
                          http_status=response.status_code,
                          local_code=f"http-{response.status_code}", retry_after=retry_after)
    code = error.get("code")
    text = str(error.get("message") or f"HTTP {response.status_code}")
    data = error.get("error_data")
    details = data.get("details") if isinstance(data, dict) else None
    if details and details not in text:
        text = f"{text}: {details}"
    return GraphError(code if isinstance(code, int) else None, text,
                      http_status=response.status_code,
                      local_code=f"http-{response.status_code}", retry_after=retry_after)


def describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
