"""The Pacer's arithmetic on a fake clock: no real time passes, no timing assertions."""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
import types
from itertools import pairwise
from typing import Any

import pytest

from pushgate.core.push import Limits, decode_push, plan_push
from pushgate.dispatch import pacing, recording
from pushgate.dispatch import runner as runner_module
from pushgate.dispatch.pacing import Pacer
from pushgate.dispatch.runner import ChannelRunner
from pushgate.dispatch.worker import Dispatcher
from pushgate.store.base import Store
from pushgate.store.errors import StoreUnavailable


class FakeClock:
    """Stands in for ``time.monotonic``, ``asyncio.sleep`` and ``random.uniform`` inside
    ``pushgate.dispatch.pacing``: sleeping advances the clock and is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.uniform_calls: list[tuple[float, float]] = []
        self.uniform_pick = 1.0   # where in [a, b] uniform() lands: 0 = a, 1 = b

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert seconds > 0, f"asked to sleep {seconds}"
        # A sleep too short to move the clock means a busy loop (it would hang the test).
        assert self.now + seconds > self.now, f"asked to sleep {seconds!r}: a rounding loop"
        assert len(self.sleeps) < 10_000, "the pacer keeps sleeping"
        self.sleeps.append(seconds)
        self.now += seconds

    def uniform(self, a: float, b: float) -> float:
        self.uniform_calls.append((a, b))
        return a + (b - a) * self.uniform_pick

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    # Replace the module references pacing uses, not the real modules: the event loop keeps
    # its own clock.
    monkeypatch.setattr(pacing, "time", types.SimpleNamespace(monotonic=fake.monotonic))
    monkeypatch.setattr(pacing, "asyncio", types.SimpleNamespace(sleep=fake.sleep))
    monkeypatch.setattr(pacing, "random", types.SimpleNamespace(uniform=fake.uniform))
    return fake


async def test_unpaced_never_sleeps(clock: FakeClock) -> None:
    pacer = Pacer(0)
    assert not pacer.limited
    for _ in range(1000):
        await pacer.acquire()
    assert clock.sleeps == []


def most_in_any_window(times: list[float], length: float) -> int:
    """The most of ``times`` in any half-open window ``[t, t + length)``: exhaustive, since a
    fullest window can always be slid right until it starts at one of them."""
    times = sorted(times)
    most, first = 0, 0
    for last, at in enumerate(times):
        while times[first] <= at - length:
            first += 1
        most = max(most, last - first + 1)
    return most


def test_most_in_any_window() -> None:
    assert most_in_any_window([], 1.0) == 0
    assert most_in_any_window([0.0, 0.5, 0.999, 1.0, 1.5], 1.0) == 3
    assert most_in_any_window([0.0, 1.0, 2.0], 1.0) == 1
    assert most_in_any_window([0.0] * 4 + [0.99], 1.0) == 5


async def test_rate_spaces_sends_from_the_first(clock: FakeClock) -> None:
    """At 10/s: a burst of half a window's worth at once, then one every 1.05 s / 10 (the
    window's margin included), never ten at once from a full bucket."""
    pacer = Pacer(10)
    assert pacer.limited
    assert (pacer.limit, pacer.burst) == (10, 5)
    assert pacer.window == pytest.approx(1.0 + pacing.WINDOW_MARGIN_SECONDS)
    for _ in range(5):
        await pacer.acquire()
    assert clock.sleeps == []
    await pacer.acquire()
    await pacer.acquire()
    assert clock.sleeps == [pytest.approx(pacer.window / 10)] * 2
    smooth = Pacer(10, burst=1)
    await smooth.acquire()
    await smooth.acquire()
    assert clock.sleeps[2:] == [pytest.approx(smooth.window / 10)]


