"""Channel leases: one worker sends for a channel at a time; a dead worker's channels pass to
another after the lease; paused channels are held by nobody. Runs on every backend."""

from __future__ import annotations

import time
from typing import Any

from pushgate.store.base import Store

TTL = 10.0


async def test_second_worker_waits_for_the_lease(store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    a = await make.channel(project.id, application=1)
    b = await make.channel(project.id, application=2)
    t0 = time.time()
    assert await store.acquire_channel_leases("w1", t0, TTL) == [a.id, b.id]
    assert await store.acquire_channel_leases("w2", t0 + 1, TTL) == []
    # w1 renews before expiry: w2 still gets nothing after the first lease would have ended.
    assert await store.acquire_channel_leases("w1", t0 + 5, TTL) == [a.id, b.id]
    assert await store.acquire_channel_leases("w2", t0 + TTL + 1, TTL) == []
    # w1 stops renewing: after its lease w2 takes over, and w1 no longer holds anything.
    assert await store.acquire_channel_leases("w2", t0 + 5 + TTL + 0.01, TTL) == [a.id, b.id]
    assert await store.acquire_channel_leases("w1", t0 + 5 + TTL + 1, TTL) == []


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
    assert await store.acquire_channel_leases("w2", t0 + 1 + TTL + 3, TTL) == [a.id, b.id]
