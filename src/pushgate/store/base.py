"""The ``Store`` interface: every hand-off between pushgate's processes is a row behind it.

SQLite (``sqlite.py``) is the embedded default; PostgreSQL implements the same interface. All SQL
lives in the implementations; callers speak in the records of ``pushgate.core.models``.
"""

from __future__ import annotations

import abc
import random
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pushgate.core.channels import ChannelSpec
from pushgate.core.models import (
    AcceptResult,
    InboundForward,
    InboundMessage,
    InboundPart,
    OutboundMessage,
    OutboxBatch,
    Project,
    SendResult,
    StatusUpdate,
    TokenInfo,
)
from pushgate.core.push import InlineMedia, PushPlan

if TYPE_CHECKING:
    from pushgate.store.outage import Outage

#: Seconds a status update for an unknown provider id is kept waiting for its id.
EARLY_UPDATE_TTL = 86_400.0
#: Seconds before the validity sweep looks again at a push whose messages past their validity
#: are still being sent (one may come back queued). Until then the push goes to the back of
#: the sweep's order, so pushes stuck in flight cannot hold up the others; a message that
#: comes back queued meanwhile is never claimed, only expired later.
EXPIRY_RECHECK_SECONDS = 60.0
#: Why a message expired whose lease ran out past its validity: its last send (a worker that
#: stopped, a phone that went silent) may have reached the provider, but is never repeated.
EXPIRED_UNCONFIRMED = "validity period ended before its last send was confirmed"


class InsufficientCredit(Exception):
    def __init__(self, needed_micro: int, balance_micro: int) -> None:
        self.needed_micro = needed_micro
        self.balance_micro = balance_micro
        super().__init__(f"needs {needed_micro} micro-credits, balance {balance_micro}")


class StoreUnavailable(Exception):
    """The database cannot be reached or stays locked; the caller answers 503."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential back-off with jitter for retryable send errors."""

    max_attempts: int = 5
    base_seconds: float = 2.0
    cap_seconds: float = 600.0

    def delay(self, attempts: int, retry_after: float | None = None) -> float:
        """Seconds before the next try after ``attempts`` tries: half fixed, half random, so
        the retries of a burst spread out but never come back at once; never sooner than the
        provider's ``retry_after``."""
        delay = min(self.cap_seconds, self.base_seconds * 2 ** max(0, attempts - 1))
        return max(retry_after or 0.0, delay / 2 + random.uniform(0, delay / 2))


