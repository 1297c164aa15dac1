"""The ``Store`` interface: every hand-off between pushgate's processes is a row behind it.

One small interface per area (``Admin``, ``Accepting``, ``Reports``, ``Claiming``, ``Outcomes``,
``Outbox``, ``Inbound``, ``Devices``, ``Checks``); ``Store`` combines them. SQLite
(``store/sqlite/``) is the embedded default; PostgreSQL (``store/postgres/``) implements the
same interface. All SQL lives in the implementations; callers speak in the records of
``pushgate.core``. The factory is ``store/factory.py``, the errors ``store/errors.py``.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from pushgate.core.channels import ChannelSpec
from pushgate.core.checks import CheckPlan, GiveUp, NumberCheck, PendingCheck
from pushgate.core.devices import Device, DeviceClaim, DeviceQuota, ReportedMessage
from pushgate.core.models import (
    AcceptResult,
    InboundForward,
    InboundMessage,
    InboundPart,
    OutboundMessage,
    OutboxBatch,
    Project,
    Promotion,
    SendResult,
    StatusUpdate,
    TokenInfo,
    TokenRecord,
    WebhookDelivery,
)
from pushgate.core.optouts import KeywordSettings, OptOut, OptoutEvent
from pushgate.core.policy import RetryPolicy
from pushgate.core.push import PushPlan
from pushgate.core.records import (
    CheckForward,
    CheckReport,
    FoundPage,
    LedgerEntry,
    MessageDetail,
    MessageRecord,
    PushRecord,
)

if TYPE_CHECKING:
    from pushgate.store.outage import Outage


class Admin(Protocol):
    """Operators' records: projects, credits, tokens, channels, and the accept path's lookups."""

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
    async def list_tokens(self, project_id: int) -> list[TokenRecord]: ...

    @abc.abstractmethod
    async def add_channel(self, spec: ChannelSpec) -> ChannelSpec:
        """Insert a channel (``spec.id`` is ignored) and return it with its id."""

    @abc.abstractmethod
    async def update_channel(self, channel_id: int, **changes: Any) -> ChannelSpec | None: ...

    @abc.abstractmethod
    async def list_channels(self, project_id: int | None = None) -> list[ChannelSpec]: ...

    @abc.abstractmethod
    async def get_channel(self, channel_id: int) -> ChannelSpec | None: ...

    @abc.abstractmethod
    async def authenticate(self, token_hash: str) -> TokenInfo | None: ...

    @abc.abstractmethod
    async def find_channel(self, project_id: int, application: int) -> ChannelSpec | None:
        """The project's channel for a Picky application code: of several, the unpaused one
        with the lowest id (a paused one only when all are). Application codes and channel ids
        are different namespaces: a code no channel serves finds nothing, whatever channel
        happens to have that id (a push picks a channel by id with its own ``channel_id``)."""


class Accepting(Protocol):
    """Taking a push in: one transaction debits, inserts the push and queues its messages."""

    @abc.abstractmethod
    async def accept_push(
        self,
        project_id: int,
        channel: ChannelSpec,
        plan: PushPlan,
        now: float,
        expires_at: float | None,
        send_at: float | None = None,
        idempotency_key: str | None = None,
        idempotency_digest: str | None = None,
    ) -> AcceptResult:
        """In ONE transaction: refuse in place the entries to numbers the project has opted
        out (``AcceptResult.opted_out``; ``AllOptedOut`` and nothing written when no entry is
        left), debit the rest's credit (raise ``InsufficientCredit`` and write nothing if the
        balance does not cover it), insert the push, its inline media and its accepted messages
        as ``queued``; with ``send_at`` (a scheduled push, later than ``now``) as ``scheduled``
        instead, the push due for ``promote_due`` at ``send_at``. A project without opt-outs
        pays no lookup of its numbers.

        With ``idempotency_key``: when the project accepted a push under that key before,
        nothing is written or charged and the answer is that push's (its id, its message ids
        in order, the balance now, ``replayed``, and as ``opted_out`` the plan's numbers that
        push has no message for); else the key is recorded with the push in the same
        transaction, so a push refused (``InsufficientCredit``, ``AllOptedOut``) leaves it
        free. Of two concurrent accepts of one key, one writes and the other replays it.
        ``idempotency_digest`` (``core.push.plan_digest``) is recorded with the key; a later
        accept under the key with another digest raises ``IdempotencyKeyReused`` and writes
        nothing (a key recorded without a digest replays unchecked)."""

    @abc.abstractmethod
    async def accept_reply(
        self,
        project_id: int,
        channel: ChannelSpec,
        plan: PushPlan,
        number: str,
        now: float,
        expires_at: float | None,
        not_since: float,
        confirmation: bool = False,
    ) -> AcceptResult | None:
        """``accept_push`` for an instant reply to ``number``, unless an instant reply to
        that number on that channel was accepted after ``not_since``: then None, and nothing
        is written. The loop guard's note is written in the same transaction, so a reply
        refused (``InsufficientCredit``) leaves the number free, and of two processes
        answering the same user at once only one passes. An opted-out number gets no reply,
        except a ``confirmation``: the answer to the STOP keyword it just wrote."""


class Optouts(Protocol):
    """The numbers each project must send nothing to, its STOP / START keywords, and the
    event 4 rows users' keywords leave for the event webhook. Numbers are given normalised
    (``core.optouts.normal_number``)."""

    @abc.abstractmethod
    async def add_optouts(self, project_id: int, numbers: Sequence[str], now: float,
                          source: str) -> int:
        """Opt ``numbers`` out; returns how many were not opted out before."""

    @abc.abstractmethod
    async def remove_optouts(self, project_id: int, numbers: Sequence[str]) -> int:
        """Opt ``numbers`` back in; returns how many were opted out."""

    @abc.abstractmethod
    async def list_optouts(self, project_id: int, after: str, limit: int) -> list[OptOut]:
        """The project's opt-outs in number order, those after ``after`` (a page)."""

    @abc.abstractmethod
    async def count_optouts(self, project_id: int) -> int: ...

    @abc.abstractmethod
    async def keyword_settings(self, project_id: int) -> KeywordSettings:
        """The project's keywords and confirmations (the defaults when never set)."""

    @abc.abstractmethod
    async def set_keyword_settings(self, project_id: int, settings: KeywordSettings) -> None: ...

    @abc.abstractmethod
    async def claim_optout_events(self, limit: int, now: float,
                                  lease_seconds: float) -> list[OptoutEvent]:
        """Due keyword events (``record_inbound`` wrote them) under a lease."""

    @abc.abstractmethod
    async def complete_optout_events(self, ids: Sequence[int]) -> None: ...

    @abc.abstractmethod
    async def retry_optout_events(self, ids: Sequence[int], now: float,
                                  schedule: Sequence[float]) -> None: ...