async def test_the_first_second_after_an_idle_spell_holds_the_rate(clock: FakeClock) -> None:
    """The issue's case: WhatsApp Cloud's 80/s after an idle spell. A token bucket of 80 that
    starts full lets 80 go at once and 80 more before the second is over (Meta: 130429);
    here a burst of 40 goes at once and the rest at the even spacing, and no second holds
    more than 80, however long or short the idle spell before."""
    pacer = Pacer(80)
    assert pacer.burst == 40
    sent: list[float] = []
    for idle in (0.0, 3600.0, 0.5, 1.0, 30.0):
        clock.advance(idle)
        start = clock.now
        for _ in range(200):
            await pacer.acquire()
            sent.append(clock.now)
        first_second = [t for t in sent if start <= t < start + 1.0]
        assert len(first_second) <= 80
        if idle not in (0.5, 1.0):   # idle past the window: the whole burst, then spaced
            assert sent[-200:][:40] == [start] * 40
            assert sent[-200:][40] > start
    assert most_in_any_window(sent, 1.0) == 80


@pytest.mark.parametrize("rate", [1, 2, 5, 10, 20, 50.7, 80, 333, 1000])
@pytest.mark.parametrize("pattern", ["backlog", "idle-spells", "random", "lagging-sender"])
async def test_no_one_second_window_holds_more_than_the_rate(
        clock: FakeClock, rate: float, pattern: str) -> None:
    """Exhaustive over the windows of each pattern of demand: a backlog always ready; bursts
    of demand after idle spells of every length around the window; random arrivals at twice
    the rate; a sender that starts each request late by up to three spacings (an event loop
    that lags), which makes the limiter catch up with back-to-back permits."""
    pacer = Pacer(rate)
    limit = math.floor(rate)
    rng = random.Random(f"{rate}-{pattern}")
    sent: list[float] = []

    async def send_at(at: float) -> None:
        clock.now = max(clock.now, at)
        await pacer.acquire()
        sent.append(clock.now)
        if pattern == "lagging-sender":
            clock.advance(rng.uniform(0, 3 * pacer.interval))

    count = 5 * limit
    if pattern in ("backlog", "lagging-sender"):
        for _ in range(count):
            await send_at(clock.now)
    elif pattern == "idle-spells":
        for gap in (0.0, 0.3, 0.95, 0.999, 1.0, 1.001, 1.05, 1.06, 2.5, 0.01):
            at = clock.now + gap
            for _ in range(rng.randint(1, 2 * limit)):
                await send_at(at)
    else:
        at = clock.now
        for _ in range(count):
            at += rng.expovariate(2 * rate)
            await send_at(at)
    assert pacer.granted == len(sent)
    assert most_in_any_window(sent, 1.0) <= limit
    # The limiter's own, longer window holds too (the margin for requests that arrive late).
    assert most_in_any_window(sent, pacer.window - 1e-6) <= limit


@pytest.mark.parametrize("rate", [20, 80, 1000])
async def test_a_sender_always_ready_is_paced_evenly_not_in_bursts_and_pauses(
        clock: FakeClock, rate: float) -> None:
    """A backlog that is always ready: after the first window (a burst, then spacing, then
    one wait for the window), one permit per spacing, with no pause longer than that again;
    a pause would hold a priority message back (it is looked for between sends)."""
    pacer = Pacer(rate)
    sent: list[float] = []
    for _ in range(4 * pacer.limit):
        await pacer.acquire()
        sent.append(clock.now)
    gaps = [b - a for a, b in pairwise(sent)]
    pauses = [gap for gap in gaps if gap > pacer.interval * (1 + 1e-6)]
    assert len(pauses) == 1
    later = sent.index(next(t for t in sent if t >= sent[0] + pacer.window))
    assert max(gaps[later:]) == pytest.approx(pacer.interval)
    assert most_in_any_window(sent, 1.0) == pacer.limit


@pytest.mark.parametrize("rate", [0.5, 0.2])
async def test_a_rate_below_one_sends_one_per_period(clock: FakeClock, rate: float) -> None:
    pacer = Pacer(rate)
    sent: list[float] = []
    for gap in (0.0, 0.0, 1.0, 7.0, 0.0, 0.1):
        clock.advance(gap)
        await pacer.acquire()
        sent.append(clock.now)
    assert most_in_any_window(sent, 1 / rate) == 1