class Store(abc.ABC):
    """Durable state of the gateway. Implementations must be safe to share between the API,
    the dispatcher and the webhook deliverer of one process, and between processes."""

    # --- life -----------------------------------------------------------------------------
    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the database answers."""

    # --- operators --------------------------------------------------------------------------
    @abc.abstractmethod
    async def create_project(
        self, name: str, balance_micro: int, webhook_url: str | None, webhook_secret: str
    ) -> Project: ...

    @abc.abstractmethod
    async def get_project(self, project_id: int) -> Project | None: ...

    @abc.abstractmethod
    async def find_project(self, name: str) -> Project | None: ...

    @abc.abstractmethod
    async def list_projects(self) -> list[Project]: ...

    @abc.abstractmethod
    async def set_webhook(self, project_id: int, url: str | None, secret: str | None) -> None: ...

    @abc.abstractmethod
    async def set_incoming_webhook(self, project_id: int, url: str | None) -> None:
        """Set (or with None remove) the project's incoming webhook (Picky's global webhook,
        signed with the same secret as its event webhook)."""

    @abc.abstractmethod
    async def add_credits(self, project_id: int, delta_micro: int, reason: str) -> int:
        """Add (or, negative, remove) credit; returns the new balance."""

    @abc.abstractmethod
    async def create_token(
        self, project_id: int, token_hash: str, label: str, ip_allow: Sequence[str]
    ) -> int: ...

    @abc.abstractmethod
    async def revoke_token(self, token_id: int) -> bool: ...

    @abc.abstractmethod
    async def list_tokens(self, project_id: int) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def add_channel(self, spec: ChannelSpec) -> ChannelSpec:
        """Insert a channel (``spec.id`` is ignored) and return it with its id."""

    @abc.abstractmethod
    async def update_channel(self, channel_id: int, **changes: Any) -> ChannelSpec | None: ...

    @abc.abstractmethod
    async def list_channels(self, project_id: int | None = None) -> list[ChannelSpec]: ...

    @abc.abstractmethod
    async def get_channel(self, channel_id: int) -> ChannelSpec | None: ...

    # --- accept -----------------------------------------------------------------------------
    @abc.abstractmethod
    async def authenticate(self, token_hash: str) -> TokenInfo | None: ...

    @abc.abstractmethod
    async def find_channel(self, project_id: int, application: int) -> ChannelSpec | None:
        """The project's channel for a Picky application code: of several, the unpaused one
        with the lowest id (a paused one only when all are). Application codes and channel ids
        are different namespaces: a code no channel serves finds nothing, whatever channel
        happens to have that id (a push picks a channel by id with its own ``channel_id``)."""

    @abc.abstractmethod
    async def accept_push(
        self,
        project_id: int,
        channel: ChannelSpec,
        plan: PushPlan,
        now: float,
        expires_at: float | None,
    ) -> AcceptResult:
        """In ONE transaction: debit ``plan.credit_total`` (raise ``InsufficientCredit`` and
        write nothing if the balance does not cover it), insert the push, its inline media and
        its accepted messages as ``queued``."""

    # --- reports ----------------------------------------------------------------------------
    @abc.abstractmethod
    async def get_push(self, project_id: int, push_id: int) -> dict[str, Any] | None:
        """The push row with counts of its messages by state."""

    @abc.abstractmethod
    def iter_push_messages(
        self, project_id: int, push_id: int, chunk: int = 1000
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The push's messages in id order, ``chunk`` at a time (never the whole push)."""

    @abc.abstractmethod
    async def get_message(self, project_id: int, message_id: int) -> dict[str, Any] | None:
        """The message with its list of transitions."""

    @abc.abstractmethod
    async def get_media(self, media_id: int) -> tuple[str, bytes] | None: ...

    @abc.abstractmethod
    async def sandbox_inbox(self, project_id: int, limit: int) -> list[dict[str, Any]]: ...

    # --- dispatch ---------------------------------------------------------------------------
    @abc.abstractmethod
    async def acquire_channel_leases(
        self, worker_id: str, now: float, ttl: float, skip_kinds: Sequence[str] = ()
    ) -> list[int]:
        """Record this worker's heartbeat, renew its leases, and take free or expired ones up
        to its fair share (``fair_share`` of the active channels among the workers alive in
        the last ``ttl``), handing back any surplus; returns the channel ids this worker holds
        until ``now + ttl``. Channels of ``skip_kinds`` (pull channels: phones fetch their own
        messages) are never leased nor counted."""

    @abc.abstractmethod
    async def release_channel_leases(self, worker_id: str) -> None: ...

    @abc.abstractmethod
    async def claim_messages(
        self, channel_id: int, worker_id: str, limit: int, now: float, lease_seconds: float,
        min_priority: int = 0,
    ) -> list[OutboundMessage]:
        """Mark up to ``limit`` ready messages of the channel ``sending`` under a lease and
        return them, priority first, then oldest. Messages whose earlier lease expired in
        ``sending`` are claimed again with ``possible_resend`` set. ``min_priority``: only
        messages of at least that priority (a runner letting urgent ones jump its batch)."""

    @abc.abstractmethod
    async def record_outcomes(
        self, worker_id: str, results: Sequence[SendResult], now: float, policy: RetryPolicy
    ) -> None:
        """Apply send results in one transaction: submitted, retry later, or failed+refunded."""

    @abc.abstractmethod
    async def release_messages(self, worker_id: str, message_ids: Sequence[int]) -> None:
        """Give back claimed messages that were not sent (graceful shutdown)."""

    @abc.abstractmethod
    async def apply_status_updates(self, updates: Sequence[StatusUpdate]) -> int:
        """Apply provider-reported transitions; only forward moves change the state, every
        update is recorded as an event. Returns how many changed a state."""

    @abc.abstractmethod
    async def sent_since(self, channel_id: int, since: float) -> int:
        """How many of the channel's messages went to the provider since ``since`` (caps),
        counted by their ``submitted_at``, whatever happened to them after."""

    @abc.abstractmethod
    async def submitted_before(
        self, channel_id: int, before: float, limit: int
    ) -> list[int]:
        """Ids of the channel's messages in ``submitted`` since before ``before`` (used by
        channels that simulate delivery)."""

    @abc.abstractmethod
    async def expire_due(self, now: float, limit: int) -> int:
        """Expire and refund queued messages past their validity; returns how many."""

    @abc.abstractmethod
    async def has_ready_messages(self, channel_id: int, now: float,
                                 min_priority: int = 0) -> bool:
        """Whether ``claim_messages`` would find something (with the same ``min_priority``)."""

    async def listen(self, on_channel: Callable[[int], None],
                     outage: Outage | None = None) -> None:
        """Call ``on_channel(channel_id)`` whenever any process queues messages for a channel,
        until cancelled, so idle dispatchers wake at once instead of at their next poll. A
        lost connection is made again with back-off; the failure and the reconnection are
        reported to ``outage`` (``store/outage.py``) when given, else logged.

        The default returns at once (no notifications: dispatchers poll, and pushes in the same
        process wake them directly). PostgreSQL implements it with LISTEN/NOTIFY."""
        return None

    # --- webhooks ---------------------------------------------------------------------------
    @abc.abstractmethod
    async def claim_outbox(
        self, worker_id: str, limit: int, now: float, lease_seconds: float
    ) -> list[OutboxBatch]: ...

    @abc.abstractmethod
    async def complete_outbox(self, ids: Sequence[int]) -> None: ...

    @abc.abstractmethod
    async def retry_outbox(
        self, ids: Sequence[int], now: float, schedule: Sequence[float]
    ) -> None:
        """Schedule another try per ``schedule`` (seconds after each failed try), or give up
        on items that used every try."""

    @abc.abstractmethod
    async def outbox_stats(self) -> dict[str, int]: ...

    # --- inbound ----------------------------------------------------------------------------
    @abc.abstractmethod
    async def record_inbound(self, messages: Sequence[InboundMessage], now: float) -> int:
        """Store user messages once each (by channel and provider id) and queue them for the
        project's incoming webhook; returns how many were new."""

    @abc.abstractmethod
    async def add_inbound_parts(self, parts: Sequence[InboundPart]) -> list[InboundPart]:
        """Store parts of users' multi-part SMS, once each (a part already stored keeps its
        first copy); returns every stored part of the messages they belong to, as stored."""

    @abc.abstractmethod
    async def due_inbound_parts(self, channel_id: int, before: float,
                                limit: int) -> list[InboundPart]:
        """Every part of up to ``limit`` of the channel's messages whose first part arrived
        before ``before`` (their wait for the rest is over)."""

    @abc.abstractmethod
    async def drop_inbound_parts(self, parts: Sequence[InboundPart]) -> None:
        """Delete these parts (their message was forwarded)."""

    @abc.abstractmethod
    async def claim_inbound(
        self, limit: int, now: float, lease_seconds: float
    ) -> list[InboundForward]: ...

    @abc.abstractmethod
    async def complete_inbound(self, ids: Sequence[int]) -> None: ...

    @abc.abstractmethod
    async def retry_inbound(
        self, ids: Sequence[int], now: float, schedule: Sequence[float]
    ) -> None:
        """As ``retry_outbox``: the next try per ``schedule``, or give up."""

    # --- devices ----------------------------------------------------------------------------
    # Phones of pull channels (``pushgate.api.devices``). A device claims messages as the
    # worker ``device_worker(device_id)``, so ``record_outcomes`` applies its reports.
    @abc.abstractmethod
    async def register_device(self, device: Device, token_hash: str) -> None:
        """Insert a paired device with the SHA-256 of its bearer token."""

    @abc.abstractmethod
    async def device_by_token(self, token_hash: str) -> Device | None:
        """The device with this token hash, revoked or not."""

    @abc.abstractmethod
    async def get_device(self, device_id: str) -> Device | None: ...

    @abc.abstractmethod
    async def list_devices(self, channel_id: int | None = None) -> list[Device]:
        """Devices (of one channel, or all) with ``in_flight`` counted, oldest first."""

    @abc.abstractmethod
    async def touch_device(
        self,
        device_id: str,
        now: float,
        *,
        user_agent: str | None = None,
        push_token: str | None = None,
        health: dict[str, Any] | None = None,
    ) -> None:
        """Record that the device was seen now; given values replace (``health``: merge
        into) what is stored, None keeps it."""

    @abc.abstractmethod
    async def revoke_devices(
        self, now: float, *, device_id: str | None = None, channel_id: int | None = None
    ) -> int:
        """Revoke one device's token, or every device's of a channel; returns how many."""

    @abc.abstractmethod
    async def claim_for_device(
        self, device_id: str, quota: DeviceQuota, now: float
    ) -> DeviceClaim:
        """In one transaction: the messages the device was handed and has not acknowledged
        yet, plus new ones of its channel within ``quota`` (none while the channel is
        paused, the device paused or before its ``ready_at``). New ones are leases whose
        lease ran out (possible re-sends) first, then queued ones, priority then id, passing
        over a recipient that another online device wrote to in the last
        ``quota.sticky_seconds``. Records the hand-outs, the recipients' device, and when
        the device may next be handed a message."""

    @abc.abstractmethod
    async def note_device_reports(
        self,
        device_id: str,
        reports: Sequence[tuple[int, str, float]],
        now: float,
        lease_seconds: float,
    ) -> dict[int, ReportedMessage]:
        """Record the device's reports ``(message_id, app state, at)`` on the messages it was
        handed (others are ignored) and renew the lease of those it holds and reports as
        Pending or Processed; returns each known message's state and whether the device
        holds it."""

    @abc.abstractmethod
    async def pause_device(self, device_id: str, until: float) -> None:
        """No new messages for the device before ``until`` (Android's send limit)."""

    @abc.abstractmethod
    async def request_reconnect(self, channel_id: int, now: float) -> int:
        """Ask the channel's live devices to reconnect (their event streams close)."""

    @abc.abstractmethod
    async def cancel_channel_queue(
        self, channel_id: int, now: float, reason: str, include_in_flight: bool = False
    ) -> tuple[int, int]:
        """In one transaction: cancel the channel's queued messages (and, with
        ``include_in_flight``, those being sent), refund them, record their events and queue
        their event-webhook reports. Returns (messages, micro-credits refunded)."""

    @abc.abstractmethod
    async def channel_queue_counts(self, channel_id: int) -> dict[str, int]:
        """How many of the channel's messages are ``queued`` and ``sending``."""


