"""The dispatcher: lease channels, claim their messages, send, record, repeat.

A worker renews its channel leases every few seconds (at most its fair share of the channels)
and runs a primary ``ChannelRunner`` for each channel it holds: the only one that paces that
channel, so rate limits need no coordination. On unpaced channels whose connector is shareable,
every other worker also runs a helper runner, whose claims never overlap the primary's. A runner
claims a batch (priority first, then oldest), sends it, and records every outcome in one write.
Anything a killed worker held comes back when its leases expire: channels to other workers,
messages to the next claim, counted as possible re-sends.

Every loop rides out a database outage (``store/outage.py``): it backs off and goes on, the
outage and the recovery are logged once for the process, and outcomes of sends that could not
be written are kept and written before the runner claims again, so a message whose outcome is
known is not sent twice because the database was away.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
import uuid
from typing import Protocol

from pushgate.channels.base import (
    ChannelEnv,
    channel_class,
    channel_for,
    known_kinds,
)
from pushgate.core.channels import ChannelSpec
from pushgate.core.checks import plan_give_up
from pushgate.core.policy import RetryPolicy
from pushgate.dispatch.checks import run_checks
from pushgate.dispatch.hints import HintListener
from pushgate.dispatch.runner import ChannelRunner, shareable
from pushgate.store.base import Store
from pushgate.store.outage import is_unavailable, keep_going, outage_of

log = logging.getLogger("pushgate.dispatch")


# Messages past their validity expired per store call; a sweep keeps calling while the calls
# come back full (a backlog past its validity), for at most EXPIRE_BUDGET_SECONDS: a message
# past its validity is never claimed, so until the sweep reaches it every claim passes over it.
EXPIRE_BATCH = 1000
EXPIRE_BUDGET_SECONDS = 1.0
# Scheduled messages moved to the queue per store call (``promote_due``); a promotion keeps
# calling while they come back full, for at most EXPIRE_BUDGET_SECONDS, then lets the
# runners claim before going on.
PROMOTE_BATCH = 2000
# How often the promoter looks for scheduled pushes it was not told of (accepted by another
# process): the most a scheduled push of another process waits past its send_at. A look is
# one index lookup of the earliest due time; a push accepted in this process wakes it.
PROMOTE_POLL_SECONDS = 1.0

def pull_kinds() -> list[str]:
    """Connector kinds nobody sends for (their devices fetch): they take no channel lease."""
    return [kind for kind in known_kinds() if channel_class(kind).pull]


def _pull(spec: ChannelSpec) -> bool:
    try:
        return channel_class(spec.kind).pull
    except ValueError:
        return False


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class WebhookWake(Protocol):
    """Wakes this process's webhook deliverer (``webhooks.deliverer.DeliveryWake``)."""

    def set(self) -> None:
        """Anything may be new: reports, inbound messages, number check answers, opt-out
        events."""

    def reports(self) -> None:
        """Only reports can be new (outcomes or status updates were recorded)."""


