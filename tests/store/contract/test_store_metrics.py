"""What the metrics read from and count in the store, on every backend: the queue depth by
(channel, priority), and messages counted once as they reach a final state (send outcomes,
status updates, expiry)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import REGISTRY
from tests.store.contract.test_store_queue import LEASE, queue

from pushgate.core.lifecycle import State
from pushgate.core.models import SendResult, StatusUpdate
from pushgate.core.policy import RetryPolicy
from pushgate.store.base import Store


def final(channel_id: int, status: str) -> float:
    return REGISTRY.get_sample_value(
        "pushgate_messages_final_total", {"channel": str(channel_id), "status": status}) or 0.0


async def test_queue_depths_count_queued_messages_by_channel_and_priority(
        store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    one = await make.channel(project.id, application=1)
    two = await make.channel(project.id, application=2)
    now = time.time()
    assert await store.queue_depths() == {}
    await queue(store, one, 3, now, priority=0, tag="a")
    await queue(store, one, 2, now, priority=1, tag="b")
    await queue(store, two, 1, now, priority=0, tag="c")
    assert await store.queue_depths() == {(one.id, 0): 3, (one.id, 1): 2, (two.id, 0): 1}
    # Claimed messages are no longer queued.
    await store.claim_messages(one.id, "w", 2, now + 1, LEASE)
    assert await store.queue_depths() == {(one.id, 0): 3, (two.id, 0): 1}


async def test_final_states_are_counted_once_by_the_write_that_moves_them(
        store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    now = time.time()
    before = {s: final(channel.id, s) for s in ("delivered", "read", "refunded", "expired")}
    await queue(store, channel, 4, now)
    claimed = await store.claim_messages(channel.id, "w", 10, now, LEASE)
    a, b, c, d = (m.id for m in claimed)
    results = [SendResult.delivered(a, "pa"), SendResult.sent(b, "pb"),
               SendResult.failed(c, "bad", "no such"), SendResult.sent(d, "pd")]
    await store.record_outcomes("w", results, now, RetryPolicy())
    # Written twice (a retried write): nothing is held any more, nothing counts again.
    await store.record_outcomes("w", results, now, RetryPolicy())
    await store.apply_status_updates([
        StatusUpdate(state=State.DELIVERED, at=now + 1, channel_id=channel.id, provider_id="pb"),
        StatusUpdate(state=State.READ, at=now + 2, channel_id=channel.id, provider_id="pb"),
        # Not a move: delivered already.
        StatusUpdate(state=State.DELIVERED, at=now + 3, channel_id=channel.id, provider_id="pa"),
    ])
    await queue(store, channel, 2, now, tag="old", expires_at=now + 5)
    assert await store.expire_due(now + 10, 100) == 2
    moved = {s: final(channel.id, s) - before[s] for s in before}
    assert moved == {"delivered": 2, "read": 1, "refunded": 1, "expired": 2}