def fair_share(active_channels: int, live_workers: int) -> int:
    """How many channels one worker may lease: an even split, rounded up."""
    return -(-active_channels // max(1, live_workers))


def store_for_url(url: str) -> Store:
    """The store implementation for a ``PUSHGATE_DATABASE_URL``."""
    if url.startswith("sqlite"):
        from pushgate.store.sqlite import SQLiteStore

        return SQLiteStore(url)
    if url.startswith(("postgresql", "postgres")):
        from pushgate.store.postgres import PostgresStore

        return PostgresStore(url)
    raise StoreUnavailable(f"unsupported database URL scheme: {url.split(':', 1)[0]!r}")


__all__ = [
    "EARLY_UPDATE_TTL",
    "InlineMedia",
    "InsufficientCredit",
    "RetryPolicy",
    "Store",
    "StoreUnavailable",
    "store_for_url",
]


# --- devices ------------------------------------------------------------------------------------
#: Hand-outs are kept this long: a day for the per-day limit, the rest for late reports.
DEVICE_HISTORY_SECONDS = 7 * 86_400.0


def device_worker(device_id: str) -> str:
    """The lease holder name of a device's claims (``messages.leased_by``)."""
    return f"device:{device_id}"


@dataclass(slots=True)
class Device:
    """A phone paired with a pull channel."""

    id: str
    channel_id: int
    project_id: int
    name: str
    created_at: float
    last_seen_at: float | None = None
    revoked_at: float | None = None
    push_token: str | None = None
    user_agent: str = ""
    # What the device said about itself (SIM cards, battery, network), if anything.
    health: dict[str, Any] | None = None
    # No new messages before this time (random delay, or a full limit window).
    ready_at: float = 0.0
    # No new messages before this time (Android refused to send more).
    paused_until: float = 0.0
    # Event streams opened before this time are closed (``restart``).
    reconnect_at: float = 0.0
    # Messages it holds under a live lease (``list_devices`` only).
    in_flight: int = 0

    def online(self, now: float, offline_after: float) -> bool:
        return (self.revoked_at is None and self.last_seen_at is not None
                and self.last_seen_at >= now - offline_after)


#: The ``devices`` columns both stores read a ``Device`` from (``health`` as JSON text).
DEVICE_COLUMNS = ("id, channel_id, project_id, name, created_at, last_seen_at, revoked_at,"
                  " push_token, user_agent, health, ready_at, paused_until, reconnect_at")


@dataclass(frozen=True, slots=True)
class DeviceQuota:
    """What one fetch may hand a device."""

    # Messages per rolling minute, hour and day (0: no limit).
    per_minute: int
    per_hour: int
    per_day: int
    per_fetch: int
    # A device holding this many messages under a live lease gets no more.
    max_in_flight: int
    lease_seconds: float
    # Devices seen within this many seconds are online (they keep their recipients).
    offline_after: float
    sticky_seconds: float
    # The random pause after each message handed out now, in order (at least ``per_fetch``).
    delays: tuple[float, ...]

    def windows(self) -> list[tuple[float, int]]:
        """(seconds, limit) of each limited window."""
        return [(seconds, limit) for seconds, limit in
                ((60.0, self.per_minute), (3600.0, self.per_hour), (86_400.0, self.per_day))
                if limit > 0]

    def allowance(self, in_flight: int, handed: Sequence[int]) -> int:
        """New messages allowed now, given the live leases held and the hand-outs counted in
        each of ``windows()``."""
        room = [self.per_fetch, self.max_in_flight - in_flight]
        room += [limit - count for (_s, limit), count in zip(self.windows(), handed,
                                                               strict=True)]
        return max(0, min(room))


@dataclass(slots=True)
class DeviceMessage:
    """A message as handed to a device."""

    id: int
    number: str
    text: str
    priority: int
    created_at: float
    expires_at: float | None
    possible_resend: bool = False


@dataclass(slots=True)
class DeviceClaim:
    # Unacknowledged ones handed before, then new ones; priority then id.
    messages: list[DeviceMessage]
    # How many of ``messages`` were handed out by this claim.
    new: int
    # No new messages for the device before this time.
    ready_at: float


@dataclass(slots=True)
class ReportedMessage:
    # The message's lifecycle state (``State`` value).
    state: str
    # The device holds its lease (``record_outcomes`` as ``device_worker(id)`` applies).
    held: bool
