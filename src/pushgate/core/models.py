"""Plain records passed between the store, the dispatcher, the channels and the API."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from pushgate.core.lifecycle import State
from pushgate.core.records import InboundRecord, ReportRecord


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
    # The push's inline media (``media`` table) this message sends; ``media_url`` is None
    # until the dispatcher signs a link to it.
    media_id: int | None = None
    # Channel-specific content decided at accept, e.g. a WhatsApp template:
    # {"template": {"name", "language", "header", "values": [...]}}. None for plain messages.
    extra: dict[str, object] | None = None


class Outcome(Enum):
    """What one send attempt came to: the one answer a channel gives, so no result can say two
    contradictory things at once."""

    # The provider took it; its fate follows in status updates.
    SENT = "sent"
    # The provider's answer already says delivered (the sandbox without a delivery delay):
    # recorded as submitted and delivered in the same write, both events and both reports,
    # instead of a second pass over the message for a receipt that is already known.
    DELIVERED = "delivered"
    # Nothing usable came of it: back to the queue after a back-off; the attempt counts.
    RETRY = "retry"
    # Permanent for this message: failed and refunded.
    FAILED = "failed"
    # Not an attempt: the message waits ``retry_after`` seconds and its attempts are not
    # counted (pair limit, bridge session down, SMSC throttling, a phone at its limit).
    DEFER = "defer"
    # The provider refused the channel's credentials: pause the channel and alert; the
    # message waits like DEFER for when the operator fixes it.
    PAUSE_CHANNEL = "pause_channel"

    # Asked several times a message on the dispatch path, so by identity with the members
    # kept below (the results' constructors use them too): Python 3.11 finds
    # ``Outcome.SENT`` on the class through a descriptor (~160 ns), and an Enum's hash is
    # Python code.
    @property
    def went_out(self) -> bool:
        """The provider has the message: it is submitted (or delivered)."""
        return self is _SENT or self is _DELIVERED

    @property
    def waits(self) -> bool:
        """Back to the queue without counting an attempt."""
        return self is _DEFER or self is _PAUSE_CHANNEL


_SENT, _DELIVERED, _RETRY = Outcome.SENT, Outcome.DELIVERED, Outcome.RETRY
_FAILED, _DEFER, _PAUSE_CHANNEL = Outcome.FAILED, Outcome.DEFER, Outcome.PAUSE_CHANNEL


@dataclass(frozen=True, slots=True)
class SendResult:
    """What a channel says about one send attempt. Built with the constructor of its outcome
    (``SendResult.sent(...)``, ``.retry(...)``...), which takes only the fields that outcome
    has."""

    message_id: int
    kind: Outcome
    provider_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    # Seconds the provider asked us to wait before the next try (e.g. Retry-After); for a
    # result that waits, how long.
    retry_after: float | None = None
    # Every provider id of a message that went out as several sends (SMS parts, audio then
    # its text), as (part index, id); aliases of one part (an SMSC id in hex and in decimal)
    # share its index. Status updates name any of them; the message is delivered when every
    # part is, failed when one part fails. Empty: ``provider_id`` is the only id.
    provider_refs: list[tuple[int, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind.went_out:
            if self.retry_after is not None:
                raise ValueError(f"a {self.kind.value} result has no retry_after")
        elif self.provider_id is not None or self.provider_refs:
            raise ValueError(f"a {self.kind.value} result has no provider ids")

    @classmethod
    def sent(cls, message_id: int, provider_id: str | None = None, *,
             provider_refs: list[tuple[int, str]] | None = None, error_code: str | None = None,
             error_message: str | None = None) -> SendResult:
        """Submitted. An error here is a problem with a part of a message that went out
        (an audio's text lost), reported with it."""
        return cls(message_id, _SENT, provider_id, error_code, error_message, None,
                   provider_refs or [])

    @classmethod
    def delivered(cls, message_id: int, provider_id: str | None = None, *,
                  provider_refs: list[tuple[int, str]] | None = None,
                  error_code: str | None = None, error_message: str | None = None
                  ) -> SendResult:
        """Submitted and already delivered; an error as for ``sent``."""
        return cls(message_id, _DELIVERED, provider_id, error_code, error_message, None,
                   provider_refs or [])

    @classmethod
    def retry(cls, message_id: int, error_code: str | None = None,
              error_message: str | None = None, *, retry_after: float | None = None
              ) -> SendResult:
        return cls(message_id, _RETRY, None, error_code, error_message, retry_after)

    @classmethod
    def failed(cls, message_id: int, error_code: str | None = None,
               error_message: str | None = None) -> SendResult:
        return cls(message_id, _FAILED, None, error_code, error_message)

    @classmethod
    def defer(cls, message_id: int, error_code: str | None = None,
              error_message: str | None = None, *, retry_after: float | None = None
              ) -> SendResult:
        return cls(message_id, _DEFER, None, error_code, error_message, retry_after)

    @classmethod
    def pause(cls, message_id: int, error_code: str | None = None,
              error_message: str | None = None, *, retry_after: float | None = None
              ) -> SendResult:
        return cls(message_id, _PAUSE_CHANNEL, None, error_code, error_message,
                   retry_after)


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
    # For FAILED: the provider neither delivered nor billed it, so the credit goes back
    # (the message then moves on to ``refunded``).
    refund: bool = False
    # Which call of a grouped store write brought it, so each caller is told what its own
    # updates changed (the store's bookkeeping; connectors leave it at 0).
    group: int = 0


@dataclass(slots=True)
class InboundMessage:
    """A message a user sent to one of the project's channels (forwarded to the project's
    incoming webhook in Picky's format). ``provider_id`` makes repeated callbacks idempotent."""

    channel_id: int
    number: str
    text: str
    provider_id: str
    at: float
    # Picky's incoming ``type``: 1 text, 2 media, 7 contact/location, 9 button reply.
    type: int = 1
    media_url: str | None = None
    name: str | None = None
    raw: dict[str, object] = field(default_factory=dict)


@dataclass(slots=True)
class InboundPart:
    """One part of a user's concatenated SMS (SMPP), kept durably until every part is in or
    its wait is over. A part is identified by its channel, sender, destination, concatenation
    reference, number of parts and its own number: the store keeps one row per identity."""

    channel_id: int
    number: str
    destination: str
    reference: int
    total: int
    seq: int
    data_coding: int
    data: bytes
    at: float

    @property
    def key(self) -> tuple[int, str, str, int, int]:
        """The message this part belongs to."""
        return (self.channel_id, self.number, self.destination, self.reference, self.total)


@dataclass(slots=True)
class Project:
    id: int
    name: str
    balance_micro: int
    webhook_url: str | None
    active: bool
    # Picky's global webhook: inbound user messages are forwarded here.
    incoming_webhook_url: str | None = None


@dataclass(slots=True)
class TokenInfo:
    token_id: int
    project_id: int
    revoked: bool
    ip_allow: list[str]
    project_active: bool


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """An API token as ``token list`` shows it (never the token itself)."""

    id: int
    label: str
    ip_allow: list[str]
    created_at: float
    revoked_at: float | None


@dataclass(slots=True)
class AcceptResult:
    push_id: int
    # msg_id for each accepted row, in the plan's order.
    message_ids: list[int]
    balance_micro: int
    # True when the push's idempotency key was accepted before: ``push_id`` and
    # ``message_ids`` are that push's, nothing was charged or written.
    replayed: bool = False
    # The plan's numbers the store found opted out, in the accept's own transaction: their
    # entries were refused in place (``core.optouts.without_opted_out``), ``message_ids``
    # follow the plan without them.
    opted_out: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Promotion:
    """What ``Store.promote_due`` did: scheduled messages moved to the queue."""

    promoted: int
    # The channels of the moved messages (their runners are woken).
    channel_ids: frozenset[int]
    # When the next scheduled push is due; None when none is.
    next_due: float | None


@dataclass(slots=True)
class OutboxItem:
    """One pending report for the event webhook, joined with its message."""

    id: int
    project_id: int
    attempts: int
    report: ReportRecord


@dataclass(slots=True)
class InboundForward:
    """One inbound message due at its project's incoming webhook."""

    id: int
    project_id: int
    url: str
    secret: str
    attempts: int
    message: InboundRecord


@dataclass(slots=True)
class OutboxBatch:
    project_id: int
    url: str
    secret: str
    items: list[OutboxItem] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """A report still waiting for one of a project's webhooks (the dashboard's list): an
    event report of the outbox (``kind`` "event", ``subject`` the message's id and state) or
    a user's message for the incoming webhook (``kind`` "incoming", ``subject`` the user's
    number). ``next_attempt_at`` is None once every try was used (given up)."""

    kind: str
    id: int
    subject: str
    at: float
    attempts: int
    next_attempt_at: float | None
    # Why the last try failed (the deliverer's reason), if one did.
    last_error: str | None = None
