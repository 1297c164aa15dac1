"""Scheduled pushes (``accept_push(send_at=…)``, ``Store.promote_due``): their messages wait
``scheduled`` (Picky status 0), are never claimed before their send_at, move to the queue
when it comes, are cancelled and refunded by ``cancel_push`` and expire from their validity.
Runs on every backend."""

from __future__ import annotations

import time
from typing import Any

from tests.store.contract.test_store_queue import LEASE, PRICE, balance, queue, states

from pushgate.core.outcomes import PUSH_CANCELLED, VALIDITY_ENDED
from pushgate.core.pricing import parse_credits
from pushgate.store.base import Store


async def test_scheduled_messages_wait_for_their_send_at(store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    t0 = time.time()
    later = await queue(store, channel, 3, t0, tag="later", send_at=t0 + 100)
    now = await queue(store, channel, 2, t0, tag="now")
    # Reserved at accept time.
    assert await balance(store, project.id) == parse_credits("100") - 5 * PRICE
    assert await states(store, project.id, later.message_ids) == ["scheduled"] * 3
    message = await store.get_message(project.id, later.message_ids[0])
    assert message is not None and message.status == 0
    push = await store.get_push(project.id, later.push_id)
    assert push is not None and push.send_at == t0 + 100
    assert push.counts == {"scheduled": 3}
    unscheduled = await store.get_push(project.id, now.push_id)
    assert unscheduled is not None and unscheduled.send_at is None

    # Before send_at: only the unscheduled push is claimed, nothing is promoted.
    claimed = await store.claim_messages(channel.id, "w", 10, t0 + 50, 1000.0)
    assert [m.id for m in claimed] == now.message_ids
    before = await store.promote_due(t0 + 99, 100)
    assert (before.promoted, before.channel_ids, before.next_due) == (0, frozenset(), t0 + 100)
    assert await store.claim_messages(channel.id, "w", 10, t0 + 99, LEASE) == []

    # At send_at: moved to the queue, then claimed like any queued message.
    after = await store.promote_due(t0 + 100, 100)
    assert (after.promoted, after.channel_ids, after.next_due) == (
        3, frozenset({channel.id}), None)
    assert await states(store, project.id, later.message_ids) == ["queued"] * 3
    claimed = await store.claim_messages(channel.id, "w", 10, t0 + 101, LEASE)
    assert [m.id for m in claimed] == later.message_ids
    message = await store.get_message(project.id, later.message_ids[0])
    assert message is not None
    assert [(e["state"], e["at"]) for e in message.events] == [
        ("scheduled", t0), ("queued", t0 + 100), ("sending", t0 + 101)]
    again = await store.promote_due(t0 + 200, 100)
    assert (again.promoted, again.next_due) == (0, None)


async def test_promotion_goes_in_batches_oldest_due_first(store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    other = await make.channel(project.id)
    t0 = time.time()
    second = await queue(store, channel, 3, t0, tag="second", send_at=t0 + 20)
    first = await queue(store, other, 4, t0, tag="first", send_at=t0 + 10)
    third = await queue(store, channel, 2, t0, tag="third", send_at=t0 + 30)

    step = await store.promote_due(t0 + 25, 3)
    assert (step.promoted, step.channel_ids, step.next_due) == (3, frozenset({other.id}),
                                                                 t0 + 10)
    assert await states(store, project.id, first.message_ids) == ["queued"] * 3 + ["scheduled"]
    step = await store.promote_due(t0 + 25, 3)
    assert (step.promoted, step.channel_ids, step.next_due) == (
        3, frozenset({channel.id, other.id}), t0 + 20)
    step = await store.promote_due(t0 + 25, 3)
    assert (step.promoted, step.next_due) == (1, t0 + 30)
    assert await states(store, project.id, first.message_ids + second.message_ids) == (
        ["queued"] * 7)
    assert await states(store, project.id, third.message_ids) == ["scheduled"] * 2


async def test_cancel_push_cancels_scheduled_messages(store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    t0 = time.time()
    pushed = await queue(store, channel, 4, t0, send_at=t0 + 60)
    assert await store.cancel_push(project.id, pushed.push_id, t0 + 1) == (4, 4 * PRICE)
    assert await states(store, project.id, pushed.message_ids) == ["cancelled"] * 4
    assert await balance(store, project.id) == parse_credits("100")
    message = await store.get_message(project.id, pushed.message_ids[0])
    assert message is not None
    assert message.status == 5 and message.error_message == PUSH_CANCELLED
    # Nothing is left to promote when its time comes.
    step = await store.promote_due(t0 + 61, 100)
    assert (step.promoted, step.next_due) == (0, None)
    assert await store.claim_messages(channel.id, "w", 10, t0 + 62, LEASE) == []


async def test_scheduled_messages_past_their_validity_expire(store: Store, make: Any) -> None:
    # The gateway was down from before send_at until after send_at + validity: the sweep
    # expires and refunds them, whether or not the promoter moved them first.
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    t0 = time.time()
    promoted = await queue(store, channel, 2, t0, tag="p", send_at=t0 + 10, expires_at=t0 + 20)
    waiting = await queue(store, channel, 2, t0, tag="w", send_at=t0 + 10, expires_at=t0 + 20)
    assert await store.expire_due(t0 + 15, 100) == 0
    # The promoter reaches `promoted` first (oldest push first), the sweep `waiting`.
    step = await store.promote_due(t0 + 21, 2)
    assert step.promoted == 2
    assert await states(store, project.id, promoted.message_ids) == ["queued"] * 2
    assert await store.claim_messages(channel.id, "w", 10, t0 + 21, LEASE) == []
    assert await store.expire_due(t0 + 21, 100) == 4
    assert await states(store, project.id, promoted.message_ids + waiting.message_ids) == (
        ["expired"] * 4)
    for mid in (promoted.message_ids[0], waiting.message_ids[0]):
        message = await store.get_message(project.id, mid)
        assert message is not None and message.error_message == VALIDITY_ENDED
    assert await balance(store, project.id) == parse_credits("100")
    step = await store.promote_due(t0 + 22, 100)
    assert (step.promoted, step.next_due) == (0, None)
