"""Channel leases: one worker sends for a channel at a time; live workers share the channels
out evenly; a dead worker's channels pass to others after the lease; paused channels are held
by nobody. Runs on every backend."""

from __future__ import annotations

import time
from typing import Any

from pushgate.store.base import Store

TTL = 10.0


async def test_a_live_lease_is_never_shared(store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    a = await make.channel(project.id, application=1)
    t0 = time.time()
    assert await store.acquire_channel_leases("w1", t0, TTL) == [a.id]
    assert await store.acquire_channel_leases("w2", t0 + 1, TTL) == []
    # w1 renews before expiry: w2 still gets nothing after the first lease would have ended.
    assert await store.acquire_channel_leases("w1", t0 + 5, TTL) == [a.id]
    assert await store.acquire_channel_leases("w2", t0 + TTL + 1, TTL) == []
    # w1 stops renewing: after its lease w2 takes over, and w1 no longer holds anything.
    assert await store.acquire_channel_leases("w2", t0 + 5 + TTL + 0.01, TTL) == [a.id]
    assert await store.acquire_channel_leases("w1", t0 + 5 + TTL + 1, TTL) == []


async def test_channels_are_shared_out_between_live_workers(store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    channels = [await make.channel(project.id, application=app) for app in (1, 2, 3, 4)]
    ids = [c.id for c in channels]
    t0 = time.time()
    # Alone, a worker takes everything.
    assert await store.acquire_channel_leases("w1", t0, TTL) == ids
    # A second worker joins: it gets nothing while w1's leases live, but w1 hands back its
    # surplus at its next renewal and w2 takes it at its own.
    assert await store.acquire_channel_leases("w2", t0 + 1, TTL) == []
    assert await store.acquire_channel_leases("w1", t0 + 2, TTL) == ids[:2]
    assert await store.acquire_channel_leases("w2", t0 + 3, TTL) == ids[2:]
    # A third joins: shares of ceil(4 / 3) = 2, so nobody has to give anything up yet and
    # the newcomer waits; nothing is held twice.
    assert await store.acquire_channel_leases("w3", t0 + 4, TTL) == []
    assert await store.acquire_channel_leases("w1", t0 + 5, TTL) == ids[:2]
    assert await store.acquire_channel_leases("w2", t0 + 12, TTL) == ids[2:]
    assert await store.acquire_channel_leases("w3", t0 + 12, TTL) == []
    # w1 dies (last renewal at t0+5): once its heartbeat and leases run out, w3 takes them.
    assert await store.acquire_channel_leases("w2", t0 + 5 + TTL + 1, TTL) == ids[2:]
    assert await store.acquire_channel_leases("w3", t0 + 5 + TTL + 2, TTL) == ids[:2]


async def test_new_channels_go_to_a_worker(store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    a = await make.channel(project.id, application=1)
    t0 = time.time()
    assert await store.acquire_channel_leases("w1", t0, TTL) == [a.id]
    b = await make.channel(project.id, application=2)
    assert await store.acquire_channel_leases("w2", t0 + 1, TTL) == [b.id]
    assert await store.acquire_channel_leases("w1", t0 + 2, TTL) == [a.id]


async def test_release_frees_channels_at_once(store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    a = await make.channel(project.id)
    t0 = time.time()
    assert await store.acquire_channel_leases("w1", t0, TTL) == [a.id]
    await store.release_channel_leases("w1")
    assert await store.acquire_channel_leases("w2", t0 + 1, TTL) == [a.id]


async def test_paused_channels_are_not_leased(store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    a = await make.channel(project.id, application=1)
    b = await make.channel(project.id, application=2)
    c = await make.channel(project.id, application=3, paused=True)
    t0 = time.time()
    assert await store.acquire_channel_leases("w1", t0, TTL) == [a.id, b.id]
    # Pausing a held channel drops its lease at the next renewal, for its holder too.
    await store.update_channel(b.id, paused=True)
    assert await store.acquire_channel_leases("w1", t0 + 1, TTL) == [a.id]
    assert await store.acquire_channel_leases("w2", t0 + 2, TTL) == []
    assert await store.acquire_channel_leases("w2", t0 + 1 + TTL + 1, TTL) == [a.id]
    # Resumed, it is free to take.
    await store.update_channel(c.id, paused=False)
    assert await store.acquire_channel_leases("w1", t0 + 1 + TTL + 2, TTL) == [c.id]
    await store.update_channel(b.id, paused=False)
    # Two live workers, three channels: shares of two; w2 takes b beside a.
    assert await store.acquire_channel_leases("w2", t0 + 1 + TTL + 3, TTL) == [a.id, b.id]


async def test_pull_channels_take_no_lease_and_no_share(store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    a = await make.channel(project.id, application=1)
    phones = await make.channel(project.id, application=3, kind="android",
                                config={"private_token": "t" * 32})
    b = await make.channel(project.id, application=2)
    t0 = time.time()
    # Without skipping, the phones' channel would take w2's whole share.
    await store.acquire_channel_leases("w1", t0, TTL, ["android"])
    await store.acquire_channel_leases("w2", t0, TTL, ["android"])
    first = await store.acquire_channel_leases("w1", t0 + 1, TTL, ["android"])   # hands back
    second = await store.acquire_channel_leases("w2", t0 + 1, TTL, ["android"])
    assert sorted(first + second) == [a.id, b.id]
    assert len(first) == len(second) == 1
    assert phones.id not in first + second
