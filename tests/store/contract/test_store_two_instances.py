"""Two store instances on one database (API nodes, workers, processes sharing a SQLite file):
they never overdraw a balance, never claim a message or lease a channel twice, and a push
through one wakes the idle dispatchers of the other."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from tests.store.helpers import DEADLINE, push_plan, wait_for

from pushgate.core.channels import ChannelSpec
from pushgate.dispatch.worker import Dispatcher
from pushgate.store.base import Store
from pushgate.store.errors import InsufficientCredit


async def test_concurrent_accepts_from_two_instances_never_overdraw(
    store: Store, second_store: Store, make: Any, query: Any
) -> None:
    per_push, price, pushes = 40, 1_000, 30
    cost = per_push * price
    affordable = 11
    project, _token, _secret = await make.project(credits=str(affordable * cost / 1_000_000))
    channel = await make.channel(project.id, price="0.001")

    async def push(i: int) -> Any:
        target = store if i % 2 else second_store
        try:
            return await target.accept_push(
                project.id, channel, push_plan(per_push, price, tag=str(i)), time.time(), None)
        except InsufficientCredit as exc:
            return exc

    outcomes = await asyncio.gather(*(push(i) for i in range(pushes)))
    accepted = [o for o in outcomes if not isinstance(o, InsufficientCredit)]
    refused = [o for o in outcomes if isinstance(o, InsufficientCredit)]
    assert len(accepted) == affordable
    assert len(refused) == pushes - affordable
    assert all(r.balance_micro < cost for r in refused)
    assert sorted(a.balance_micro for a in accepted) == [cost * k for k in range(affordable)]
    final = await store.get_project(project.id)
    assert final is not None and final.balance_micro == 0
    # Each accepted push's ids are its own, in request order; nothing of a refused push stayed.
    all_ids = [mid for a in accepted for mid in a.message_ids]
    assert len(set(all_ids)) == len(all_ids) == affordable * per_push
    assert all(a.message_ids == sorted(a.message_ids) for a in accepted)
    total = 0
    for a in accepted:
        push_row = await second_store.get_push(project.id, a.push_id)
        assert push_row is not None and push_row.counts == {"queued": per_push}
        total += push_row.accepted
    assert total == affordable * per_push
    assert query("SELECT count(*) FROM messages") == [(affordable * per_push,)]
    assert query("SELECT count(*) FROM pushes") == [(affordable,)]
    # The initial credit, less every debit.
    assert query("SELECT sum(delta_micro) FROM credit_ledger") == [(0,)]


async def test_claims_from_two_instances_never_overlap(
    store: Store, second_store: Store, make: Any, query: Any
) -> None:
    project, _token, _secret = await make.project(credits="1000")
    channel = await make.channel(project.id, price="0.001")
    queued: list[int] = []
    for i in range(6):
        result = await store.accept_push(project.id, channel, push_plan(250, 1_000, tag=str(i)),
                                         time.time(), None)
        queued += result.message_ids

    async def drain(target: Store, worker: str) -> list[list[int]]:
        batches = []
        while True:
            claimed = await target.claim_messages(channel.id, worker, 37, time.time(), 60)
            if not claimed:
                return batches
            batches.append([m.id for m in claimed])
            await asyncio.sleep(0)

    # Two workers per instance, four claimers racing on one channel's queue.
    results = await asyncio.gather(drain(store, "w1"), drain(second_store, "w2"),
                                   drain(store, "w3"), drain(second_store, "w4"))
    per_worker = [[mid for batch in batches for mid in batch] for batches in results]
    everything = [mid for ids in per_worker for mid in ids]
    assert len(everything) == len(set(everything)), "a message was claimed twice"
    assert sorted(everything) == sorted(queued)
    rows = query("SELECT leased_by, count(*), max(attempts), max(resends) FROM messages"
                 " WHERE state = 'sending' GROUP BY leased_by")
    held = {worker: (count, attempts, resends) for worker, count, attempts, resends in rows}
    for worker, ids in zip(("w1", "w2", "w3", "w4"), per_worker, strict=True):
        if ids:
            assert held[worker] == (len(ids), 1, 0)
    # Within each batch, priority then FIFO.
    for batches in results:
        for batch in batches:
            assert batch == sorted(batch)


async def test_concurrent_lease_acquisition_never_shares_a_channel(
    store: Store, second_store: Store, make: Any
) -> None:
    project, _token, _secret = await make.project()
    channels = [await make.channel(project.id, application=100 + i) for i in range(12)]
    now = time.time()
    held_a, held_b = await asyncio.gather(store.acquire_channel_leases("A", now, 15),
                                          second_store.acquire_channel_leases("B", now, 15))
    assert not set(held_a) & set(held_b)
    assert sorted(held_a + held_b) == sorted(c.id for c in channels)
    # A dies; once its leases expire B takes its channels, and A's renewals get nothing back.
    later = now + 16
    taken = await second_store.acquire_channel_leases("B", later, 15)
    assert sorted(taken) == sorted(c.id for c in channels)
    assert await store.acquire_channel_leases("A", later + 1, 15) == []


async def test_a_push_wakes_a_listener_of_another_instance(
    store: Store, second_store: Store, make: Any
) -> None:
    project, _token, _secret = await make.project()
    channel = await make.channel(project.id)
    heard: list[int] = []
    got = asyncio.Event()

    def on_channel(channel_id: int) -> None:
        heard.append(channel_id)
        got.set()

    listener = asyncio.create_task(second_store.listen(on_channel))
    try:
        # The LISTEN connection comes up in the background: push until one is heard.
        end = time.monotonic() + DEADLINE
        while not got.is_set():
            assert time.monotonic() < end, "no notification reached the listener"
            await store.accept_push(project.id, channel, push_plan(1, 1_000), time.time(), None)
            try:
                await asyncio.wait_for(got.wait(), 0.5)
            except TimeoutError:
                continue
        assert set(heard) == {channel.id}
        assert not listener.done()
    finally:
        listener.cancel()
        with pytest.raises(asyncio.CancelledError):
            await listener


async def test_idle_dispatcher_wakes_on_a_push_from_another_node(
    store: Store, second_store: Store, make: Any
) -> None:
    """The dispatcher polls only every 60 s here, so only the wake-up from the other instance
    (NOTIFY; on SQLite, ``listen``'s look at the file) can reach it in time."""
    project, _token, _secret = await make.project()
    channel = await make.channel(project.id)
    dispatcher = Dispatcher(second_store, worker_id="idle", idle_poll=60.0,
                            channel_lease_seconds=60.0)
    run = asyncio.create_task(dispatcher.run())
    try:
        await wait_for(lambda: _has_runner(dispatcher, channel), "the channel's runner")
        pushed: list[int] = []
        end = time.monotonic() + DEADLINE
        while True:
            assert time.monotonic() < end, "the idle dispatcher never woke up"
            result = await store.accept_push(project.id, channel, push_plan(3, 1_000), time.time(),
                                             None)
            pushed += result.message_ids
            if await _any_sent(store, project.id, pushed):
                break
        await wait_for(lambda: _all_sent(store, project.id, pushed), "every message sent")
    finally:
        dispatcher.stop()
        await run


async def _has_runner(dispatcher: Dispatcher, channel: ChannelSpec) -> bool:
    return channel.id in dispatcher.runners


async def _any_sent(store: Store, project_id: int, ids: list[int]) -> bool:
    # Give the wake-up half a second per push, far below the 60 s poll.
    for _ in range(25):
        for mid in ids:
            message = await store.get_message(project_id, mid)
            if message is not None and message.state != "queued":
                return True
        await asyncio.sleep(0.02)
    return False


async def _all_sent(store: Store, project_id: int, ids: list[int]) -> bool:
    for mid in ids:
        message = await store.get_message(project_id, mid)
        if message is None or message.state in ("queued", "sending"):
            return False
    return True


async def test_instant_reply_guard_lets_one_of_concurrent_replies_through(
    store: Store, second_store: Store, make: Any, query: Any
) -> None:
    """Two processes answering the same user at once: one reply is accepted; the guard is
    per channel and number, and frees the number once the interval has passed."""
    project, _token, _secret = await make.project(credits="10")
    channel = await make.channel(project.id, price="0.001")
    number = "919876500000"
    now = time.time()

    async def reply(i: int) -> Any:
        target = store if i % 2 else second_store
        return await target.accept_reply(project.id, channel, push_plan(1, 1_000, 1, str(i)),
                                         number, now, None, now - 60)

    outcomes = await asyncio.gather(*(reply(i) for i in range(8)))
    assert len([o for o in outcomes if o is not None]) == 1
    assert query("SELECT count(*) FROM pushes") == [(1,)]
    # Another number, and the same number once the interval is over, pass.
    other = await store.accept_reply(project.id, channel, push_plan(1, 1_000), "919876500001",
                                     now, None, now - 60)
    later = await second_store.accept_reply(project.id, channel, push_plan(1, 1_000), number,
                                            now + 61, None, now + 1)
    assert other is not None and later is not None
    # A reply the balance cannot cover is not written and does not take the number.
    poor, _t, _s = await make.project(credits="0")
    poor_channel = await make.channel(poor.id, price="0.001")
    with pytest.raises(InsufficientCredit):
        await store.accept_reply(poor.id, poor_channel, push_plan(1, 1_000), number, now,
                                 None, now - 60)
    assert query("SELECT count(*) FROM instant_replies WHERE channel_id = ?",
                 poor_channel.id) == [(0,)]
