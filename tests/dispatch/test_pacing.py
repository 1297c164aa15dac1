"""The Pacer's arithmetic on a fake clock: no real time passes, no timing assertions."""

from __future__ import annotations

import asyncio
import json
import time
import types
from typing import Any

import pytest

from pushgate.core.push import Limits, decode_push, plan_push
from pushgate.dispatch import pacing, worker
from pushgate.dispatch.pacing import Pacer
from pushgate.dispatch.worker import ChannelRunner, Dispatcher
from pushgate.store.base import Store, StoreUnavailable


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


async def test_rate_allows_a_burst_then_spaces_sends(clock: FakeClock) -> None:
    pacer = Pacer(10)
    assert pacer.limited
    for _ in range(10):
        await pacer.acquire()
    assert clock.sleeps == []
    await pacer.acquire()   # the 11th in the same instant waits for one token
    assert clock.sleeps == [pytest.approx(0.1)]
    await pacer.acquire()
    assert clock.sleeps == [pytest.approx(0.1), pytest.approx(0.1)]


async def test_rate_holds_over_many_sends(clock: FakeClock) -> None:
    pacer = Pacer(10)
    start = clock.now
    for _ in range(110):
        await pacer.acquire()
    # 10 from the full bucket, then 100 at 10/s.
    assert clock.now - start == pytest.approx(10.0)
    assert len(clock.sleeps) == 100


async def test_bucket_refills_but_not_beyond_capacity(clock: FakeClock) -> None:
    pacer = Pacer(10)
    for _ in range(10):
        await pacer.acquire()
    clock.advance(0.35)   # 3.5 tokens back
    for _ in range(3):
        await pacer.acquire()
    assert clock.sleeps == []
    await pacer.acquire()   # half a token left: wait 0.05 s for the other half
    assert clock.sleeps == [pytest.approx(0.05)]
    clock.advance(3600)   # a long idle spell refills to one second's worth only
    for _ in range(10):
        await pacer.acquire()
    assert len(clock.sleeps) == 1
    await pacer.acquire()
    assert clock.sleeps[-1] == pytest.approx(0.1)


async def test_fractional_rate_and_explicit_burst(clock: FakeClock) -> None:
    slow = Pacer(0.5)   # one message every 2 s; the bucket still holds one
    await slow.acquire()
    await slow.acquire()
    assert clock.sleeps == [pytest.approx(2.0)]
    bursty = Pacer(2, burst=5)
    clock.sleeps.clear()
    for _ in range(5):
        await bursty.acquire()
    assert clock.sleeps == []
    await bursty.acquire()
    assert clock.sleeps == [pytest.approx(0.5)]


async def test_acquire_many_at_once(clock: FakeClock) -> None:
    pacer = Pacer(10)
    await pacer.acquire(4)
    await pacer.acquire(6)
    assert clock.sleeps == []
    await pacer.acquire(5)
    assert clock.sleeps == [pytest.approx(0.5)]
    # More than the bucket holds goes when the bucket is full, and is paid for afterwards.
    clock.advance(10)
    clock.sleeps.clear()
    await pacer.acquire(25)
    assert clock.sleeps == []
    await pacer.acquire()
    assert sum(clock.sleeps) == pytest.approx(1.6)


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
    # 0.2 s of delay, then the rest of the second the bucket needs.
    assert clock.sleeps == [pytest.approx(0.2), pytest.approx(0.8)]


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
    """A channel limited to 5/s claims 5 at a time out of a larger backlog, and the sends
    beyond the bucket wait 0.2 s each on the (fake) pacing clock."""
    project, _, _ = await make.project()
    channel = await make.channel(project.id, rate_per_second=5, config={"delivery_delay": 0})
    data = [{"number": f"91987654{i:04d}", "message": f"m {i}"} for i in range(12)]
    plan = plan_push(decode_push(json.dumps({"data": data})), channel, Limits())
    await store.accept_push(project.id, channel, plan, time.time() - 1, None)
    dispatcher = Dispatcher(store, worker_id="w-paced", claim_batch=1000)
    runner = ChannelRunner(dispatcher, channel)

    def in_flight() -> int:
        [(n,)] = query("SELECT count(*) FROM messages WHERE state <> 'queued'")
        return n

    assert await runner.step() is True
    assert in_flight() == 5
    assert clock.sleeps == []   # a full bucket
    assert await runner.step() is True
    assert in_flight() == 10
    assert clock.sleeps == [pytest.approx(0.2)] * 5
    assert await runner.step() is True
    assert in_flight() == 12
    assert len(clock.sleeps) == 7
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
    monkeypatch.setattr(worker, "PRIORITY_CHECK_SECONDS", 0.0)   # look before every send
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
    runner.pacer.tokens = 0   # every send waits its 0.2 s on the fake clock
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
    monkeypatch.setattr(worker, "PRIORITY_CHECK_SECONDS", 0.0)
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
    monkeypatch.setattr(worker, "PRIORITY_CHECK_SECONDS", 0.0)
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
    runner.pacer.tokens = 0

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
    """A channel at 5/s with ten queued: the first step spends the full bucket on five; the
    five left go out 0.2 s apart on the fake clock, each wait also yielding to the real loop
    (as a real sleep does), so finished sends can be recorded while the batch goes on."""
    monkeypatch.setattr(worker, "RECORD_EVERY_SECONDS", 0.0)
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
