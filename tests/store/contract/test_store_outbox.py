"""The webhook outbox behind the ``Store`` interface: which events are queued, how claims are
grouped and leased, the retry schedule, and completion. Runs on every backend."""

from __future__ import annotations

import json
import time
from typing import Any

from pushgate.core.channels import ChannelSpec
from pushgate.core.lifecycle import State
from pushgate.core.models import AcceptResult, OutboxBatch, SendResult, StatusUpdate
from pushgate.core.policy import RetryPolicy
from pushgate.core.push import Limits, decode_push, plan_push
from pushgate.store.base import Store
from pushgate.webhooks.payloads import report_payload

LEASE = 30.0
HOOK = "http://127.0.0.1:9/hook"


async def queue(store: Store, channel: ChannelSpec, count: int, now: float,
                tag: str = "m", media: str | None = None) -> AcceptResult:
    data = [{"number": f"91987654{i:04d}", "message": f"{tag} {i}",
             "reference_number": f"ref-{tag}-{i}"} for i in range(count)]
    raw: dict[str, Any] = {"globalmessage": "", "data": data}
    if media:
        raw["globalmedia"] = media
    plan = plan_push(decode_push(json.dumps(raw)), channel, Limits())
    assert len(plan.accepted) == count
    return await store.accept_push(channel.project_id, channel, plan, now, None)


async def send(store: Store, channel: ChannelSpec, now: float,
               fail: set[int] | None = None) -> list[int]:
    """Claim everything ready and record it: ok, or permanently failed for ids in ``fail``."""
    claimed = await store.claim_messages(channel.id, "w", 1000, now, LEASE)
    await store.record_outcomes("w", [
        SendResult.failed(m.id, "bad", "no such")
        if fail and m.id in fail else SendResult.sent(m.id, f"p{m.id}")
        for m in claimed], now, RetryPolicy())
    return [m.id for m in claimed]


def items(batches: list[OutboxBatch]) -> list[dict[str, Any]]:
    return [report_payload(item.report) for batch in batches for item in batch.items]


def ids(batches: list[OutboxBatch]) -> list[int]:
    return [item.id for batch in batches for item in batch.items]


async def test_no_outbox_without_webhook(store: Store, make: Any) -> None:
    project, _, _ = await make.project(webhook_url=None)
    channel = await make.channel(project.id)
    t0 = time.time()
    pushed = await queue(store, channel, 3, t0)
    await send(store, channel, t0 + 1, fail={pushed.message_ids[0]})
    await store.apply_status_updates(
        [StatusUpdate(State.DELIVERED, t0 + 2, message_id=pushed.message_ids[1])])
    assert await store.claim_outbox("d", 100, t0 + 3, LEASE) == []
    assert await store.outbox_stats() == {"pending": 0, "dead": 0}