class Reports(Protocol):
    """Reads behind the report endpoints."""

    @abc.abstractmethod
    async def get_push(self, project_id: int, push_id: int) -> PushRecord | None:
        """The push row with counts of its messages by state."""

    @abc.abstractmethod
    def iter_push_messages(
        self, project_id: int, push_id: int, chunk: int = 1000
    ) -> AsyncIterator[list[MessageRecord]]:
        """The push's messages in id order, ``chunk`` at a time (never the whole push)."""

    @abc.abstractmethod
    async def list_pushes(self, project_id: int, before: int | None,
                          limit: int) -> list[PushRecord]:
        """A page of the project's pushes, newest first: up to ``limit`` with ids below
        ``before`` (None: from the newest), each with its messages counted by state."""

    @abc.abstractmethod
    async def push_messages(self, project_id: int, push_id: int, after: int,
                            limit: int) -> list[MessageRecord]:
        """A page of the push's messages in id order: up to ``limit`` with ids above
        ``after``."""

    @abc.abstractmethod
    async def project_counts_since(self, project_id: int, since: float) -> dict[str, int]:
        """The messages of the project's pushes accepted at or after ``since``, counted by
        state (the dashboard's "today")."""

    @abc.abstractmethod
    async def push_project(self, push_id: int) -> int | None:
        """The project a push belongs to (the operator's commands, which take any push)."""

    @abc.abstractmethod
    async def get_message(self, project_id: int, message_id: int) -> MessageDetail | None:
        """The message with its list of transitions."""

    @abc.abstractmethod
    async def find_messages(self, project_id: int, *, number: str | None = None,
                            reference: str | None = None, before: int | None = None,
                            limit: int = 50) -> FoundPage:
        """A page of the project's messages to ``number`` or carrying ``reference`` (exact
        matches; one of the two), newest first: up to ``limit`` with ids below ``before``
        (None: from the newest), and the ``before`` of the next page. It looks at one window
        of ``rows.SEARCH_WINDOW`` ids a call (indexes by number and reference cost bulk
        accepts too much, revisions 0020 and 0021), so a page may hold fewer than ``limit``
        and still have older ones."""

    @abc.abstractmethod
    async def credit_history(self, project_id: int, before: int | None,
                             limit: int) -> list[LedgerEntry]:
        """A page of the project's credit ledger, newest first: up to ``limit`` rows with ids
        below ``before`` (None: from the newest)."""

    @abc.abstractmethod
    async def get_media(self, media_id: int) -> tuple[str, bytes] | None: ...

    @abc.abstractmethod
    async def sandbox_inbox(self, project_id: int, limit: int) -> list[MessageRecord]: ...