class Dispatcher:
    def __init__(
        self,
        store: Store,
        worker_id: str | None = None,
        claim_batch: int = 1000,
        send_lanes: int = 2,
        message_lease_seconds: float = 60.0,
        channel_lease_seconds: float = 15.0,
        idle_poll: float = 0.2,
        retry_policy: RetryPolicy | None = None,
        webhook_wake: WebhookWake | None = None,
        env: ChannelEnv | None = None,
        number_check_timeout_seconds: float = 24 * 3600,
        wake_socket: str | None = None,
    ) -> None:
        self.store = store
        self.env = env or ChannelEnv()
        self.worker_id = worker_id or new_worker_id()
        self.claim_batch = claim_batch
        self.send_lanes = send_lanes
        self.message_lease_seconds = message_lease_seconds
        self.channel_lease_seconds = channel_lease_seconds
        self.idle_poll = idle_poll
        self.retry_policy = retry_policy or RetryPolicy()
        self.webhook_wake = webhook_wake
        self.number_check_timeout_seconds = number_check_timeout_seconds
        # Where API processes of this host send "messages queued" hints (dispatch/hints.py).
        self.wake_socket = wake_socket
        self.runners: dict[int, tuple[ChannelRunner, asyncio.Task[None]]] = {}
        self._stopping = asyncio.Event()
        self._refresh_now = asyncio.Event()
        self._schedule_changed = asyncio.Event()
        self.sent = 0
        # Shared with the webhook deliverer of this process (same store): one log line when
        # the database goes away, one when it is back.
        self.outage = outage_of(store)
        # Pushes queued while the database was away were never notified: every runner looks.
        self.outage.on_recovery(self.wake)

    def wake(self, channel_id: int | None = None) -> None:
        """Tell runners that new messages are queued. A channel this worker runs no runner for
        (created since the last refresh) triggers a refresh now rather than at the next
        renewal."""
        if channel_id is not None:
            if channel_id in self.runners:
                self.runners[channel_id][0].wake_up()
            else:
                self._refresh_now.set()
            return
        for runner, _task in self.runners.values():
            runner.wake_up()

    def refresh_soon(self) -> None:
        """A channel was paused, resumed or edited here (the dashboard): renew leases and
        stop or start its runner now rather than at the next renewal. Other processes see
        it at their own next renewal."""
        self._refresh_now.set()

    def scheduled(self) -> None:
        """Tell the promoter that a scheduled push was accepted (its due time may be the
        next one)."""
        self._schedule_changed.set()

    async def promote_due(self) -> float | None:
        """Move the scheduled messages whose send_at has come to the queue (batches of
        PROMOTE_BATCH while they come back full, for at most EXPIRE_BUDGET_SECONDS) and wake
        their channels' runners; when the next scheduled push is due (None: none is)."""
        deadline = time.monotonic() + EXPIRE_BUDGET_SECONDS
        while True:
            promotion = await self.store.promote_due(time.time(), PROMOTE_BATCH)
            for channel_id in promotion.channel_ids:
                self.wake(channel_id)
            if promotion.promoted < PROMOTE_BATCH or time.monotonic() >= deadline:
                return promotion.next_due

    async def _promote(self) -> None:
        """Until stopped: promote what is due, then sleep until the next due time, at most
        PROMOTE_POLL_SECONDS, or until a scheduled push is accepted here."""
        next_due: list[float | None] = [None]

        async def step() -> bool:
            self._schedule_changed.clear()
            next_due[0] = await self.promote_due()
            return next_due[0] is not None and next_due[0] <= time.time()

        async def idle() -> None:
            due = next_due[0]
            wait = PROMOTE_POLL_SECONDS if due is None else min(
                max(due - time.time(), 0.0), PROMOTE_POLL_SECONDS)
            waits = [asyncio.ensure_future(self._stopping.wait()),
                     asyncio.ensure_future(self._schedule_changed.wait())]
            try:
                await asyncio.wait(waits, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waits:
                    waiter.cancel()

        await keep_going("promoter", step, idle, self._stopping.is_set, self.outage,
                         survive_bugs=True, logger=log)

    async def expire_due(self) -> int:
        """Expire and refund what is past its validity: batches of EXPIRE_BATCH while they
        come back full, for at most EXPIRE_BUDGET_SECONDS; how many."""
        deadline = time.monotonic() + EXPIRE_BUDGET_SECONDS
        total = 0
        while True:
            expired = await self.store.expire_due(time.time(), EXPIRE_BATCH)
            total += expired
            if expired < EXPIRE_BATCH or time.monotonic() >= deadline:
                return total

    async def check_pull_channels(self) -> None:
        """Number checks of pull channels (phones), which no runner works through: answered
        from the numbers' validity (their connector's default ``check_numbers``)."""
        specs = [s for s in await self.store.list_channels() if _pull(s)]
        for spec in specs:
            if await run_checks(self.store, functools.partial(channel_for, spec, self.env),
                                [spec.id], self.message_lease_seconds):
                self.notify_webhooks()

    async def give_up_checks(self) -> int:
        """Answer as unknown the number checks past the timeout, whatever keeps them (a
        bridge down, a paused channel: no runner would ever answer those); how many."""
        give_up = plan_give_up(time.time(), self.number_check_timeout_seconds)
        if give_up is None:
            return 0
        total = 0
        deadline = time.monotonic() + EXPIRE_BUDGET_SECONDS
        while True:
            done = await self.store.give_up_checks(give_up, time.time(), EXPIRE_BATCH)
            total += done
            if done < EXPIRE_BATCH or time.monotonic() >= deadline:
                break
        if total:
            log.warning("%d number checks gave up: %s", total, give_up.reason)
            self.notify_webhooks()
        return total

    def notify_webhooks(self) -> None:
        if self.webhook_wake is not None:
            self.webhook_wake.set()

    def notify_reports(self) -> None:
        """Outcomes or status updates were recorded: only the outbox can have gained rows."""
        if self.webhook_wake is not None:
            self.webhook_wake.reports()

    async def run(self) -> None:
        """Until ``stop()``: keep leases, keep one runner per held channel, expire old
        messages. A database outage (or a bug) is ridden out with back-off: nothing would
        restart this loop, and the runners go on meanwhile."""
        renew_every = self.channel_lease_seconds / 3
        listener = asyncio.create_task(self._listen(), name="dispatcher-listen")
        promoter = asyncio.create_task(self._promote(), name="dispatcher-promote")
        hints = None
        if self.wake_socket:
            hints = HintListener(self.wake_socket, self._on_notified)
            if not hints.open():
                hints = None

        async def renew() -> bool:
            # Cleared before, not after: a new channel seen meanwhile refreshes again at once.
            self._refresh_now.clear()
            await self.refresh()
            await self.expire_due()
            await self.check_pull_channels()
            await self.give_up_checks()
            return False

        async def idle() -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wait_stop_or_refresh(), renew_every)

        try:
            await keep_going("dispatcher", renew, idle, self._stopping.is_set, self.outage,
                             survive_bugs=True, logger=log)
        finally:
            if hints is not None:
                hints.close()
            for task in (listener, promoter):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._shutdown()

    async def _wait_stop_or_refresh(self) -> None:
        waits = [asyncio.ensure_future(self._stopping.wait()),
                 asyncio.ensure_future(self._refresh_now.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    async def _listen(self) -> None:
        """Wake a held channel's runner as soon as any process queues messages for it (the
        store's notifications, e.g. PostgreSQL NOTIFY); without them runners poll."""
        try:
            # Reconnects by itself after an outage, reporting it to the shared `Outage`;
            # meanwhile (and always) the runners also poll, so no push waits for long.
            await self.store.listen(self._on_notified, self.outage)
        except Exception:
            log.exception("dispatcher: store notifications failed; polling only")

    def _on_notified(self, channel_id: int) -> None:
        """Another process queued messages for ``channel_id`` (a store notification or a
        wake-up hint): wake its runner if this worker runs one. Channels of other workers are
        theirs to wake; a channel new to this one is run from the next renewal."""
        if channel_id in self.runners:
            self.wake(channel_id)

    async def refresh(self) -> None:
        """Renew leases, then run a primary runner for every held channel and a helper runner
        for every other shareable unpaced channel (throughput there grows with workers;
        paced channels keep one sender, so their limits hold exactly)."""
        held = set(await self.store.acquire_channel_leases(
            self.worker_id, time.time(), self.channel_lease_seconds, pull_kinds()))
        wanted: dict[int, tuple[ChannelSpec, bool]] = {}
        for spec in await self.store.list_channels():
            if spec.paused or _pull(spec):   # phones fetch their own messages
                continue
            if spec.id in held:
                wanted[spec.id] = (spec, True)
            elif shareable(spec):
                wanted[spec.id] = (spec, False)
        restarted: dict[int, ChannelRunner] = {}
        for channel_id in list(self.runners):
            runner, task = self.runners[channel_id]
            want = wanted.get(channel_id)
            # A changed channel (the operator edited it) restarts with the new settings.
            if want is None or task.done() or want[0] != runner.spec:
                await self._stop_runner(channel_id)
                if want is not None and want[1] and runner.primary:
                    restarted[channel_id] = runner   # its sends count for the next one
        for channel_id, (spec, primary) in wanted.items():
            current = self.runners.get(channel_id)
            if current is not None:
                current[0].primary = primary
                continue
            try:
                runner = ChannelRunner(self, spec, primary, restarted.get(channel_id))
            except ValueError as exc:
                log.error("channel %s cannot run: %s", channel_id, exc)
                continue
            self.runners[channel_id] = (runner, asyncio.create_task(
                runner.run(), name=f"channel-{channel_id}"))

    async def _stop_runner(self, channel_id: int) -> None:
        runner, task = self.runners.pop(channel_id)
        runner.stopping = True
        runner.wake_up()
        try:
            await asyncio.wait_for(asyncio.shield(task), 30)
        except TimeoutError:
            task.cancel()
        except Exception:
            log.exception("channel %s runner failed", channel_id)

    def stop(self) -> None:
        self._stopping.set()

    async def _shutdown(self) -> None:
        for channel_id in list(self.runners):
            await self._stop_runner(channel_id)
        try:
            await self.store.release_channel_leases(self.worker_id)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            # The leases run out by themselves; another worker takes the channels then.
            log.info("channel leases not handed back (%s): they expire by themselves", exc)