async def test_claim_groups_by_project_with_full_payload(store: Store, make: Any) -> None:
    first, _, secret1 = await make.project(webhook_url=HOOK + "/1")
    second, _, secret2 = await make.project(webhook_url=HOOK + "/2")
    silent, _, _ = await make.project(webhook_url=None)
    ch1 = await make.channel(first.id)
    ch2 = await make.channel(second.id)
    ch3 = await make.channel(silent.id)
    t0 = time.time()
    p1 = await queue(store, ch1, 2, t0, tag="one")
    p2 = await queue(store, ch2, 1, t0, tag="two", media="https://example.com/a.jpg")
    await queue(store, ch3, 1, t0, tag="three")
    await send(store, ch1, t0 + 1, fail={p1.message_ids[1]})
    await send(store, ch2, t0 + 1)
    await send(store, ch3, t0 + 1)
    await store.apply_status_updates(
        [StatusUpdate(State.DELIVERED, t0 + 2, message_id=p2.message_ids[0])])
    assert await store.outbox_stats() == {"pending": 4, "dead": 0}

    batches = await store.claim_outbox("d", 100, t0 + 3, LEASE)
    by_project = {b.project_id: b for b in batches}
    assert set(by_project) == {first.id, second.id}
    assert (by_project[first.id].url, by_project[first.id].secret) == (HOOK + "/1", secret1)
    assert (by_project[second.id].url, by_project[second.id].secret) == (HOOK + "/2", secret2)
    assert all(item.project_id == b.project_id for b in batches for item in b.items)
    assert all(item.attempts == 0 for b in batches for item in b.items)

    ok, refunded = (report_payload(item.report) for item in by_project[first.id].items)
    assert ok == {
        "push_id": str(p1.push_id), "msg_id": str(p1.message_ids[0]),
        "number": "919876540000", "status": 4, "state": "submitted",
        "reference_number": "ref-one-0", "error_code": None, "error_message": "",
        "message": "one 0", "message_type": "Text", "media": None, "channel_id": ch1.id,
        "time": ok["time"]}
    assert abs(ok["time"] - (t0 + 1)) < 1e-3
    assert (refunded["msg_id"], refunded["status"], refunded["state"]) == (
        str(p1.message_ids[1]), 5, "refunded")
    assert (refunded["error_code"], refunded["error_message"]) == ("bad", "no such")
    assert refunded["reference_number"] == "ref-one-1"

    sub, delivered = (report_payload(item.report) for item in by_project[second.id].items)
    assert [sub["status"], delivered["status"]] == [4, 1]
    assert delivered["state"] == "delivered"
    assert (delivered["message_type"], delivered["media"]) == (
        "Image", "https://example.com/a.jpg")
    assert all(isinstance(p["msg_id"], str) and isinstance(p["push_id"], str)
               for p in items(batches))


async def test_claimed_items_are_leased(store: Store, make: Any) -> None:
    project, _, _ = await make.project(webhook_url=HOOK)
    channel = await make.channel(project.id)
    t0 = time.time()
    await queue(store, channel, 3, t0)
    await send(store, channel, t0 + 1)
    first = await store.claim_outbox("d1", 2, t0 + 2, LEASE)
    rest = await store.claim_outbox("d2", 100, t0 + 2, LEASE)
    assert len(ids(first)) == 2 and len(ids(rest)) == 1
    assert not set(ids(first)) & set(ids(rest))
    assert await store.claim_outbox("d2", 100, t0 + 2 + LEASE - 1, LEASE) == []
    # The first deliverer died mid-POST: after its lease the items come back.
    again = await store.claim_outbox("d2", 100, t0 + 2 + LEASE + 0.01, LEASE)
    assert sorted(ids(again)) == sorted(ids(first) + ids(rest))


async def test_retry_schedule_then_dead(store: Store, make: Any) -> None:
    project, _, _ = await make.project(webhook_url=HOOK)
    channel = await make.channel(project.id)
    t0 = time.time()
    await queue(store, channel, 1, t0)
    await send(store, channel, t0 + 1)
    schedule = [60.0, 900.0, 7200.0]
    now = t0 + 2
    [item_id] = ids(await store.claim_outbox("d", 100, now, LEASE))
    for tries, wait in enumerate(schedule, start=1):
        await store.retry_outbox([item_id], now, schedule)
        assert await store.claim_outbox("d", 100, now + wait - 1, LEASE) == []
        now += wait
        [batch] = await store.claim_outbox("d", 100, now, LEASE)
        assert [(i.id, i.attempts) for i in batch.items] == [(item_id, tries)]
        assert await store.outbox_stats() == {"pending": 1, "dead": 0}
    # The last scheduled try failed too: given up.
    await store.retry_outbox([item_id], now, schedule)
    assert await store.outbox_stats() == {"pending": 0, "dead": 1}
    assert await store.claim_outbox("d", 100, now + 10**7, LEASE) == []


async def test_complete_deletes(store: Store, make: Any) -> None:
    project, _, _ = await make.project(webhook_url=HOOK)
    channel = await make.channel(project.id)
    t0 = time.time()
    await queue(store, channel, 3, t0)
    await send(store, channel, t0 + 1)
    claimed = ids(await store.claim_outbox("d", 100, t0 + 2, LEASE))
    assert len(claimed) == 3
    await store.complete_outbox(claimed[:2])
    assert await store.outbox_stats() == {"pending": 1, "dead": 0}
    later = await store.claim_outbox("d", 100, t0 + 2 + LEASE + 1, LEASE)
    assert ids(later) == claimed[2:]
    await store.complete_outbox(claimed[2:])
    assert await store.outbox_stats() == {"pending": 0, "dead": 0}
    await store.complete_outbox([])


