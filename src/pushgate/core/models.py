"""Plain records passed between the store, the dispatcher, the channels and the API."""

from __future__ import annotations

from dataclasses import dataclass, field

from pushgate.core.lifecycle import State


@dataclass(slots=True)
class OutboundMessage:
    """A claimed message, as a channel sends it."""

    id: int
    push_id: int
    project_id: int
    channel_id: int
    number: str
    text: str
    media_url: str | None
    media_kind: str | None
    parts: int
    priority: int
    attempts: int
    # True when an earlier attempt's lease expired: the provider may already have it.
    possible_resend: bool = False


@dataclass(slots=True)
class SendResult:
    """What a channel says about one send attempt."""

    message_id: int
    ok: bool
    provider_id: str | None = None
    retryable: bool = False
    error_code: str | None = None
    error_message: str | None = None
    # Seconds the provider asked us to wait before the next try (e.g. Retry-After).
    retry_after: float | None = None


@dataclass(slots=True)
class StatusUpdate:
    """A lifecycle transition reported after the send (provider callback, receipt, simulation).

    Identifies the message by our id or by the provider's id on a channel.
    """

    state: State
    at: float
    message_id: int | None = None
    channel_id: int | None = None
    provider_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None


@dataclass(slots=True)
class Project:
    id: int
    name: str
    balance_micro: int
    webhook_url: str | None
    active: bool


@dataclass(slots=True)
class TokenInfo:
    token_id: int
    project_id: int
    revoked: bool
    ip_allow: list[str]
    project_active: bool


@dataclass(slots=True)
class AcceptResult:
    push_id: int
    # msg_id for each accepted row, in the plan's order.
    message_ids: list[int]
    balance_micro: int


@dataclass(slots=True)
class OutboxItem:
    """One pending report for the event webhook, joined with its message."""

    id: int
    project_id: int
    attempts: int
    payload: dict[str, object]


@dataclass(slots=True)
class OutboxBatch:
    project_id: int
    url: str
    secret: str
    items: list[OutboxItem] = field(default_factory=list)
