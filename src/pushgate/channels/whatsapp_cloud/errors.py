"""What a Graph send's failure means: the error table (Graph error ``code`` → the send's
``Outcome``: retry, wait, fail or pause), ``GraphError``, and reading one from a response."""

from __future__ import annotations

from dataclasses import dataclass

from pushgate.channels.transport import TransportResponse
from pushgate.core.models import Outcome


@dataclass(frozen=True, slots=True)
class ErrorRule:
    # RETRY, DEFER (only this recipient waits: the pair limit), FAILED or PAUSE_CHANNEL.
    outcome: Outcome
    # Seconds to wait before the next try, when the provider's advice is known.
    retry_after: float | None = None


# The one table turning a Graph error ``code`` into an outcome (channel-wire-formats.md §1.3).
ERROR_RULES: dict[int, ErrorRule] = {
    # Throughput and rate limits: nothing was sent, slow down and retry.
    130429: ErrorRule(Outcome.RETRY, 1.0),     # number's messages/s exceeded
    4: ErrorRule(Outcome.RETRY, 60.0),         # app-level call limit
    80007: ErrorRule(Outcome.RETRY, 60.0),     # WABA rate limit
    131048: ErrorRule(Outcome.RETRY, 300.0),   # spam rate limit (quality): a long back-off
    # Pair limit: only this recipient must wait (the pair interval, from the config).
    131056: ErrorRule(Outcome.DEFER),
    # Meta's side failed.
    1: ErrorRule(Outcome.RETRY),               # API unknown
    2: ErrorRule(Outcome.RETRY),               # API service
    131000: ErrorRule(Outcome.RETRY),          # something went wrong
    131016: ErrorRule(Outcome.RETRY),          # service unavailable
    # Permanent for this message: a retry would get the same answer.
    100: ErrorRule(Outcome.FAILED),            # invalid parameter (e.g. `to`)
    131008: ErrorRule(Outcome.FAILED),         # required parameter missing
    131009: ErrorRule(Outcome.FAILED),         # parameter value invalid
    131026: ErrorRule(Outcome.FAILED),         # undeliverable (not on WhatsApp, old client)
    131030: ErrorRule(Outcome.FAILED),         # recipient not in the test number's allowed list
    131047: ErrorRule(Outcome.FAILED),         # 24 h window closed: only a template may go
    131049: ErrorRule(Outcome.FAILED),         # Meta chose not to deliver (per-user cap)
    131051: ErrorRule(Outcome.FAILED),         # unsupported message type
    131052: ErrorRule(Outcome.FAILED),         # media download error
    131053: ErrorRule(Outcome.FAILED),         # media upload error
    132000: ErrorRule(Outcome.FAILED),         # template parameter count mismatch
    132001: ErrorRule(Outcome.FAILED),         # template does not exist
    132005: ErrorRule(Outcome.FAILED),         # template hydrated text too long
    132007: ErrorRule(Outcome.FAILED),         # template format character policy violated
    132012: ErrorRule(Outcome.FAILED),         # template parameter format mismatch
    132015: ErrorRule(Outcome.FAILED),         # template paused
    132016: ErrorRule(Outcome.FAILED),         # template disabled
    # The number or the credentials are refused: every message would fail the same way.
    0: ErrorRule(Outcome.PAUSE_CHANNEL),       # AuthException
    190: ErrorRule(Outcome.PAUSE_CHANNEL),     # access token expired or invalid
    10: ErrorRule(Outcome.PAUSE_CHANNEL),      # permission denied
    368: ErrorRule(Outcome.PAUSE_CHANNEL),     # temporarily blocked for policy violations
    131031: ErrorRule(Outcome.PAUSE_CHANNEL),  # account locked
    133010: ErrorRule(Outcome.PAUSE_CHANNEL),  # phone number not registered
}
# Graph's permission errors span a range of codes.
PERMISSION_CODES = range(200, 300)
# A code missing from the table: nothing was sent, so a retry costs nothing and the retry limit
# ends it; HTTP 401 means the token, whatever the code.
UNKNOWN_ERROR = ErrorRule(Outcome.RETRY)


def error_rule(code: int | None, http_status: int | None) -> ErrorRule:
    if code is not None and code in ERROR_RULES:
        return ERROR_RULES[code]
    if code is not None and code in PERMISSION_CODES:
        return ErrorRule(Outcome.PAUSE_CHANNEL)
    if http_status == 401:
        return ErrorRule(Outcome.PAUSE_CHANNEL)
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