async def test_expiry_is_reported(store: Store, make: Any) -> None:
    project, _, _ = await make.project(webhook_url=HOOK)
    channel = await make.channel(project.id)
    t0 = time.time()
    plan = plan_push(decode_push(json.dumps(
        {"globalmessage": "x", "data": [{"number": "919876540000"}]})), channel, Limits())
    pushed = await store.accept_push(project.id, channel, plan, t0, t0 + 10)
    assert await store.expire_due(t0 + 11, 100) == 1
    [payload] = items(await store.claim_outbox("d", 100, t0 + 12, LEASE))
    assert (payload["msg_id"], payload["status"], payload["state"]) == (
        str(pushed.message_ids[0]), 5, "expired")


async def test_items_of_a_project_that_dropped_its_webhook_are_discarded(
    store: Store, make: Any
) -> None:
    project, _, _ = await make.project(webhook_url=HOOK)
    channel = await make.channel(project.id)
    t0 = time.time()
    await queue(store, channel, 2, t0)
    await send(store, channel, t0 + 1)
    await store.set_webhook(project.id, None, None)
    assert await store.claim_outbox("d", 100, t0 + 2, LEASE) == []
    assert await store.outbox_stats() == {"pending": 0, "dead": 0}


async def test_a_send_answered_delivered_is_recorded_submitted_then_delivered(
    store: Store, make: Any
) -> None:
    """An outcome that already says delivered (the sandbox without a delay) moves the message
    to `delivered` in the same write: both events and both reports, in lifecycle order, next
    to a plain submitted send and with a part's problem kept on the `submitted` event."""
    project, _, _ = await make.project(webhook_url=HOOK)
    silent, _, _ = await make.project(webhook_url=None)
    channel = await make.channel(project.id)
    quiet = await make.channel(silent.id)
    t0 = time.time()
    pushed = await queue(store, channel, 3, t0)
    muted = await queue(store, quiet, 1, t0)
    claimed = await store.claim_messages(channel.id, "w", 10, t0 + 1, LEASE)
    claimed += await store.claim_messages(quiet.id, "w", 10, t0 + 1, LEASE)
    first, second, third = pushed.message_ids
    await store.record_outcomes("w", [
        SendResult.delivered(first, "p1"),
        SendResult.sent(second, "p2"),
        SendResult.delivered(third, "p3", error_code="part", error_message="text lost"),
        SendResult.delivered(muted.message_ids[0], "p4"),
    ], t0 + 2, RetryPolicy())

    async def history(project_id: int, mid: int) -> tuple[str, list[tuple[str, Any]]]:
        message = await store.get_message(project_id, mid)
        assert message is not None
        return message.state, [(e["state"], e["detail"]) for e in message.events]

    state, events = await history(project.id, first)
    assert state == "delivered"
    assert [e[0] for e in events] == ["queued", "sending", "submitted", "delivered"]
    assert events[2][1] == "provider id p1"
    state, events = await history(project.id, second)
    assert state == "submitted"
    assert events[-1] == ("submitted", "provider id p2")
    state, events = await history(project.id, third)
    assert state == "delivered"
    assert events[2] == ("submitted", "provider id p3; part: text lost")
    assert events[3][0] == "delivered"
    assert (await history(silent.id, muted.message_ids[0]))[0] == "delivered"
    message = await store.get_message(project.id, first)
    assert message is not None and message.provider_id == "p1"

    reports = [(p["msg_id"], p["state"]) for p in items(
        await store.claim_outbox("d", 100, t0 + 3, LEASE))]
    assert reports == [(str(first), "submitted"), (str(first), "delivered"),
                       (str(second), "submitted"),
                       (str(third), "submitted"), (str(third), "delivered")]
    # A receipt for a message already delivered changes nothing.
    assert await store.apply_status_updates(
        [StatusUpdate(State.DELIVERED, t0 + 4, channel_id=channel.id, provider_id="p1")]) == 0
