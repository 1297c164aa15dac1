"""The dispatcher in-process over sandbox channels: it drains the queue to a final state,
refunds failures, retries transient errors, and lets go of its leases when stopped."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from pushgate.core.channels import ChannelSpec
from pushgate.core.policy import RetryPolicy
from pushgate.core.pricing import parse_credits
from pushgate.core.push import Limits, decode_push, plan_push
from pushgate.dispatch.worker import Dispatcher
from pushgate.store.base import Store

DEADLINE = 20.0
PRICE = parse_credits("0.005")
FINAL = {"delivered", "read", "failed", "refunded", "expired", "cancelled"}


async def queue(store: Store, channel: ChannelSpec, count: int, priority: int = 0,
                tag: str = "m") -> list[int]:
    data = [{"number": f"91987654{i:04d}", "message": f"{tag} {i}"} for i in range(count)]
    plan = plan_push(decode_push(json.dumps({"priority": priority, "data": data})), channel,
                     Limits())
    result = await store.accept_push(channel.project_id, channel, plan, time.time(), None)
    return result.message_ids


async def counts(store: Store, project_id: int, push_id: int) -> dict[str, int]:
    push = await store.get_push(project_id, push_id)
    assert push is not None
    return dict(push.counts)


async def wait_for(check: Callable[[], Awaitable[bool]], what: str,
                   deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while True:
        if await check():
            return
        if time.monotonic() > end:
            pytest.fail(f"gave up after {deadline}s waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def run_dispatcher(store: Store) -> AsyncIterator[Callable[..., Dispatcher]]:
    """``run_dispatcher(**kwargs)`` starts a Dispatcher task; all are stopped after the test."""
    running: list[tuple[Dispatcher, asyncio.Task[None]]] = []

    def start(**kwargs: Any) -> Dispatcher:
        kwargs.setdefault("idle_poll", 0.02)
        kwargs.setdefault("retry_policy", RetryPolicy(base_seconds=0.01))
        dispatcher = Dispatcher(store, **kwargs)
        running.append((dispatcher, asyncio.create_task(dispatcher.run())))
        return dispatcher

    yield start
    for dispatcher, task in running:
        dispatcher.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)


async def push_id_of(store: Store, project_id: int, message_id: int) -> int:
    message = await store.get_message(project_id, message_id)
    assert message is not None
    return int(message.push_id)


async def test_drains_queue_to_delivered(store: Store, make: Any, run_dispatcher: Any) -> None:
    project, _, _ = await make.project(credits="10")
    channel = await make.channel(project.id, config={"delivery_delay": 0})
    n = 300
    ids = await queue(store, channel, n)
    push_id = await push_id_of(store, project.id, ids[0])
    dispatcher = run_dispatcher(worker_id="w-drain", claim_batch=64)

    async def all_delivered() -> bool:
        return await counts(store, project.id, push_id) == {"delivered": n}

    async def all_counted() -> bool:
        # Sends are counted once their write returns, a moment after the commit.
        return dispatcher.sent >= n

    await wait_for(all_delivered, f"{n} messages delivered")
    await wait_for(all_counted, f"{n} sends counted")
    assert dispatcher.sent == n
    message = await store.get_message(project.id, ids[-1])
    assert message is not None
    assert [e["state"] for e in message.events] == [
        "queued", "sending", "submitted", "delivered"]
    assert message.provider_id == f"sandbox-{ids[-1]}"
    project_after = await store.get_project(project.id)
    assert project_after is not None
    assert project_after.balance_micro == parse_credits("10") - n * PRICE


async def test_overlapping_lanes_send_each_message_once(
    store: Store, make: Any, run_dispatcher: Any
) -> None:
    """Several claim–send–record lanes on one unpaced channel claim disjoint batches: every
    message is claimed, submitted and delivered exactly once. A paced channel keeps one lane."""
    project, _, _ = await make.project(credits="100")
    channel = await make.channel(project.id, config={"delivery_delay": 0})
    paced = await make.channel(project.id, application=2, rate_per_second=1000.0,
                               config={"delivery_delay": 0})
    n = 500
    ids = await queue(store, channel, n)
    push_id = await push_id_of(store, project.id, ids[0])
    dispatcher = run_dispatcher(worker_id="w-lanes", claim_batch=25, send_lanes=3)

    async def all_delivered() -> bool:
        return await counts(store, project.id, push_id) == {"delivered": n}

    async def all_counted() -> bool:
        # A lane counts its sends once its write returns, a moment after the commit.
        return dispatcher.sent >= n

    await wait_for(all_delivered, f"{n} messages delivered by three lanes")
    await wait_for(all_counted, f"{n} sends counted")
    assert dispatcher.runners[channel.id][0].lanes == 3
    assert dispatcher.runners[paced.id][0].lanes == 1
    assert dispatcher.sent == n
    for mid in ids:
        message = await store.get_message(project.id, mid)
        assert message is not None
        assert message.attempts == 1 and message.resends == 0, mid
        assert [e["state"] for e in message.events] == [
            "queued", "sending", "submitted", "delivered"], mid


async def test_a_delivery_delay_delivers_through_simulated_receipts(
    store: Store, make: Any, run_dispatcher: Any
) -> None:
    """With a delivery delay the sends are recorded `submitted` and the sandbox's receipts,
    the path a real provider's take, deliver them afterwards."""
    project, _, _ = await make.project(credits="10")
    channel = await make.channel(project.id, config={"delivery_delay": 0.05})
    n = 50
    ids = await queue(store, channel, n)
    push_id = await push_id_of(store, project.id, ids[0])
    run_dispatcher(worker_id="w-receipts", claim_batch=10)

    async def all_delivered() -> bool:
        return await counts(store, project.id, push_id) == {"delivered": n}

    await wait_for(all_delivered, f"{n} messages delivered by simulated receipts")
    message = await store.get_message(project.id, ids[0])
    assert message is not None
    submitted, delivered = (e for e in message.events
                            if e["state"] in ("submitted", "delivered"))
    assert delivered["at"] - submitted["at"] >= 0.05