class Claiming(Protocol):
    """The dispatch queue: channel leases, claims, pacing counts, wake-ups."""

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
    async def channel_workers(self, channel_ids: Sequence[int], now: float) -> dict[int, str]:
        """The worker holding each of these channels' leases at ``now`` (a channel nobody
        serves is absent)."""

    @abc.abstractmethod
    async def claim_messages(
        self, channel_id: int, worker_id: str, limit: int, now: float, lease_seconds: float,
        min_priority: int = 0, reclaim: bool = True,
    ) -> list[OutboundMessage]:
        """Mark up to ``limit`` ready messages of the channel ``sending`` under a lease and
        return them, priority first, then oldest. Messages whose earlier lease expired in
        ``sending`` are claimed again first, with ``possible_resend`` set, unless
        ``reclaim`` is False (they wait for a later claim that looks). ``min_priority``:
        only messages of at least that priority (a runner letting urgent ones jump its
        batch)."""

    @abc.abstractmethod
    async def promote_due(self, now: float, limit: int) -> Promotion:
        """Move up to ``limit`` ``scheduled`` messages of pushes whose ``send_at`` is not
        after ``now`` to ``queued`` (oldest push first, in id order), and clear a push's
        due time once none of its messages is scheduled. Says how many moved, their
        channels, and when the next push is due (None: none is scheduled)."""

    @abc.abstractmethod
    async def release_messages(self, worker_id: str, message_ids: Sequence[int]) -> None:
        """Give back claimed messages that were not sent (graceful shutdown)."""

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
    async def queue_depths(self) -> dict[tuple[int, int], int]:
        """Messages ``queued``, by (channel, priority): read at most every few seconds (the
        metrics' snapshot), by the index the claims use."""

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


class Outcomes(Protocol):
    """What happens to claimed messages: send outcomes, provider status updates, expiry and
    cancellation."""

    @abc.abstractmethod
    async def record_outcomes(
        self, worker_id: str, results: Sequence[SendResult], now: float, policy: RetryPolicy
    ) -> None:
        """Apply send results in one transaction: submitted, retry later, or failed+refunded."""

    @abc.abstractmethod
    async def apply_status_updates(self, updates: Sequence[StatusUpdate]) -> int:
        """Apply provider-reported transitions; only forward moves change the state, every
        update is recorded as an event. Returns how many changed a state."""

    @abc.abstractmethod
    async def expire_due(self, now: float, limit: int) -> int:
        """Expire and refund queued messages past their validity; returns how many."""

    @abc.abstractmethod
    async def cancel_channel_queue(
        self, channel_id: int, now: float, reason: str, include_in_flight: bool = False
    ) -> tuple[int, int]:
        """In one transaction: cancel the channel's queued messages (and, with
        ``include_in_flight``, those being sent), refund them, record their events and queue
        their event-webhook reports. Returns (messages, micro-credits refunded)."""

    @abc.abstractmethod
    async def cancel_push(self, project_id: int, push_id: int, now: float) -> tuple[int, int]:
        """In one transaction: cancel the push's messages still ``queued`` or ``scheduled``
        (none handed to a channel yet; those being sent or sent are left alone), refund them,
        record their events and queue their event-webhook reports, as
        ``cancel_channel_queue`` does. A push of another project cancels nothing. Returns
        (messages, micro-credits refunded)."""

    @abc.abstractmethod
    async def channel_queue_counts(self, channel_id: int) -> dict[str, int]:
        """How many of the channel's messages are ``queued`` and ``sending``."""


