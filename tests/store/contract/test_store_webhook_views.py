"""What the dashboard's webhooks page reads and does, behind the ``Store`` interface: a
project's reports waiting for its webhooks (its own only, newest first, bounded), and "retry
now" moving the next try of the failed ones to now (one more try for a given-up report).
Runs on every backend."""

from __future__ import annotations

import json
import time
from typing import Any

from pushgate.core.models import InboundMessage, SendResult
from pushgate.core.policy import RetryPolicy
from pushgate.core.push import Limits, decode_push, plan_push
from pushgate.store.base import Store

HOOK = "http://127.0.0.1:9/hook"
SCHEDULE = [60.0]


async def sent(store: Store, make: Any, count: int, now: float) -> tuple[int, list[int]]:
    """A project with an event webhook whose ``count`` messages were sent: as many reports
    in its outbox. Returns (project id, message ids)."""
    project, _, _ = await make.project(webhook_url=HOOK)
    channel = await make.channel(project.id)
    raw = {"globalmessage": "hi", "data": [{"number": f"91987654{i:04d}"}
                                           for i in range(count)]}
    plan = plan_push(decode_push(json.dumps(raw)), channel, Limits())
    accepted = await store.accept_push(project.id, channel, plan, now, None)
    claimed = await store.claim_messages(channel.id, "w", 100, now, 30)
    await store.record_outcomes("w", [SendResult.sent(m.id, f"p{m.id}") for m in claimed],
                                now, RetryPolicy())
    return project.id, accepted.message_ids


async def test_deliveries_are_the_projects_own_newest_first_and_bounded(store: Store,
                                                                        make: Any) -> None:
    now = time.time()
    mine, message_ids = await sent(store, make, 3, now)
    theirs, _ = await sent(store, make, 2, now)
    listed = await store.webhook_deliveries(mine, 10)
    assert [d.kind for d in listed] == ["event"] * 3
    assert [d.subject for d in listed] == [f"message {m} submitted"
                                           for m in reversed(message_ids)]
    assert all(d.attempts == 0 and d.next_attempt_at is not None for d in listed)
    assert len(await store.webhook_deliveries(mine, 2)) == 2
    assert len(await store.webhook_deliveries(theirs, 10)) == 2
    # A user's message waiting for the incoming webhook.
    await store.set_incoming_webhook(mine, HOOK + "/in")
    channel = (await store.list_channels(mine))[0]
    await store.record_inbound([InboundMessage(channel_id=channel.id, number="919800000001",
                                               text="hello", provider_id="in-1", at=now)], now)
    incoming = [d for d in await store.webhook_deliveries(mine, 10) if d.kind == "incoming"]
    assert [(d.subject, d.attempts) for d in incoming] == [("919800000001", 0)]
    assert [d for d in await store.webhook_deliveries(theirs, 10) if d.kind == "incoming"] == []


async def test_retry_now_moves_failed_reports_of_the_project_only(store: Store,
                                                                  make: Any) -> None:
    now = time.time()
    mine, _ = await sent(store, make, 2, now)
    theirs, _ = await sent(store, make, 1, now)
    # Nothing failed yet: nothing to retry (a first try is not hurried, nor a leased one).
    assert await store.retry_webhooks_now(mine, now) == 0
    batches = await store.claim_outbox("d", 100, now, 30)
    every = [item.id for batch in batches for item in batch.items]
    await store.retry_outbox(every, now, SCHEDULE, "HTTP 503")   # next try in 60 s
    assert await store.claim_outbox("d", 100, now + 1, 30) == []
    first = (await store.webhook_deliveries(mine, 10))[0]
    assert first.attempts == 1 and first.next_attempt_at == now + 60
    assert first.last_error == "HTTP 503"
    # One report, by id, of another project: refused; of mine: moved.
    assert await store.retry_webhooks_now(theirs, now + 1, "event", first.id) == 0
    assert await store.retry_webhooks_now(mine, now + 1, "incoming", first.id) == 0
    assert await store.retry_webhooks_now(mine, now + 1, "event", first.id) == 1
    [moved] = [d for d in await store.webhook_deliveries(mine, 10) if d.id == first.id]
    assert moved.next_attempt_at == now + 1
    [claimed] = await store.claim_outbox("d", 100, now + 1, 30)
    assert claimed.project_id == mine and [i.id for i in claimed.items] == [first.id]
    # Given up (every try used): shown without a next try; retry now gives it one more.
    await store.retry_outbox([first.id], now + 1, SCHEDULE)     # no reason: the last kept
    [dead] = [d for d in await store.webhook_deliveries(mine, 10) if d.id == first.id]
    assert dead.next_attempt_at is None and dead.attempts == 2
    assert dead.last_error == "HTTP 503"
    assert await store.retry_webhooks_now(mine, now + 2) == 2   # the dead one and the other
    assert all(d.next_attempt_at == now + 2 for d in await store.webhook_deliveries(mine, 10))
    assert (await store.outbox_stats())["dead"] == 0
    # The other project's report kept its own schedule.
    [other] = await store.webhook_deliveries(theirs, 10)
    assert other.next_attempt_at == now + 60
    # Incoming: a failed forward is moved to now too.
    await store.set_incoming_webhook(mine, HOOK + "/in")
    channel = (await store.list_channels(mine))[0]
    await store.record_inbound([InboundMessage(channel_id=channel.id, number="919800000001",
                                               text="hello", provider_id="in-1", at=now)], now)
    [item] = await store.claim_inbound(10, now + 2, 30)
    await store.retry_inbound([item.id], now + 2, [600.0], "timed out")
    [waiting] = [d for d in await store.webhook_deliveries(mine, 10) if d.kind == "incoming"]
    assert (waiting.attempts, waiting.last_error) == (1, "timed out")
    assert await store.retry_webhooks_now(mine, now + 3, "incoming", item.id) == 1
    [again] = await store.claim_inbound(10, now + 3, 30)
    assert again.id == item.id and again.attempts == 1


async def test_channel_workers_name_who_holds_each_lease(store: Store, make: Any) -> None:
    """The channels page's "served by": a live lease's worker, none once it ran out."""
    project, _, _ = await make.project()
    served = await make.channel(project.id)
    paused = await make.channel(project.id, application=3, paused=True)
    now = time.time()
    assert await store.acquire_channel_leases("w1", now, 15.0) == [served.id]
    assert await store.channel_workers([served.id, paused.id], now) == {served.id: "w1"}
    assert await store.channel_workers([paused.id], now) == {}
    assert await store.channel_workers([served.id], now + 16) == {}