async def test_high_priority_overtakes_a_backlog(
    store: Store, make: Any, run_dispatcher: Any
) -> None:
    project, _, _ = await make.project(credits="10")
    channel = await make.channel(project.id, config={"delivery_delay": 0})
    low = await queue(store, channel, 50, priority=0, tag="low")
    high = await queue(store, channel, 5, priority=1, tag="high")
    low_push = await push_id_of(store, project.id, low[0])
    high_push = await push_id_of(store, project.id, high[0])
    run_dispatcher(worker_id="w-prio", claim_batch=5)

    async def done() -> bool:
        return (await counts(store, project.id, low_push) == {"delivered": 50}
                and await counts(store, project.id, high_push) == {"delivered": 5})

    await wait_for(done, "both pushes delivered")
    sent_at = {}
    for mid in low + high:
        message = await store.get_message(project.id, mid)
        assert message is not None
        sent_at[mid] = next(e["at"] for e in message.events if e["state"] == "sending")
    # Queued last, the priority-1 batch was claimed before every priority-0 message.
    assert max(sent_at[m] for m in high) <= min(sent_at[m] for m in low)


async def test_permanent_failures_are_refunded(
    store: Store, make: Any, run_dispatcher: Any
) -> None:
    project, _, _ = await make.project(credits="1")
    channel = await make.channel(project.id, config={"delivery_delay": 0, "failure_ratio": 1})
    n = 40
    ids = await queue(store, channel, n)
    push_id = await push_id_of(store, project.id, ids[0])
    mid_balance = await store.get_project(project.id)
    assert mid_balance is not None and mid_balance.balance_micro == parse_credits("1") - n * PRICE
    run_dispatcher(worker_id="w-fail")

    async def all_refunded() -> bool:
        return await counts(store, project.id, push_id) == {"refunded": n}

    await wait_for(all_refunded, f"{n} messages refunded")
    after = await store.get_project(project.id)
    assert after is not None and after.balance_micro == parse_credits("1")
    message = await store.get_message(project.id, ids[0])
    assert message is not None
    assert (message.status, message.error_code) == (5, "sandbox-failed")


