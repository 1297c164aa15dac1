"""What the store's report reads return: typed records, rendered into Picky's JSON by the API
(``api/reports.py``) and the webhook deliverer (``webhooks/payloads.py``), never by the store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pushgate.core.lifecycle import PICKY_STATUS, State


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """A message as reports list it."""

    id: int
    number: str
    state: State
    reference: str | None
    error_code: str | None
    error_message: str | None
    updated_at: float
    body: str
    media: str | None
    media_kind: str | None
    credit_micro: int
    channel_id: int
    resends: int

    @property
    def status(self) -> int:
        """Picky's report status of the message's state."""
        return PICKY_STATUS[self.state]


@dataclass(frozen=True, slots=True)
class MessageDetail(MessageRecord):
    """One message with its history (``GET /api/v2/messages/{id}``)."""

    push_id: int
    attempts: int
    provider_id: str | None
    created_at: float
    priority: int
    segments: int
    parts: int
    # Oldest first, as ``core.history.message_history`` rebuilds them: state, at, detail.
    events: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class PushRecord:
    """A push and its messages counted by state."""

    id: int
    channel_id: int
    priority: int
    entries: int
    accepted: int
    credit_micro: int
    created_at: float
    counts: dict[str, int]
    # A scheduled push's send time (unix seconds); None: sent when accepted.
    send_at: float | None = None


@dataclass(frozen=True, slots=True)
class ReportRecord:
    """One state change of a message due at its project's event webhook."""

    push_id: int
    message_id: int
    number: str
    state: State
    reference: str | None
    error_code: str | None
    error_message: str | None
    body: str
    media: str | None
    media_kind: str | None
    channel_id: int
    at: float


@dataclass(frozen=True, slots=True)
class InboundRecord:
    """A user's message due at its project's incoming webhook."""

    id: int
    project_id: int
    channel_id: int
    number: str
    body: str
    type: int
    provider_id: str | None
    media_url: str | None
    name: str | None
    application: int | str
    # What the connector kept of the provider's message (a JSON object), or None.
    raw: Any


@dataclass(frozen=True, slots=True)
class CheckReport:
    """A number filter's answer for one number (Picky's event 2)."""

    id: int
    push_id: int
    project_id: int
    channel_id: int
    number: str
    # None: not known (a check that gave up, or one not answered yet).
    on_whatsapp: bool | None
    checked_by: str
    chat_id: str | None
    # None while not answered (only ``GET /api/v2/pushes/{id}`` lists such checks).
    checked_at: float | None
    # Why a check gave up (``checked_by: "gave_up"``); None otherwise.
    reason: str | None = None
    # Times a connector was asked.
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class CheckForward:
    """A check's answer due at the project's event webhook (``url``, signed with ``secret``)."""

    id: int
    url: str
    secret: str
    attempts: int
    report: CheckReport


@dataclass(frozen=True, slots=True)
class FoundMessage:
    """A message found by number or reference (the dashboard's search), with its push."""

    push_id: int
    created_at: float
    message: MessageRecord


@dataclass(frozen=True, slots=True)
class FoundPage:
    """A page of the dashboard's search: the messages found, newest first, and ``older``:
    the ``before`` that goes on with the search (the page was full, or a store that searches
    a window of ids at a time stopped at the window's end), None when nothing older is left."""

    found: list[FoundMessage]
    older: int | None

    @classmethod
    def of(cls, found: list[FoundMessage], limit: int, window_end: int | None) -> FoundPage:
        """The page of up to ``limit`` from ``found`` (read with a limit one higher, so a
        full page knows there is more); ``window_end``: where a windowed search stopped with
        older messages left, None when it looked at them all."""
        if len(found) > limit:
            return cls(found[:limit], found[limit - 1].message.id)
        return cls(found, window_end)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One row of a project's credit ledger: a credit added, a push charged (``push_id``),
    credits refunded."""

    id: int
    delta_micro: int
    reason: str
    push_id: int | None
    at: float
