"""The ``Store`` interface: every hand-off between pushgate's processes is a row behind it.

SQLite (``sqlite.py``) is the embedded default; PostgreSQL implements the same interface. All SQL
lives in the implementations; callers speak in the records of ``pushgate.core.models``.
"""

from __future__ import annotations

import abc
import random
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pushgate.core.channels import ChannelSpec
from pushgate.core.models import (
    AcceptResult,
    InboundForward,
    InboundMessage,
    OutboundMessage,
    OutboxBatch,
    Project,
    SendResult,
    StatusUpdate,
    TokenInfo,
)
from pushgate.core.push import InlineMedia, PushPlan

#: Seconds a status update for an unknown provider id is kept waiting for its id.
EARLY_UPDATE_TTL = 86_400.0


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
        """The project's channel for a Picky application code, else its channel with that id."""

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
        self, worker_id: str, now: float, ttl: float
    ) -> list[int]:
        """Record this worker's heartbeat, renew its leases, and take free or expired ones up
        to its fair share (``fair_share`` of the active channels among the workers alive in
        the last ``ttl``), handing back any surplus; returns the channel ids this worker holds
        until ``now + ttl``."""

    @abc.abstractmethod
    async def release_channel_leases(self, worker_id: str) -> None: ...

    @abc.abstractmethod
    async def claim_messages(
        self, channel_id: int, worker_id: str, limit: int, now: float, lease_seconds: float
    ) -> list[OutboundMessage]:
        """Mark up to ``limit`` ready messages of the channel ``sending`` under a lease and
        return them, priority first, then oldest. Messages whose earlier lease expired in
        ``sending`` are claimed again with ``possible_resend`` set."""

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
        """How many of the channel's messages went to the provider since ``since`` (caps).
        Counts by last change, so it may over-count: caps err on the safe side."""

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
    async def has_ready_messages(self, channel_id: int, now: float) -> bool: ...

    async def listen(self, on_channel: Callable[[int], None]) -> None:
        """Call ``on_channel(channel_id)`` whenever any process queues messages for a channel,
        until cancelled, so idle dispatchers wake at once instead of at their next poll.

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