async def test_transient_failures_retry_to_a_final_state(
    store: Store, make: Any, run_dispatcher: Any
) -> None:
    project, _, _ = await make.project(credits="1")
    channel = await make.channel(project.id, config={
        "delivery_delay": 0, "transient_ratio": 0.5, "seed": 7})
    n = 60
    ids = await queue(store, channel, n)
    push_id = await push_id_of(store, project.id, ids[0])
    run_dispatcher(worker_id="w-retry",
                   retry_policy=RetryPolicy(max_attempts=4, base_seconds=0.01, cap_seconds=0.05))

    async def all_final() -> bool:
        return set(await counts(store, project.id, push_id)) <= FINAL

    await wait_for(all_final, "every message in a final state")
    final = await counts(store, project.id, push_id)
    assert sum(final.values()) == n
    assert set(final) <= {"delivered", "refunded"}
    attempts = []
    for mid in ids:
        message = await store.get_message(project.id, mid)
        assert message is not None
        attempts.append(message.attempts)
        assert 1 <= message.attempts <= 4
        if message.state == "refunded":
            assert message.attempts == 4 and message.error_code == "sandbox-busy"
    assert max(attempts) > 1, "no message was retried"
    after = await store.get_project(project.id)
    assert after is not None
    assert after.balance_micro == parse_credits("1") - final.get("delivered", 0) * PRICE


async def test_stop_ends_run_and_releases_leases(
    store: Store, make: Any, query: Any
) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id, config={"delivery_delay": 0})
    dispatcher = Dispatcher(store, worker_id="w-stop", idle_poll=0.02)
    task = asyncio.create_task(dispatcher.run())

    async def running() -> bool:
        return channel.id in dispatcher.runners

    await wait_for(running, "the dispatcher to take the channel")
    assert query("SELECT channel_id, worker_id FROM channel_leases") == [(channel.id, "w-stop")]
    # Messages queued after start are picked up too.
    ids = await queue(store, channel, 10)
    dispatcher.wake(channel.id)
    push_id = await push_id_of(store, project.id, ids[0])

    async def delivered() -> bool:
        return await counts(store, project.id, push_id) == {"delivered": 10}

    await wait_for(delivered, "late messages delivered")
    dispatcher.stop()
    await asyncio.wait_for(task, DEADLINE)
    assert task.done() and task.exception() is None
    assert dispatcher.runners == {}
    assert query("SELECT count(*) FROM channel_leases") == [(0,)]
    # Another worker can take the channel at once, without waiting for a lease to expire.
    assert await store.acquire_channel_leases("other", time.time(), 15) == [channel.id]


async def test_paused_channel_is_not_sent(store: Store, make: Any, run_dispatcher: Any) -> None:
    project, _, _ = await make.project()
    paused = await make.channel(project.id, application=1, paused=True,
                                config={"delivery_delay": 0})
    live = await make.channel(project.id, application=2, config={"delivery_delay": 0})
    held = await queue(store, paused, 5, tag="held")
    sent = await queue(store, live, 5, tag="sent")
    held_push = await push_id_of(store, project.id, held[0])
    sent_push = await push_id_of(store, project.id, sent[0])
    dispatcher = run_dispatcher(worker_id="w-pause")

    async def live_done() -> bool:
        return await counts(store, project.id, sent_push) == {"delivered": 5}

    await wait_for(live_done, "the live channel delivered")
    assert paused.id not in dispatcher.runners
    assert await counts(store, project.id, held_push) == {"queued": 5}


