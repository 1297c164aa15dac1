"""``ChannelRunner``: claims, paces, sends and records for one channel (the dispatcher in
``worker.py`` starts and stops runners as it takes and loses channel leases)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from pushgate import metrics
from pushgate.channels.base import (
    Channel,
    channel_class,
    channel_for,
)
from pushgate.channels.media import sign_media_url
from pushgate.core.channels import ChannelSpec
from pushgate.core.models import (
    OutboundMessage,
    Outcome,
    SendResult,
)
from pushgate.dispatch import recording as recording_module
from pushgate.dispatch.checks import run_checks
from pushgate.dispatch.pacing import Pacer, SendCaps
from pushgate.dispatch.recording import OutcomeRecorder, StoreSink
from pushgate.store.outage import is_unavailable, keep_going

if TYPE_CHECKING:
    from pushgate.dispatch.worker import Dispatcher

log = logging.getLogger("pushgate.dispatch")


# Signed links to inline media stay valid this long after the send (providers fetch late).
MEDIA_LINK_SECONDS = 86_400
# How long a capped channel that reached its cap waits before counting again.
CAP_RECHECK_SECONDS = 30.0
# While a paced batch goes out (up to a second's worth), how often the runner looks for
# messages of a higher priority queued since its claim (one read of the claim index) and
# sends them next: a priority-1 message waits about this long instead of the rest of the
# batch (bench/backlog.py: a priority-1 message behind a paced backlog; docs/benchmarks.md).
PRIORITY_CHECK_SECONDS = 0.02
# How often a runner's claim also looks for messages whose lease ran out in ``sending`` (their
# worker died or stalled mid-send) and takes them back as possible re-sends. The look scans
# the channel's messages in flight, under the write lock on SQLite, and finds nothing nearly
# always; a lease lasts ``message_lease_seconds`` (a minute by default), so a second more is
# nothing to a message that waited that long.
RECLAIM_EVERY_SECONDS = 1.0
# How far two workers' clocks may disagree when a new lease holder asks the store what the
# previous one sent in the last window (``ChannelRunner.allow_for_previous_holder``).
HANDOVER_CLOCK_SKEW_SECONDS = 1.0


def shareable(spec: ChannelSpec) -> bool:
    paced = spec.rate_per_second > 0 or spec.delay_ms > 0 or spec.jitter_ms > 0
    try:
        return (not paced and channel_class(spec.kind).shareable
                and not SendCaps.from_config(spec.config).active)
    except ValueError:
        return False


class ChannelRunner:
    """Sends for one channel. The ``primary`` runner is the channel lease holder's: it alone
    paces the channel and simulates delivery; helpers (other workers, on shareable unpaced
    channels) only claim, send and record."""

    def __init__(self, dispatcher: Dispatcher, spec: ChannelSpec, primary: bool = True,
                 previous: ChannelRunner | None = None) -> None:
        self.dispatcher = dispatcher
        self.spec = spec
        self.primary = primary
        self.channel: Channel = channel_for(spec, dispatcher.env)
        self.channel.sink = StoreSink(dispatcher)
        # Paces the starts of sends: delay + jitter between messages, and the rate.
        self.pacer = Pacer(spec.rate_per_second, spec.delay_ms, spec.jitter_ms)
        # What the provider's rate is held by: on a connector that ``paces_requests``, a second
        # limiter of the same rate whose permits the connector takes as each request goes out
        # (the starts above, spaced the same, keep its queue short); else the pacer itself.
        if self.channel.paces_requests and spec.rate_per_second > 0:
            self.channel.limiter = Pacer(spec.rate_per_second)
        self.provider_limiter: Pacer = (self.channel.limiter
                                        if isinstance(self.channel.limiter, Pacer)
                                        else self.pacer)
        if previous is not None:
            # The same channel's runner until now in this worker (restarted after an edit or a
            # failure): its recent sends still count in the provider's window.
            self.provider_limiter.take_over(previous.provider_limiter)
        self.knows_recent_sends = previous is not None
        self.caps = SendCaps.from_config(spec.config)
        self.capped_until = 0.0
        # When the next claim looks for expired leases (monotonic; the first claim does).
        self.next_reclaim = 0.0
        # Claim–send–record loops on this channel. On a shareable unpaced channel several
        # overlap, so the store works on one batch's claim while another's outcomes are
        # recorded (SKIP LOCKED keeps their claims apart); a paced channel keeps one, so its
        # pacing stays exact.
        self.lanes = dispatcher.send_lanes if shareable(spec) else 1
        self.wakes = [asyncio.Event() for _ in range(self.lanes)]
        # Set when sends were recorded, for the simulated-delivery loop.
        self.sent_wake = asyncio.Event()
        self.stopping = False
        # Outcomes of sends made but not written yet: finished sends of a paced batch, and any
        # whose write failed (the database away). Written before the next claim; lost only
        # with the process, and then their messages come back by their leases.
        self.unrecorded: list[SendResult] = []
        # Held while kept outcomes are written: another lane waits for that write before it
        # claims, so it cannot claim (and send again) a message whose outcome is being
        # written after its lease ran out in an outage.
        self.flushing = asyncio.Lock()

    async def run(self) -> None:
        await self.channel.start()
        if self.primary and not self.knows_recent_sends:
            await self.allow_for_previous_holder()
        # Simulated deliveries (sandbox) run beside the claim–send–record loop, on their own
        # store connection where the store has several: on PostgreSQL the two overlap
        # instead of taking turns.
        simulation = (asyncio.create_task(self.simulate_loop(), name=f"simulate-{self.spec.id}")
                      if self.channel.simulated_delivery_delay is not None else None)
        lanes = [asyncio.create_task(self.lane(wake)) for wake in self.wakes]
        try:
            await asyncio.gather(*lanes)
        except BaseException:
            # One lane failed (or the runner was cancelled): the others finish the step in hand
            # and stop, so no lane outlives its runner (the dispatcher starts a new one).
            self.stopping = True
            self.wake_up()
            await asyncio.gather(*lanes, return_exceptions=True)
            raise
        finally:
            if simulation is not None:
                self.sent_wake.set()
                with contextlib.suppress(Exception):
                    await simulation
            await self.channel.stop()
        # Outcomes still kept (the database was away until now): one last try; if it fails
        # too, their messages come back by their leases.
        began = time.monotonic()
        try:
            await self.flush()
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            self.dispatcher.outage.failed(exc, began)
            log.warning("channel %s: %d outcomes not recorded at stop; their messages come"
                        " back when their leases end", self.spec.id, len(self.unrecorded))

    async def allow_for_previous_holder(self) -> None:
        """A new lease holder's limiter knows nothing of what the channel's previous holder
        sent. A holder lets go of a channel only after its sends are answered and recorded
        (a stop), or by dying, when the lease runs out ``channel_lease_seconds`` later, long
        past any window. So if the store recorded sends in the last window (give or take the
        hosts' clocks), this holder assumes the provider's window is full and sends its first
        message a window later; otherwise it starts at once."""
        limiter = self.provider_limiter
        if limiter.rate <= 0:
            return
        since = time.time() - limiter.window - HANDOVER_CLOCK_SKEW_SECONDS
        try:
            recent = await self.dispatcher.store.sent_since(self.spec.id, since)
        except Exception as exc:   # cannot tell: the safe side
            log.warning("channel %s: could not read its recent sends (%s); waiting a window",
                        self.spec.id, exc, exc_info=not is_unavailable(exc))
            recent = 1
        if recent:
            limiter.assume_window_full()

    def wake_up(self) -> None:
        """Messages were queued (or the runner is stopping): every lane looks now."""
        for wake in self.wakes:
            wake.set()

    async def lane(self, wake: asyncio.Event) -> None:
        """Claim–send–record until the runner stops, riding out database outages (a bug
        ends the runner: the dispatcher starts a new one)."""
        d = self.dispatcher

        async def step() -> bool:
            # Cleared before the step, not after: a wake-up (a push, a stop) that arrives
            # while the step runs must not be lost.
            wake.clear()
            return await self.step()

        async def idle() -> None:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # arrives with the wake-up.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(d.idle_poll):
                    await wake.wait()

        await keep_going(f"channel {self.spec.id}", step, idle, lambda: self.stopping,
                         d.outage, logger=log)

    async def simulate_loop(self) -> None:
        d = self.dispatcher

        async def step() -> bool:
            self.sent_wake.clear()
            return await self.simulate_deliveries()

        async def idle() -> None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(d.idle_poll):
                    await self.sent_wake.wait()

        # Nothing restarts this loop: it must not die, not even of a bug.
        await keep_going(f"channel {self.spec.id}: simulated deliveries", step, idle,
                         lambda: self.stopping, d.outage, survive_bugs=True, logger=log)

    async def step(self) -> bool:
        """One claim–send–record round; False when there was nothing to do."""
        d = self.dispatcher
        store = d.store
        # Outcomes kept from before (the database was away) are written before anything new
        # is claimed; if that fails, the step fails and the lane backs off.
        await self.flush()
        # Picky's number filter: checks send nothing, so no pacing or cap holds them.
        checked = await run_checks(store, lambda: self.channel, [self.spec.id],
                                   d.message_lease_seconds)
        if checked:
            d.notify_webhooks()
        now = time.time()
        batch = self.pacer.batch_size(d.claim_batch)
        if self.caps.active:
            allowance = await self.cap_allowance(now)
            if not allowance:
                return checked > 0
            batch = min(batch, allowance)
        lease = d.message_lease_seconds
        if self.pacer.rate > 0:
            lease += batch / self.pacer.rate
        reclaim = time.monotonic() >= self.next_reclaim
        messages = await store.claim_messages(self.spec.id, d.worker_id, batch, now, lease,
                                              reclaim=reclaim)
        # A batch filled with re-claims may have left more behind: the next claim looks again.
        if reclaim and sum(m.possible_resend for m in messages) < batch:
            self.next_reclaim = time.monotonic() + RECLAIM_EVERY_SECONDS
        if not messages:
            return checked > 0
        messages = [self.with_media_link(m, now) for m in messages]
        if self.pacer.limited:
            # Higher-priority messages may jump into a batch of several (not into a capped
            # channel's: it takes no more than its allowance).
            overtake = 0 if self.caps.active or batch <= 1 else batch
            results = await self.send_paced(messages, overtake)
        else:
            # Outcomes are recorded as they come (a connector with a window of sends
            # answered one by one reports each), not when the whole batch is done.
            recorder = OutcomeRecorder(self)
            try:
                await self.channel.send_each(messages, recorder.report)
            finally:
                results = await recorder.close()
        refused = next((r for r in results if r.kind is Outcome.PAUSE_CHANNEL), None)
        if refused is not None:
            await self.pause(refused)
        return True

    async def record(self, results: list[SendResult]) -> None:
        """Write ``results``; if that fails they are kept in ``unrecorded`` (written before
        the next claim) and the error is raised. Writing outcomes twice is harmless: a write
        changes only messages still ``sending`` under this worker's lease."""
        d = self.dispatcher
        try:
            await d.store.record_outcomes(d.worker_id, results, time.time(), d.retry_policy)
        except BaseException:
            self.unrecorded.extend(results)
            raise
        went_out = sum(1 for r in results if r.kind.went_out)
        d.sent += went_out
        self.count(results, went_out)
        d.notify_reports()
        self.sent_wake.set()

    def count(self, results: list[SendResult], went_out: int) -> None:
        """A recorded batch's metrics: one increment per family and label, not per message
        (messages reaching a final state are counted by the store's write)."""
        channel = str(self.spec.id)
        metrics.MESSAGES_SENT.labels(channel).inc(went_out)
        metrics.count_errors(self.spec.id, (r.error_code for r in results))

    async def flush(self) -> None:
        """Write the outcomes in ``unrecorded`` (after any such write in progress)."""
        if not self.unrecorded and not self.flushing.locked():
            return
        async with self.flushing:
            if self.unrecorded:
                results, self.unrecorded = self.unrecorded, []
                await self.record(results)

    async def send_paced(self, messages: list[OutboundMessage],
                         overtake_limit: int = 0) -> list[SendResult]:
        """Send one message per permit and record the outcomes; returns them all. With a delay
        between messages (anti-ban pacing) each send is awaited before the next; under a rate
        alone, sends start on their permits without waiting for earlier answers, up to the
        connector's ``in_flight_limit``, so a slow round trip does not cap the rate. Stopping
        releases what has not started.

        Finished sends are recorded every ``RECORD_EVERY_SECONDS`` in the background while
        the batch goes on; a failed write leaves them (and the rest of the batch's) for the
        batch's last write, which records whatever is left when every send is done — or, if
        the database is still away, keeps it for the runner's next step.

        Every ``PRIORITY_CHECK_SECONDS`` the runner looks for ready messages of a higher
        priority than the batch's lowest still unsent, claims them and sends them next (at
        most ``overtake_limit`` per batch, so the rest of the batch is delayed by a batch at
        most, well within its lease); their outcomes are recorded with the batch's."""
        sequential = self.pacer.delay > 0 or self.pacer.jitter > 0
        slots = asyncio.Semaphore(1 if sequential else self.channel.in_flight_limit)
        started: list[asyncio.Task[list[SendResult]]] = []
        # Claims come priority first: the last one waiting is always the lowest priority.
        pending = deque(messages)
        overtaken = 0
        next_check = time.monotonic() + PRIORITY_CHECK_SECONDS
        # After a failed write (or look) the database is away: no more tries in this batch,
        # its sends go on and its last write tries again.
        store_failed = False
        recording: asyncio.Task[None] | None = None
        next_record = time.monotonic() + recording_module.RECORD_EVERY_SECONDS

        async def record_now() -> None:
            nonlocal store_failed
            if not await self.record_quietly():
                store_failed = True

        while pending:
            await slots.acquire()
            if (self.unrecorded and not store_failed and time.monotonic() >= next_record
                    and (recording is None or recording.done())):
                recording = asyncio.create_task(record_now())
                next_record = time.monotonic() + recording_module.RECORD_EVERY_SECONDS
            if self.stopping:
                slots.release()
                await self.release(list(pending))
                break
            if (overtaken < overtake_limit and not store_failed
                    and time.monotonic() >= next_check):
                urgent = await self.claim_higher(pending[-1].priority + 1,
                                                 overtake_limit - overtaken, len(pending))
                if urgent is None:
                    store_failed = True
                else:
                    pending.extendleft(reversed(urgent))
                    overtaken += len(urgent)
                next_check = time.monotonic() + PRIORITY_CHECK_SECONDS
            message = pending.popleft()
            await self.pacer.acquire(1)
            started.append(asyncio.create_task(self.send_one(message, slots)))
        results = [r for batch in await asyncio.gather(*started) for r in batch]
        if recording is not None:
            await recording
        await self.flush()
        return results

    async def record_quietly(self) -> bool:
        """``flush`` while a paced batch goes on: a failure is logged, not raised, and its
        outcomes stay in ``unrecorded`` for the batch's last write; False after a failure."""
        began = time.monotonic()
        try:
            await self.flush()
        except Exception as exc:
            if is_unavailable(exc):
                self.dispatcher.outage.failed(exc, began)
            else:
                log.exception("channel %s: recording outcomes failed; retried at the end"
                              " of the batch", self.spec.id)
            return False
        return True

    async def send_one(self, message: OutboundMessage,
                       slots: asyncio.Semaphore) -> list[SendResult]:
        """Send ``message`` on a slot of ``send_paced`` taken for it; its outcome is kept in
        ``unrecorded`` until written."""
        began = time.monotonic()
        try:
            results = await self.channel.send_batch([message])
        finally:
            slots.release()
        metrics.send_seconds(self.spec.id).observe(time.monotonic() - began)
        self.unrecorded.extend(results)
        return results

    async def release(self, messages: list[OutboundMessage]) -> None:
        """Hand back claimed messages not sent (the runner is stopping). If the database is
        away they come back by their leases instead."""
        d = self.dispatcher
        began = time.monotonic()
        try:
            await d.store.release_messages(d.worker_id, [m.id for m in messages])
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            d.outage.failed(exc, began)

    async def claim_higher(self, min_priority: int, limit: int,
                           waiting: int) -> list[OutboundMessage] | None:
        """Claim up to ``limit`` ready messages of at least ``min_priority`` (after a cheap
        read says there are some), leased until this batch's ``waiting`` sends are done.
        A failure only skips this look (None): the batch's sends already started must still
        be recorded, or they would come back as possible re-sends."""
        d = self.dispatcher
        now = time.time()
        began = time.monotonic()
        try:
            if not await d.store.has_ready_messages(self.spec.id, now, min_priority):
                return []
            lease = d.message_lease_seconds
            if self.pacer.rate > 0:
                lease += (waiting + limit) / self.pacer.rate
            claimed = await d.store.claim_messages(self.spec.id, d.worker_id, limit, now,
                                                   lease, min_priority)
        except Exception as exc:
            if is_unavailable(exc):
                d.outage.failed(exc, began)
            else:
                log.exception("channel %s: looking for priority messages failed", self.spec.id)
            return None
        return [self.with_media_link(m, now) for m in claimed]

    async def cap_allowance(self, now: float) -> int:
        """What the channel's hourly/daily caps still allow; 0 waits a while before counting
        again."""
        if now < self.capped_until:
            return 0
        store = self.dispatcher.store
        allowance = self.caps.allowance(await store.sent_since(self.spec.id, now - 3600),
                                        await store.sent_since(self.spec.id, now - 86_400), now)
        if allowance == 0:
            self.capped_until = now + CAP_RECHECK_SECONDS
        return allowance or 0

    def with_media_link(self, message: OutboundMessage, now: float) -> OutboundMessage:
        """Inline uploads go to the provider as a signed, expiring link of this gateway."""
        if message.media_id is not None:
            message.media_url = sign_media_url(self.dispatcher.env, message.media_id,
                                               int(now + MEDIA_LINK_SECONDS))
        return message

    async def pause(self, result: SendResult) -> None:
        """The provider refused the channel's credentials: stop sending and alert; the
        operator resumes it (``pushgate channel pause ID --resume``) once they are fixed."""
        reason = f"{result.error_code or 'auth'}: {result.error_message or 'credentials refused'}"
        log.error("channel %s paused: the provider refused its credentials (%s)",
                  self.spec.id, reason)
        await self.dispatcher.store.update_channel(self.spec.id, paused=True,
                                                   paused_reason=reason)
        self.stopping = True

    async def simulate_deliveries(self) -> bool:
        delay = self.channel.simulated_delivery_delay
        if delay is None or not self.primary:
            return False
        now = time.time()
        ids = await self.dispatcher.store.submitted_before(
            self.spec.id, now - delay, self.dispatcher.claim_batch)
        if not ids:
            return False
        updates = self.channel.simulate_delivery(ids, now)
        await self.dispatcher.store.apply_status_updates(updates)
        self.dispatcher.notify_reports()
        return True