class Outbox(Protocol):
    """The webhook outbox: state changes waiting for the customer's webhook."""

    @abc.abstractmethod
    async def claim_outbox(
        self, worker_id: str, limit: int, now: float, lease_seconds: float
    ) -> list[OutboxBatch]: ...

    @abc.abstractmethod
    async def complete_outbox(self, ids: Sequence[int]) -> None: ...

    @abc.abstractmethod
    async def retry_outbox(
        self, ids: Sequence[int], now: float, schedule: Sequence[float],
        error: str | None = None,
    ) -> None:
        """Schedule another try per ``schedule`` (seconds after each failed try), or give up
        on items that used every try; ``error`` (why this try failed) is kept for the
        dashboard."""

    @abc.abstractmethod
    async def outbox_stats(self) -> dict[str, int]: ...

    @abc.abstractmethod
    async def webhook_deliveries(self, project_id: int, limit: int) -> list[WebhookDelivery]:
        """The project's reports waiting for its webhooks, newest first, at most ``limit`` of
        each kind: event reports in the outbox (pending or given up) and users' messages
        waiting for the incoming webhook."""

    @abc.abstractmethod
    async def retry_webhooks_now(self, project_id: int, now: float, kind: str | None = None,
                                 item_id: int | None = None) -> int:
        """Try again at ``now`` the project's reports that failed at least once (waiting for
        their next try, or given up: those get one more try); only the one of ``kind``
        ("event" or "incoming") and ``item_id`` when given. Returns how many."""


class Inbound(Protocol):
    """Users' messages: recording them, multi-part SMS parts, delivery to the incoming webhook."""

    @abc.abstractmethod
    async def record_inbound(self, messages: Sequence[InboundMessage], now: float) -> int:
        """Store user messages once each (by channel and provider id) and queue them for the
        project's incoming webhook; returns how many were new. A new message that is one of
        the project's STOP or START keywords (``core.optouts.keyword_action``) opts its
        number out or back in and leaves an ``OptoutEvent`` for the event webhook, in the
        same transaction."""

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
        self, ids: Sequence[int], now: float, schedule: Sequence[float],
        error: str | None = None,
    ) -> None:
        """As ``retry_outbox``: the next try per ``schedule``, or give up; ``error`` kept."""


class Checks(Protocol):
    """Picky's WhatsApp number filter: checks queued by a push, worked through by the
    dispatcher, their answers forwarded to the event webhook (``core/checks.py``)."""

    @abc.abstractmethod
    async def accept_checks(self, project_id: int, channel: ChannelSpec, plan: CheckPlan,
                            now: float) -> AcceptResult:
        """One transaction: debit ``plan.credit_total``, record the push, queue one check per
        accepted number; the check ids in the plan's order (``InsufficientCredit`` when the
        balance cannot cover it: nothing is written)."""

    @abc.abstractmethod
    async def claim_checks(self, channel_ids: Sequence[int], limit: int, now: float,
                           lease_seconds: float) -> list[PendingCheck]:
        """Up to ``limit`` due checks of these channels, oldest first, leased until ``now +
        lease_seconds`` (an unanswered claim comes back then)."""

    @abc.abstractmethod
    async def record_checks(self, answers: Sequence[tuple[int, NumberCheck]],
                            now: float) -> int:
        """Write the answers (check id, answer) of checks still unanswered, each queued for
        the project's event webhook when it has one; how many were written."""

    @abc.abstractmethod
    async def give_up_checks(self, give_up: GiveUp, now: float, limit: int) -> int:
        """Answer up to ``limit`` unanswered checks queued at or before ``give_up.cutoff`` as
        unknown (``on_whatsapp`` NULL, ``give_up.checked_by``, ``give_up.reason``), queued for
        the event webhook like any answer; how many."""

    @abc.abstractmethod
    def iter_push_checks(
        self, project_id: int, push_id: int, chunk: int = 1000
    ) -> AsyncIterator[list[CheckReport]]:
        """The push's number checks, answered or not, in id order, ``chunk`` at a time."""

    @abc.abstractmethod
    async def claim_check_reports(self, limit: int, now: float,
                                  lease_seconds: float) -> list[CheckForward]: ...

    @abc.abstractmethod
    async def complete_check_reports(self, ids: Sequence[int]) -> None: ...

    @abc.abstractmethod
    async def retry_check_reports(self, ids: Sequence[int], now: float,
                                  schedule: Sequence[float]) -> None:
        """As ``retry_outbox``: the next try per ``schedule``, or give up."""


class Devices(Protocol):
    """Phones of pull channels (``pushgate.api.devices``). A device claims messages as the
    worker ``device_worker(device_id)``, so ``record_outcomes`` applies its reports."""

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


class Store(Admin, Accepting, Optouts, Reports, Claiming, Outcomes, Outbox, Inbound, Devices,
            Checks, Protocol):
    """Durable state of the gateway. Implementations must be safe to share between the API,
    the dispatcher and the webhook deliverer of one process, and between processes."""

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the database answers."""


__all__ = [
    "Accepting",
    "Admin",
    "Checks",
    "Claiming",
    "Devices",
    "Inbound",
    "Outbox",
    "Outcomes",
    "Reports",
    "Store",
]