async def test_two_workers_share_an_unpaced_sandbox_channel_without_doubles(
    store: Store, make: Any, run_dispatcher: Any
) -> None:
    project, _, _ = await make.project(credits="100")
    channel = await make.channel(project.id, config={"delivery_delay": 0})
    n = 600
    ids = await queue(store, channel, n)
    push_id = await push_id_of(store, project.id, ids[0])
    first = run_dispatcher(worker_id="w-a", claim_batch=20)
    second = run_dispatcher(worker_id="w-b", claim_batch=20)

    async def both_running() -> bool:
        return channel.id in first.runners and channel.id in second.runners

    await wait_for(both_running, "a runner for the channel in both workers")
    # One lease holder (primary: paces and simulates delivery), one helper.
    assert sorted([first.runners[channel.id][0].primary,
                   second.runners[channel.id][0].primary]) == [False, True]

    async def all_delivered() -> bool:
        return await counts(store, project.id, push_id) == {"delivered": n}

    async def all_counted() -> bool:
        return first.sent + second.sent >= n

    await wait_for(all_delivered, f"{n} messages delivered by two workers")
    await wait_for(all_counted, f"{n} sends counted")
    assert first.sent + second.sent == n
    for mid in ids:
        message = await store.get_message(project.id, mid)
        assert message is not None
        assert [e["state"] for e in message.events].count("submitted") == 1, mid


async def test_a_paced_channel_has_one_sender_however_many_workers(
    store: Store, make: Any, run_dispatcher: Any
) -> None:
    project, _, _ = await make.project(credits="100")
    paced = await make.channel(project.id, application=1, rate_per_second=1000.0,
                               config={"delivery_delay": 0})
    first = run_dispatcher(worker_id="w-a")
    second = run_dispatcher(worker_id="w-b")

    async def held() -> bool:
        return paced.id in first.runners or paced.id in second.runners

    await wait_for(held, "the paced channel leased by one worker")
    await asyncio.sleep(0.2)   # both workers have refreshed at least once more by now
    await first.refresh()
    await second.refresh()
    holders = [d for d in (first, second) if paced.id in d.runners]
    assert len(holders) == 1
    assert holders[0].runners[paced.id][0].primary


async def test_a_failing_lane_stops_its_runner_and_every_other_lane(
    store: Store, make: Any
) -> None:
    """An unexpected error in one lane ends the runner (the dispatcher then starts a new one);
    the other lanes finish the step in hand and stop with it rather than run on unowned."""
    from pushgate.dispatch.runner import ChannelRunner

    project, _, _ = await make.project()
    channel = await make.channel(project.id, config={"delivery_delay": 0})
    runner = ChannelRunner(Dispatcher(store, worker_id="w-fail", send_lanes=3, idle_poll=0.01),
                           channel)
    steps = 0
    failed = False

    async def step() -> bool:
        nonlocal steps, failed
        steps += 1
        await asyncio.sleep(0.01)
        if steps >= 5 and not failed:
            failed = True
            raise RuntimeError("a bug in one lane")
        return False

    runner.step = step  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="a bug in one lane"):
        await asyncio.wait_for(runner.run(), 10)
    after = steps
    await asyncio.sleep(0.1)
    assert steps == after   # no lane still stepping


async def test_one_sweep_expires_a_backlog_past_its_validity(
        store: Store, make: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep calls the store again while a call comes back full: 2,500 due messages in
    batches of 1,000 are expired by one sweep, not one batch per dispatcher cycle."""
    from pushgate.dispatch import worker

    project, _, _ = await make.project(credits="100")
    channel = await make.channel(project.id)
    data = [{"number": f"9198765{i:05d}", "message": f"m {i}"} for i in range(2500)]
    plan = plan_push(decode_push(json.dumps({"data": data})), channel, Limits())
    now = time.time()
    accepted = await store.accept_push(project.id, channel, plan, now - 20, now - 10)
    calls: list[int] = []
    expire_due = store.expire_due

    async def counted(at: float, limit: int) -> int:
        calls.append(limit)
        return await expire_due(at, limit)

    monkeypatch.setattr(store, "expire_due", counted)
    dispatcher = Dispatcher(store, worker_id="w")
    assert await dispatcher.expire_due() == 2500
    assert calls == [worker.EXPIRE_BATCH] * 3
    assert await counts(store, project.id, accepted.push_id) == {"expired": 2500}