async def test_an_explicit_burst_counts_inside_the_window(clock: FakeClock) -> None:
    """A burst above a window's worth is cut to it: 5 at once at 2/s would be 5 in a second."""
    bursty = Pacer(2, burst=5)
    assert bursty.burst == 2
    await bursty.acquire()
    await bursty.acquire()
    assert clock.sleeps == []
    await bursty.acquire()
    assert clock.sleeps == [pytest.approx(bursty.window)]


async def test_acquire_many_at_once(clock: FakeClock) -> None:
    pacer = Pacer(10, burst=10)
    await pacer.acquire(4)
    await pacer.acquire(6)
    assert clock.sleeps == []
    assert pacer.granted == 10
    # The window holds ten: the next five wait until the five oldest leave it.
    await pacer.acquire(5)
    assert clock.sleeps == [pytest.approx(pacer.window)]
    # More than a window's worth never fits one: it goes when the window is empty, and the
    # next permit waits as long as the eleven take at the even spacing.
    clock.sleeps.clear()
    await pacer.acquire(11)
    assert clock.sleeps == [pytest.approx(pacer.window)]
    await pacer.acquire()
    assert clock.sleeps[-1] == pytest.approx(11 * pacer.interval)


async def test_concurrent_waiters_share_one_window(
        clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Several sends in flight of one channel waiting at once (the connector's requests) get
    their permits in turn from the one limiter, none beyond the window."""
    real_sleep = asyncio.sleep

    async def sleep_and_yield(seconds: float) -> None:
        await clock.sleep(seconds)
        await real_sleep(0)

    monkeypatch.setattr(pacing, "asyncio", types.SimpleNamespace(sleep=sleep_and_yield))
    pacer = Pacer(20)
    sent: list[float] = []

    async def request() -> None:
        await pacer.permit()
        sent.append(clock.now)

    await asyncio.gather(*(request() for _ in range(100)))
    assert len(sent) == 100
    assert most_in_any_window(sent, 1.0) == 20


async def test_a_new_holder_leaves_room_for_what_went_before(clock: FakeClock) -> None:
    """``assume_window_full``: the first permit a window later. ``take_over``: a restarted
    runner's limiter counts the previous one's recent permits."""
    fresh = Pacer(10)
    fresh.assume_window_full()
    await fresh.acquire()
    assert clock.sleeps == [pytest.approx(fresh.window)]
    before = Pacer(10, burst=10)
    sent = []
    for _ in range(10):
        await before.acquire()
        sent.append(clock.now)
    after = Pacer(10, burst=10)
    after.take_over(before)
    for _ in range(10):
        await after.acquire()
        sent.append(clock.now)
    assert most_in_any_window(sent, 1.0) == 10


async def test_delay_between_sends(clock: FakeClock) -> None:
    pacer = Pacer(0, delay_ms=500)
    assert pacer.limited
    await pacer.acquire()   # the first send goes at once
    assert clock.sleeps == []
    await pacer.acquire()
    assert clock.sleeps == [pytest.approx(0.5)]
    clock.advance(0.2)      # time spent sending counts toward the pause
    await pacer.acquire()
    assert clock.sleeps[-1] == pytest.approx(0.3)
    clock.advance(2.0)      # an idle spell longer than the delay: no pause
    await pacer.acquire()
    assert len(clock.sleeps) == 2
    assert all(s >= 0.3 - 1e-9 for s in clock.sleeps)


async def test_delay_with_jitter(clock: FakeClock) -> None:
    pacer = Pacer(0, delay_ms=500, jitter_ms=200)
    await pacer.acquire()
    clock.uniform_pick = 1.0
    await pacer.acquire()
    clock.uniform_pick = 0.0
    await pacer.acquire()
    clock.uniform_pick = 0.5
    await pacer.acquire()
    assert clock.uniform_calls == [(0, pytest.approx(0.2))] * 3
    assert clock.sleeps == [pytest.approx(0.7), pytest.approx(0.5), pytest.approx(0.6)]
    assert all(0.5 - 1e-9 <= s <= 0.7 + 1e-9 for s in clock.sleeps)


async def test_jitter_alone_paces(clock: FakeClock) -> None:
    pacer = Pacer(0, jitter_ms=300)
    assert pacer.limited
    await pacer.acquire()
    await pacer.acquire()
    assert clock.sleeps == [pytest.approx(0.3)]


async def test_delay_and_rate_together(clock: FakeClock) -> None:
    pacer = Pacer(1, delay_ms=200)
    await pacer.acquire()
    await pacer.acquire()
    # 0.2 s of delay, then the rest of the window the rate needs.
    assert clock.sleeps == [pytest.approx(0.2), pytest.approx(pacer.window - 0.2)]


@pytest.mark.parametrize(("rate", "delay", "jitter", "limit", "size"), [
    (0, 0, 0, 1000, 1000),
    (0, 0, 0, 7, 7),
    (10, 0, 0, 1000, 10),
    (10, 0, 0, 4, 4),
    (50.7, 0, 0, 1000, 50),
    (0.5, 0, 0, 1000, 1),
    (0, 500, 0, 1000, 1),
    (0, 0, 100, 1000, 1),
    (100, 500, 0, 1000, 1),
])
def test_batch_size(rate: float, delay: int, jitter: int, limit: int, size: int) -> None:
    assert Pacer(rate, delay, jitter).batch_size(limit) == size


async def test_runner_claims_a_paced_batch(
    store: Store, make: Any, clock: FakeClock, query: Any
) -> None:
    """A channel limited to 5/s claims 5 at a time out of a larger backlog; on the (fake)
    pacing clock its sends go three at once (the burst, half a window's worth), then one per
    1.05 s / 5, and once the window has made it wait, evenly spaced (no burst and pause
    again); no second holds more than five, from the first batch on."""
    project, _, _ = await make.project()
    channel = await make.channel(project.id, rate_per_second=5, config={"delivery_delay": 0})
    data = [{"number": f"91987654{i:04d}", "message": f"m {i}"} for i in range(12)]
    plan = plan_push(decode_push(json.dumps({"data": data})), channel, Limits())
    await store.accept_push(project.id, channel, plan, time.time() - 1, None)
    dispatcher = Dispatcher(store, worker_id="w-paced", claim_batch=1000)
    runner = ChannelRunner(dispatcher, channel)

    sent_at: list[float] = []
    send_batch = runner.channel.send_batch

    async def timed_send(messages: Any) -> Any:
        sent_at.extend(clock.now for _ in messages)
        return await send_batch(messages)

    runner.channel.send_batch = timed_send  # type: ignore[method-assign]

    def in_flight() -> int:
        [(n,)] = query("SELECT count(*) FROM messages WHERE state <> 'queued'")
        return n

    spacing = runner.pacer.window / 5
    assert await runner.step() is True
    assert in_flight() == 5
    start = sent_at[0]
    assert sent_at == pytest.approx([start] * 3 + [start + spacing, start + 2 * spacing])
    assert await runner.step() is True
    assert in_flight() == 10
    assert await runner.step() is True
    assert in_flight() == 12
    assert len(sent_at) == 12
    assert most_in_any_window(sent_at, 1.0) == 5
    assert sent_at[5] == pytest.approx(start + runner.pacer.window)
    assert all(b - a == pytest.approx(spacing) for a, b in pairwise(sent_at[5:]))
    # Without a delivery delay the sandbox's sends come back delivered, recorded with the
    # batch: no receipt pass is left for the simulate loop.
    [(delivered,)] = query("SELECT count(*) FROM messages WHERE state = 'delivered'")
    assert delivered == 12
    assert await runner.simulate_deliveries() is False


async def test_a_priority_message_jumps_into_a_paced_batch(
    store: Store, make: Any, clock: FakeClock, query: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A priority-1 message queued while a paced batch of priority-0 ones goes out is sent
    next, within that batch: not after the rest of it, nor at the next claim (a batch is up
    to a second's worth, far beyond a priority message's latency target)."""
    monkeypatch.setattr(runner_module, "PRIORITY_CHECK_SECONDS", 0.0)   # look before every send
    project, _, _ = await make.project()
    channel = await make.channel(project.id, rate_per_second=5, config={"delivery_delay": 0})

    def plan(priority: int, count: int, tag: str) -> Any:
        data = [{"number": f"91987654{i:04d}", "message": f"{tag} {i}"} for i in range(count)]
        return plan_push(decode_push(json.dumps({"priority": priority, "data": data})),
                         channel, Limits())

    low = await store.accept_push(project.id, channel, plan(0, 12, "low"), time.time() - 1,
                                  None)
    dispatcher = Dispatcher(store, worker_id="w-paced", claim_batch=1000)
    runner = ChannelRunner(dispatcher, channel)
    runner.pacer = Pacer(5, burst=1)
    runner.pacer.assume_window_full()   # every send waits on the fake clock
    sent: list[int] = []
    urgent: list[int] = []
    send_batch = runner.channel.send_batch

    async def recording_send(messages: Any) -> Any:
        sent.extend(m.id for m in messages)
        return await send_batch(messages)

    async def sleep_then_push(seconds: float) -> None:
        await clock.sleep(seconds)
        if len(clock.sleeps) == 2:   # the batch's second send is due: a priority push lands
            urgent.extend((await store.accept_push(
                project.id, channel, plan(1, 1, "urgent"), time.time() - 1, None)).message_ids)

    monkeypatch.setattr(runner.channel, "send_batch", recording_send)
    monkeypatch.setattr(pacing, "asyncio", types.SimpleNamespace(sleep=sleep_then_push))
    assert await runner.step() is True
    assert len(urgent) == 1
    assert sent == low.message_ids[:2] + urgent + low.message_ids[2:5]
    # Recorded with the batch it joined; the rest of the backlog waits for the next claim.
    assert query("SELECT state FROM messages WHERE id = ?", urgent[0]) == [("delivered",)]
    [(waiting,)] = query("SELECT count(*) FROM messages WHERE state = 'queued'")
    assert waiting == 7


async def test_a_failed_look_for_priority_messages_still_records_the_batch(
    store: Store, make: Any, clock: FakeClock, query: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store failing while the runner looks for priority messages mid-batch only skips
    the look: the sends already started are recorded (not left to come back as re-sends)."""
    monkeypatch.setattr(runner_module, "PRIORITY_CHECK_SECONDS", 0.0)
    project, _, _ = await make.project()
    channel = await make.channel(project.id, rate_per_second=5, config={"delivery_delay": 0})
    data = [{"number": f"91987654{i:04d}", "message": f"m {i}"} for i in range(5)]
    await store.accept_push(project.id, channel, plan_push(
        decode_push(json.dumps({"data": data})), channel, Limits()), time.time() - 1, None)
    runner = ChannelRunner(Dispatcher(store, worker_id="w-flaky", claim_batch=1000), channel)

    async def unavailable(*args: Any, **kwargs: Any) -> bool:
        raise StoreUnavailable("the database went away for a moment")

    monkeypatch.setattr(store, "has_ready_messages", unavailable)
    assert await runner.step() is True
    assert query("SELECT state, count(*) FROM messages GROUP BY state") == [("delivered", 5)]


async def test_no_message_jumps_into_a_capped_channels_batch(
    store: Store, make: Any, clock: FakeClock, query: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A capped channel sends no more than its allowance: priority messages wait for the
    next claim there."""
    monkeypatch.setattr(runner_module, "PRIORITY_CHECK_SECONDS", 0.0)
    project, _, _ = await make.project()
    channel = await make.channel(project.id, rate_per_second=5,
                                 config={"delivery_delay": 0, "hourly_cap": 4})
    data = [{"number": f"91987654{i:04d}", "message": f"m {i}"} for i in range(6)]
    await store.accept_push(project.id, channel, plan_push(
        decode_push(json.dumps({"data": data})), channel, Limits()), time.time() - 1, None)
    urgent = plan_push(decode_push(json.dumps({"priority": 1, "data": [
        {"number": "919876549999", "message": "urgent"}]})), channel, Limits())
    dispatcher = Dispatcher(store, worker_id="w-capped", claim_batch=1000)
    runner = ChannelRunner(dispatcher, channel)
    runner.pacer.assume_window_full()

    async def sleep_then_push(seconds: float) -> None:
        await clock.sleep(seconds)
        if len(clock.sleeps) == 1:
            await store.accept_push(project.id, channel, urgent, time.time() - 1, None)

    monkeypatch.setattr(pacing, "asyncio", types.SimpleNamespace(sleep=sleep_then_push))
    assert await runner.step() is True
    [(sent,)] = query("SELECT count(*) FROM messages WHERE state = 'delivered'")
    assert sent == 4
    assert query("SELECT state FROM messages WHERE priority = 1") == [("queued",)]


async def _paced_channel_with_a_spent_bucket(
    store: Store, make: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> tuple[ChannelRunner, list[int]]:
    """A channel at 5/s with ten queued: the first step sends five; the five left go out
    0.21 s apart on the fake clock, each wait also yielding to the real loop (as a real sleep
    does), so finished sends can be recorded while the batch goes on."""
    monkeypatch.setattr(recording, "RECORD_EVERY_SECONDS", 0.0)
    real_sleep = asyncio.sleep

    async def sleep_and_yield(seconds: float) -> None:
        await clock.sleep(seconds)
        await real_sleep(0.001)

    monkeypatch.setattr(pacing, "asyncio", types.SimpleNamespace(sleep=sleep_and_yield))
    project, _, _ = await make.project()
    channel = await make.channel(project.id, rate_per_second=5, config={"delivery_delay": 0})
    data = [{"number": f"91987654{i:04d}", "message": f"m {i}"} for i in range(10)]
    plan = plan_push(decode_push(json.dumps({"data": data})), channel, Limits())
    pushed = await store.accept_push(project.id, channel, plan, time.time() - 1, None)
    runner = ChannelRunner(Dispatcher(store, worker_id="w-paced", claim_batch=1000), channel)
    assert await runner.step() is True
    return runner, pushed.message_ids[5:]


async def test_a_paced_batch_records_its_sends_as_it_goes(
    store: Store, make: Any, clock: FakeClock, query: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message sent is recorded while the rest of its batch still goes out: by the time the
    batch's last message is sent the first is no longer `sending`, so a worker killed then
    would not send it again."""
    runner, batch = await _paced_channel_with_a_spent_bucket(store, make, clock, monkeypatch)
    real_send = runner.channel.send_batch
    seen: list[str] = []

    async def watching(messages: Any) -> Any:
        if messages[0].id == batch[-1]:
            for _ in range(200):
                [(state,)] = query("SELECT state FROM messages WHERE id = ?", batch[0])
                if state != "sending":
                    break
                await asyncio.sleep(0.01)
            seen.append(state)
        return await real_send(messages)

    monkeypatch.setattr(runner.channel, "send_batch", watching)
    assert await runner.step() is True
    assert seen == ["delivered"]
    assert query("SELECT state, count(*) FROM messages GROUP BY state") == [("delivered", 10)]


async def test_a_failed_record_during_a_paced_batch_is_retried_at_its_end(
    store: Store, make: Any, clock: FakeClock, query: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner, batch = await _paced_channel_with_a_spent_bucket(store, make, clock, monkeypatch)
    real_record = store.record_outcomes
    calls: list[int] = []

    async def flaky(worker_id: str, results: Any, now: float, policy: Any) -> None:
        calls.append(len(results))
        if len(calls) == 1:
            raise StoreUnavailable("the database went away for a moment")
        await real_record(worker_id, results, now, policy)

    monkeypatch.setattr(store, "record_outcomes", flaky)
    assert await runner.step() is True
    assert len(calls) >= 2 and sum(calls[1:]) == len(batch)
    assert query("SELECT state, count(*) FROM messages GROUP BY state") == [("delivered", 10)]
    # Each recorded once: its submission in its columns, no submission event rows besides.
    assert query("SELECT count(*) FROM messages WHERE submitted_at IS NOT NULL") == [(10,)]
    assert query("SELECT count(*) FROM message_events WHERE state = 'submitted'") == [(0,)]


async def _queue(store: Store, channel: Any, count: int) -> None:
    data = [{"number": f"91987654{i:04d}", "message": f"m {i}"} for i in range(count)]
    plan = plan_push(decode_push(json.dumps({"data": data})), channel, Limits())
    await store.accept_push(channel.project_id, channel, plan, time.time() - 1, None)


async def test_a_new_lease_holder_waits_a_window_after_recent_sends(
    store: Store, make: Any, clock: FakeClock
) -> None:
    """A worker taking over a channel that another one sent on within the last window (a
    graceful hand-over: the previous holder recorded its sends before letting go) sends its
    first message a window later; a channel quiet for longer starts at once."""
    project, _, _ = await make.project()
    quiet = await make.channel(project.id, rate_per_second=5, config={"delivery_delay": 0})
    busy = await make.channel(project.id, rate_per_second=5, config={"delivery_delay": 0})
    await _queue(store, busy, 5)
    before = ChannelRunner(Dispatcher(store, worker_id="w-before"), busy)
    assert await before.step() is True   # five sent and recorded just now
    clock.sleeps.clear()

    fresh = ChannelRunner(Dispatcher(store, worker_id="w-quiet"), quiet)
    await fresh.allow_for_previous_holder()
    await fresh.provider_limiter.acquire()
    assert clock.sleeps == []

    after = ChannelRunner(Dispatcher(store, worker_id="w-after"), busy)
    await after.allow_for_previous_holder()
    await after.provider_limiter.acquire()
    assert clock.sleeps == [pytest.approx(after.provider_limiter.window)]


async def test_a_restarted_runner_counts_its_predecessors_sends(
    store: Store, make: Any, clock: FakeClock
) -> None:
    """The dispatcher restarts a channel's runner when the operator edits the channel: the
    new runner's limiter takes over the old one's recent permits (no burst at the restart),
    and needs no look at the store."""
    project, _, _ = await make.project()
    channel = await make.channel(project.id, rate_per_second=5, config={"delivery_delay": 0})
    await _queue(store, channel, 5)
    dispatcher = Dispatcher(store, worker_id="w-restart")
    old = ChannelRunner(dispatcher, channel)
    assert await old.step() is True
    sent = list(old.pacer._log)
    new = ChannelRunner(dispatcher, channel, previous=old)
    assert new.knows_recent_sends
    for _ in range(5):
        await new.provider_limiter.acquire()
        sent.append(clock.now)
    assert len(sent) == 10
    assert most_in_any_window(sent, 1.0) == 5


async def test_refresh_hands_an_edited_channels_runner_its_predecessor(
    store: Store, make: Any
) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id, rate_per_second=5, config={"delivery_delay": 0})
    dispatcher = Dispatcher(store, worker_id="w-edit", idle_poll=0.02)
    try:
        await dispatcher.refresh()
        first = dispatcher.runners[channel.id][0]
        assert not first.knows_recent_sends
        await store.update_channel(channel.id, rate_per_second=4)
        await dispatcher.refresh()
        second = dispatcher.runners[channel.id][0]
        assert second is not first and second.spec.rate_per_second == 4
        assert second.knows_recent_sends
    finally:
        await dispatcher._shutdown()
