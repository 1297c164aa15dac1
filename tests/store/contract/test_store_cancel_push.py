"""Cancelling a push (``Store.cancel_push``): its queued messages cancelled and refunded in one
transaction, those a worker holds or sent left alone. Runs on every backend."""

from __future__ import annotations

import time
from typing import Any

from tests.store.contract.test_store_queue import PRICE, balance, queue, states

from pushgate.core.models import SendResult
from pushgate.core.outcomes import PUSH_CANCELLED
from pushgate.core.policy import RetryPolicy
from pushgate.core.pricing import parse_credits
from pushgate.store.base import Store
from pushgate.webhooks.payloads import report_payload


async def test_cancel_push_refunds_only_what_no_channel_took(store: Store, make: Any) -> None:
    project, _, _ = await make.project(webhook_url="http://hooks.test/pushgate")
    channel = await make.channel(project.id)
    t0 = time.time()
    pushed = await queue(store, channel, 5, t0)
    other = await queue(store, channel, 2, t0, tag="other")
    assert await balance(store, project.id) == parse_credits("100") - 7 * PRICE

    # Two taken by a worker: one sent, one still in its hands.
    claimed = await store.claim_messages(channel.id, "w", 2, t0 + 1, 30.0)
    assert [m.id for m in claimed] == pushed.message_ids[:2]
    await store.record_outcomes("w", [SendResult.sent(claimed[0].id, "p-1")], t0 + 2,
                                RetryPolicy())

    assert await store.cancel_push(project.id, pushed.push_id, t0 + 3) == (3, 3 * PRICE)
    assert await states(store, project.id, pushed.message_ids) == (
        ["submitted", "sending"] + ["cancelled"] * 3)
    assert await states(store, project.id, other.message_ids) == ["queued"] * 2
    assert await balance(store, project.id) == parse_credits("100") - 4 * PRICE
    message = await store.get_message(project.id, pushed.message_ids[-1])
    assert message is not None
    assert message.status == 5 and message.error_message == PUSH_CANCELLED
    assert message.events[-1]["state"] == "cancelled"
    reports = [report_payload(item.report)
               for batch in await store.claim_outbox("d", 100, t0 + 4, 30.0)
               for item in batch.items if item.report.state == "cancelled"]
    assert sorted(int(r["msg_id"]) for r in reports) == pushed.message_ids[2:]

    # Again: nothing left to cancel; the cancelled ones are never claimed.
    assert await store.cancel_push(project.id, pushed.push_id, t0 + 5) == (0, 0)
    again = await store.claim_messages(channel.id, "w", 10, t0 + 6, 30.0)
    assert [m.id for m in again] == other.message_ids


async def test_cancel_push_of_another_project_cancels_nothing(store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    stranger, _, _ = await make.project()
    channel = await make.channel(project.id)
    pushed = await queue(store, channel, 3, time.time())
    assert await store.push_project(pushed.push_id) == project.id
    assert await store.push_project(pushed.push_id + 1000) is None
    assert await store.cancel_push(stranger.id, pushed.push_id, time.time()) == (0, 0)
    assert await states(store, project.id, pushed.message_ids) == ["queued"] * 3
