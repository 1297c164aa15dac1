"""The queue behind the ``Store`` interface: claim order, leases, outcomes, status updates,
expiry. Runs on every backend (see ``tests/conftest.py``)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from pushgate.core.channels import ChannelSpec
from pushgate.core.lifecycle import State
from pushgate.core.models import AcceptResult, SendResult, StatusUpdate
from pushgate.core.policy import RetryPolicy
from pushgate.core.pricing import parse_credits
from pushgate.core.push import Limits, decode_push, plan_push
from pushgate.store.base import Store
from pushgate.webhooks.payloads import report_payload

PRICE = parse_credits("0.005")
LEASE = 30.0


async def queue(store: Store, channel: ChannelSpec, count: int, now: float, *,
                priority: int = 0, tag: str = "m", expires_at: float | None = None,
                references: bool = False, send_at: float | None = None) -> AcceptResult:
    """Accept a push of ``count`` distinct messages on ``channel`` at ``now``."""
    data: list[dict[str, Any]] = [
        {"number": f"91987654{i:04d}", "message": f"{tag} {i}"} for i in range(count)]
    if references:
        for i, entry in enumerate(data):
            entry["reference_number"] = f"ref-{tag}-{i}"
    body = decode_push(json.dumps({"priority": priority, "globalmessage": "", "data": data}))
    plan = plan_push(body, channel, Limits())
    assert len(plan.accepted) == count, plan.refused
    return await store.accept_push(channel.project_id, channel, plan, now, expires_at, send_at)


async def states(store: Store, project_id: int, ids: list[int]) -> list[str]:
    out = []
    for mid in ids:
        message = await store.get_message(project_id, mid)
        assert message is not None, mid
        out.append(message.state)
    return out


async def event_states(store: Store, project_id: int, mid: int) -> list[str]:
    message = await store.get_message(project_id, mid)
    assert message is not None
    return [e["state"] for e in message.events]


async def balance(store: Store, project_id: int) -> int:
    project = await store.get_project(project_id)
    assert project is not None
    return project.balance_micro


# --- claim order ----------------------------------------------------------------------------

async def test_priority_first_then_fifo(store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    t0 = time.time()
    low = await queue(store, channel, 3, t0, priority=0, tag="low")
    high = await queue(store, channel, 2, t0 + 0.1, priority=1, tag="high")
    low2 = await queue(store, channel, 2, t0 + 0.2, priority=0, tag="low2")
    assert min(high.message_ids) > max(low.message_ids)   # queued later

    claimed = await store.claim_messages(channel.id, "w1", 100, t0 + 1, LEASE)
    assert [m.id for m in claimed] == high.message_ids + low.message_ids + low2.message_ids
    assert [m.priority for m in claimed] == [1, 1, 0, 0, 0, 0, 0]
    assert [m.text for m in claimed[:3]] == ["high 0", "high 1", "low 0"]
    assert all(m.attempts == 1 and not m.possible_resend for m in claimed)
    assert all(m.channel_id == channel.id and m.project_id == project.id for m in claimed)


async def test_message_ids_name_the_accepted_entries_in_order(store: Store, make: Any) -> None:
    """Refused entries (a bad number, a duplicate) take no id and shift none: every id the
    push answers with holds the entry it is listed for, across the store's INSERT statements."""
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    data: list[dict[str, Any]] = [
        {"number": f"91987654{i:04d}", "message": f"m {i}"} for i in range(1203)]
    data[7] = {"number": "12", "message": "too short"}
    data[600] = dict(data[599])   # a duplicate
    body = decode_push(json.dumps({"globalmessage": "", "data": data}))
    plan = plan_push(body, channel, Limits())
    assert len(plan.refused) == 2
    first = await queue(store, channel, 3, time.time(), tag="before")
    result = await store.accept_push(project.id, channel, plan, time.time(), None)
    assert len(result.message_ids) == len(plan.accepted) == 1201
    assert result.message_ids == sorted(result.message_ids)
    assert min(result.message_ids) > max(first.message_ids)
    stored = {m.id: (m.number, m.body)
              async for rows in store.iter_push_messages(project.id, result.push_id)
              for m in rows}
    assert stored == {mid: (row[1], row[2])
                      for mid, row in zip(result.message_ids, plan.accepted, strict=True)}


async def test_claim_limit_and_no_double_claim(store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    t0 = time.time()
    low = await queue(store, channel, 3, t0, priority=0, tag="low")
    high = await queue(store, channel, 2, t0 + 0.1, priority=1, tag="high")
    now = t0 + 1
    first = await store.claim_messages(channel.id, "w1", 2, now, LEASE)
    second = await store.claim_messages(channel.id, "w2", 2, now, LEASE)
    third = await store.claim_messages(channel.id, "w1", 2, now, LEASE)
    fourth = await store.claim_messages(channel.id, "w2", 2, now, LEASE)
    assert [m.id for m in first] == high.message_ids
    assert [m.id for m in second] == low.message_ids[:2]
    assert [m.id for m in third] == low.message_ids[2:]
    assert fourth == []
    assert await states(store, project.id, low.message_ids + high.message_ids) == ["sending"] * 5
    assert await store.has_ready_messages(channel.id, now) is False


async def test_claim_only_takes_its_channel_and_ready_messages(store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    one = await make.channel(project.id, application=1)
    two = await make.channel(project.id, application=2)
    t0 = time.time()
    a = await queue(store, one, 2, t0, tag="one")
    b = await queue(store, two, 2, t0, tag="two")
    # Not ready before its next_attempt_at (the accept time).
    assert await store.has_ready_messages(one.id, t0 - 1) is False
    assert await store.claim_messages(one.id, "w", 10, t0 - 1, LEASE) == []
    assert await store.has_ready_messages(one.id, t0 + 1) is True
    assert [m.id for m in await store.claim_messages(one.id, "w", 10, t0 + 1, LEASE)] == (
        a.message_ids)
    assert [m.id for m in await store.claim_messages(two.id, "w", 10, t0 + 1, LEASE)] == (
        b.message_ids)


async def test_claim_of_a_minimum_priority_leaves_lower_ones(store: Store, make: Any) -> None:
    """What a runner uses to let urgent messages jump into a batch it is sending: only
    messages of at least ``min_priority``, expired leases included, nothing lower."""
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    t0 = time.time()
    low = await queue(store, channel, 3, t0, priority=0, tag="low")
    assert await store.has_ready_messages(channel.id, t0 + 1, min_priority=1) is False
    assert await store.claim_messages(channel.id, "w1", 10, t0 + 1, LEASE, 1) == []
    high = await queue(store, channel, 2, t0 + 2, priority=1, tag="high")
    assert await store.has_ready_messages(channel.id, t0 + 3, min_priority=1) is True
    claimed = await store.claim_messages(channel.id, "w1", 10, t0 + 3, 5.0, 1)
    assert [m.id for m in claimed] == high.message_ids
    assert await states(store, project.id, low.message_ids) == ["queued"] * 3
    assert await store.has_ready_messages(channel.id, t0 + 3, min_priority=1) is False
    # Their lease runs out unrecorded: they come back for a priority-1 claim, as re-sends.
    assert await store.has_ready_messages(channel.id, t0 + 9, min_priority=1) is True
    again = await store.claim_messages(channel.id, "w2", 10, t0 + 9, LEASE, 1)
    assert [m.id for m in again] == high.message_ids
    assert all(m.possible_resend for m in again)
    rest = await store.claim_messages(channel.id, "w2", 10, t0 + 9, LEASE)
    assert [m.id for m in rest] == low.message_ids


async def test_claim_records_sending_event(store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    t0 = time.time()
    pushed = await queue(store, channel, 1, t0)
    [mid] = pushed.message_ids
    assert await event_states(store, project.id, mid) == ["queued"]
    [claimed] = await store.claim_messages(channel.id, "worker-a", 10, t0 + 1, LEASE)
    message = await store.get_message(project.id, mid)
    assert message is not None
    assert message.state == "sending" and message.attempts == 1
    assert [e["state"] for e in message.events] == ["queued", "sending"]
    assert "worker-a" in message.events[-1]["detail"]
    assert message.events[-1]["at"] == pytest.approx(t0 + 1)


# --- message leases ---------------------------------------------------------------------------

async def test_expired_lease_is_claimed_again_as_possible_resend(
    store: Store, make: Any
) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    t0 = time.time()
    pushed = await queue(store, channel, 3, t0)
    first = await store.claim_messages(channel.id, "w1", 10, t0 + 1, 5.0)
    assert len(first) == 3
    # Within the lease nobody else gets them.
    assert await store.claim_messages(channel.id, "w2", 10, t0 + 5, 5.0) == []
    assert await store.has_ready_messages(channel.id, t0 + 5) is False
    # w1 died without recording; after the lease they come back, flagged.
    assert await store.has_ready_messages(channel.id, t0 + 7) is True
    again = await store.claim_messages(channel.id, "w2", 10, t0 + 7, 5.0)
    assert [m.id for m in again] == pushed.message_ids
    assert all(m.possible_resend and m.attempts == 2 for m in again)
    for mid in pushed.message_ids:
        message = await store.get_message(project.id, mid)
        assert message is not None
        assert (message.state, message.resends, message.attempts) == ("sending", 1, 2)
        events = message.events
        assert [e["state"] for e in events] == ["queued", "sending", "sending"]
        assert "possible re-send" in events[-1]["detail"]
        assert "possible re-send" not in events[-2]["detail"]

    # The dead worker's late outcome is ignored; the new owner's counts.
    await store.record_outcomes(
        "w1", [SendResult.sent(m.id, "stale") for m in first], t0 + 8,
        RetryPolicy())
    assert await states(store, project.id, pushed.message_ids) == ["sending"] * 3
    await store.record_outcomes(
        "w2", [SendResult.sent(m.id, f"p{m.id}") for m in again], t0 + 9,
        RetryPolicy())
    for mid in pushed.message_ids:
        message = await store.get_message(project.id, mid)
        assert message is not None
        assert (message.state, message.provider_id) == ("submitted", f"p{mid}")


async def expired_and_fresh(store: Store, make: Any) -> tuple[Any, Any, Any, Any, float]:
    """Two messages claimed by a worker that died (their 5 s leases ran out by ``t0 + 7``)
    and two queued after them: (project, channel, old push, new push, t0)."""
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    t0 = time.time()
    old = await queue(store, channel, 2, t0, tag="old")
    await store.claim_messages(channel.id, "w1", 10, t0 + 1, 5.0)
    new = await queue(store, channel, 2, t0 + 2, tag="new")
    return project, channel, old, new, t0


async def test_expired_leases_come_before_fresh_messages(store: Store, make: Any) -> None:
    _, channel, old, new, t0 = await expired_and_fresh(store, make)
    claimed = await store.claim_messages(channel.id, "w2", 3, t0 + 10, 5.0)
    assert [(m.id, m.possible_resend) for m in claimed] == [
        (old.message_ids[0], True), (old.message_ids[1], True), (new.message_ids[0], False)]


async def test_a_claim_without_reclaim_leaves_expired_leases_for_a_later_one(
    store: Store, make: Any
) -> None:
    project, channel, old, new, t0 = await expired_and_fresh(store, make)
    fresh = await store.claim_messages(channel.id, "w2", 10, t0 + 10, 5.0, reclaim=False)
    assert [(m.id, m.possible_resend) for m in fresh] == [
        (mid, False) for mid in new.message_ids]
    assert await states(store, project.id, old.message_ids) == ["sending"] * 2
    again = await store.claim_messages(channel.id, "w2", 10, t0 + 11, 5.0)
    assert [(m.id, m.possible_resend) for m in again] == [
        (mid, True) for mid in old.message_ids]


async def test_release_gives_messages_back(store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    t0 = time.time()
    pushed = await queue(store, channel, 2, t0)
    claimed = await store.claim_messages(channel.id, "w1", 10, t0 + 1, LEASE)
    await store.release_messages("other", [m.id for m in claimed])   # not its messages
    assert await states(store, project.id, pushed.message_ids) == ["sending"] * 2
    await store.release_messages("w1", [m.id for m in claimed])
    assert await states(store, project.id, pushed.message_ids) == ["queued"] * 2
    again = await store.claim_messages(channel.id, "w2", 10, t0 + 2, LEASE)
    assert [(m.id, m.attempts, m.possible_resend) for m in again] == [
        (mid, 1, False) for mid in pushed.message_ids]
    message = await store.get_message(project.id, pushed.message_ids[0])
    assert message is not None
    assert [e["state"] for e in message.events] == ["queued", "sending", "queued", "sending"]
    assert "released unsent by worker w1" in message.events[2]["detail"]


# --- outcomes ---------------------------------------------------------------------------------

async def test_ok_outcome_submits_with_provider_id(store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    t0 = time.time()
    pushed = await queue(store, channel, 2, t0)
    claimed = await store.claim_messages(channel.id, "w", 10, t0 + 1, LEASE)
    await store.record_outcomes(
        "w", [SendResult.sent(m.id, f"prov-{m.id}") for m in claimed], t0 + 2,
        RetryPolicy())
    for mid in pushed.message_ids:
        message = await store.get_message(project.id, mid)
        assert message is not None
        assert (message.state, message.status, message.provider_id) == (
            "submitted", 4, f"prov-{mid}")
        assert [e["state"] for e in message.events] == ["queued", "sending", "submitted"]
        assert f"prov-{mid}" in message.events[-1]["detail"]
    # Submitted messages are not claimable.
    assert await store.claim_messages(channel.id, "w", 10, t0 + 100, LEASE) == []
    assert await store.submitted_before(channel.id, t0 + 2, 10) == pushed.message_ids
    assert await store.submitted_before(channel.id, t0 + 1.5, 10) == []

async def test_routine_steps_are_columns_and_exceptions_are_event_rows(
        store: Store, make: Any, query: Any) -> None:
    """A message claimed once and submitted cleanly costs no event row; a re-claim, a
    submission with a problem and a receipt do, and the history reads the same either way."""
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    t0 = time.time()
    pushed = await queue(store, channel, 3, t0)
    routine, retried, partial = pushed.message_ids
    claimed = await store.claim_messages(channel.id, "w1", 10, t0 + 1, LEASE)
    await store.record_outcomes("w1", [
        SendResult.delivered(routine, "p-routine"),
        SendResult.retry(retried, "503", "busy"),
        SendResult.sent(partial, "p-partial", error_code="470", error_message="caption dropped"),
    ], t0 + 2, RetryPolicy(base_seconds=0.0))
    assert len(claimed) == 3
    assert query("SELECT count(*) FROM message_events WHERE message_id = ?", routine) == [(0,)]
    again = await store.claim_messages(channel.id, "w2", 10, t0 + 3, LEASE)
    assert [m.id for m in again] == [retried]
    await store.record_outcomes("w2", [SendResult.sent(retried, "p-retried")],
                                t0 + 4, RetryPolicy())
    # The receipt's own clock says it came before the submission was recorded.
    await store.apply_status_updates(
        [StatusUpdate(State.DELIVERED, t0 + 3.5, message_id=retried)])

    routine_msg = await store.get_message(project.id, routine)
    assert routine_msg is not None
    assert [(e["state"], e["at"], e["detail"]) for e in routine_msg.events] == [
        ("queued", pytest.approx(t0), None),
        ("sending", pytest.approx(t0 + 1), "worker w1, attempt 1"),
        ("submitted", pytest.approx(t0 + 2), "provider id p-routine"),
        ("delivered", pytest.approx(t0 + 2), None)]
    assert await event_states(store, project.id, retried) == [
        "queued", "sending", "queued", "sending", "submitted", "delivered"]
    retried_msg = await store.get_message(project.id, retried)
    assert retried_msg is not None
    assert retried_msg.events[3]["detail"] == "worker w2, attempt 2"
    partial_msg = await store.get_message(project.id, partial)
    assert partial_msg is not None
    assert partial_msg.events[-1]["state"] == "submitted"
    assert "470: caption dropped" in partial_msg.events[-1]["detail"]
    assert [e["state"] for e in partial_msg.events].count("submitted") == 1
    # All three went to the provider, the one with a problem too: the caps count them.
    assert await store.sent_since(channel.id, t0) == 3
    assert sorted(query("SELECT message_id, state FROM message_events")) == sorted([
        (retried, "queued"), (retried, "sending"), (partial, "submitted"),
        (retried, "delivered")])



async def test_callback_before_outcome_keeps_the_provider_id(store: Store, make: Any) -> None:
    """A fast provider's callback can land before the worker records the send; the message
    moves on, and the late outcome still stores the provider id later callbacks look up."""
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    t0 = time.time()
    pushed = await queue(store, channel, 1, t0)
    mid = pushed.message_ids[0]
    claimed = await store.claim_messages(channel.id, "w", 10, t0 + 1, LEASE)
    assert await store.apply_status_updates(
        [StatusUpdate(state=State.DELIVERED, at=t0 + 2, message_id=mid)]) == 1
    await store.record_outcomes(
        "w", [SendResult.sent(m.id, "prov-early") for m in claimed], t0 + 3,
        RetryPolicy())
    message = await store.get_message(project.id, mid)
    assert message is not None
    assert (message.state, message.provider_id) == ("delivered", "prov-early")
    assert await store.apply_status_updates([StatusUpdate(
        state=State.READ, at=t0 + 4, channel_id=channel.id, provider_id="prov-early")]) == 1


async def test_retryable_outcome_requeues_with_backoff(
    store: Store, make: Any, query: Any
) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    t0 = time.time()
    pushed = await queue(store, channel, 1, t0)
    [mid] = pushed.message_ids
    before = await balance(store, project.id)
    policy = RetryPolicy(max_attempts=5, base_seconds=10.0, cap_seconds=600.0)
    await store.claim_messages(channel.id, "w", 10, t0 + 1, LEASE)
    now = t0 + 2
    await store.record_outcomes("w", [SendResult.retry(mid, "busy", "try later")],
                                now, policy)
    message = await store.get_message(project.id, mid)
    assert message is not None
    assert (message.state, message.error_code) == ("queued", "busy")
    assert [e["state"] for e in message.events] == ["queued", "sending", "queued"]
    assert "busy" in message.events[-1]["detail"]
    # First retry: base 10 s, half fixed half jittered → between 5 and 10 s from now.
    [(next_at,)] = query("SELECT next_attempt_at FROM messages WHERE id = ?", mid)
    assert now + 5 <= next_at <= now + 10
    assert await store.claim_messages(channel.id, "w", 10, now, LEASE) == []
    assert await store.claim_messages(channel.id, "w", 10, now + 4.9, LEASE) == []
    again = await store.claim_messages(channel.id, "w", 10, now + 10.01, LEASE)
    assert [(m.id, m.attempts, m.possible_resend) for m in again] == [(mid, 2, False)]
    assert await balance(store, project.id) == before   # nothing refunded on a retry


async def test_retry_after_is_honoured(store: Store, make: Any, query: Any) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    t0 = time.time()
    [mid] = (await queue(store, channel, 1, t0)).message_ids
    await store.claim_messages(channel.id, "w", 10, t0 + 1, LEASE)
    now = t0 + 2
    await store.record_outcomes("w", [SendResult.retry(mid, "429", retry_after=120.0)],
                                now, RetryPolicy(base_seconds=0.01))
    [(next_at,)] = query("SELECT next_attempt_at FROM messages WHERE id = ?", mid)
    assert next_at == pytest.approx(now + 120.0)
    assert await store.claim_messages(channel.id, "w", 10, now + 119, LEASE) == []
    assert len(await store.claim_messages(channel.id, "w", 10, now + 120.01, LEASE)) == 1


async def test_gives_up_after_max_attempts_and_refunds(store: Store, make: Any) -> None:
    project, _, _ = await make.project(credits="1")
    channel = await make.channel(project.id, price="0.005")
    t0 = time.time()
    pushed = await queue(store, channel, 2, t0)
    assert await balance(store, project.id) == parse_credits("1") - 2 * PRICE
    policy = RetryPolicy(max_attempts=3, base_seconds=0.0)
    now = t0 + 1
    for attempt in range(1, 4):
        claimed = await store.claim_messages(channel.id, "w", 10, now, LEASE)
        assert [(m.id, m.attempts) for m in claimed] == [
            (mid, attempt) for mid in pushed.message_ids]
        await store.record_outcomes(
            "w", [SendResult.retry(m.id, "timeout", "no answer") for m in claimed], now, policy)
        now += 1
        expected = "queued" if attempt < 3 else "refunded"
        assert await states(store, project.id, pushed.message_ids) == [expected] * 2
    assert await store.claim_messages(channel.id, "w", 10, now + 1000, LEASE) == []
    assert await balance(store, project.id) == parse_credits("1")
    message = await store.get_message(project.id, pushed.message_ids[0])
    assert message is not None
    assert (message.status, message.error_code, message.error_message) == (
        5, "timeout", "no answer")
    assert [e["state"] for e in message.events] == [
        "queued", "sending", "queued", "sending", "queued", "sending", "failed", "refunded"]
    assert "gave up after 3 attempts" in message.events[-2]["detail"]


async def test_permanent_error_refunds_at_once(store: Store, make: Any) -> None:
    project, _, _ = await make.project(credits="1")
    channel = await make.channel(project.id, price="0.005")
    t0 = time.time()
    pushed = await queue(store, channel, 3, t0)
    claimed = await store.claim_messages(channel.id, "w", 10, t0 + 1, LEASE)
    bad, good = claimed[0], claimed[1:]
    await store.record_outcomes("w", [
        SendResult.failed(bad.id, "invalid-number", "not on WhatsApp"),
        *[SendResult.sent(m.id, f"p{m.id}") for m in good]], t0 + 2,
        RetryPolicy())
    assert await states(store, project.id, pushed.message_ids) == [
        "refunded", "submitted", "submitted"]
    assert await balance(store, project.id) == parse_credits("1") - 2 * PRICE
    message = await store.get_message(project.id, bad.id)
    assert message is not None
    assert (message.status, message.error_code, message.error_message) == (
        5, "invalid-number", "not on WhatsApp")
    assert [e["state"] for e in message.events] == ["queued", "sending", "failed", "refunded"]
    push = await store.get_push(project.id, pushed.push_id)
    assert push is not None and push.counts == {"refunded": 1, "submitted": 2}


async def test_outcome_for_unclaimed_message_is_ignored(store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    t0 = time.time()
    [mid] = (await queue(store, channel, 1, t0)).message_ids
    await store.record_outcomes("w", [SendResult.failed(mid)], t0 + 1,
                                RetryPolicy())
    await store.record_outcomes("w", [SendResult.sent(mid, "x")], t0 + 1,
                                RetryPolicy())
    assert await states(store, project.id, [mid]) == ["queued"]
    assert await balance(store, project.id) == parse_credits("100") - PRICE


# --- status updates ---------------------------------------------------------------------------

async def submitted(store: Store, channel: ChannelSpec, count: int, t0: float) -> list[int]:
    pushed = await queue(store, channel, count, t0)
    claimed = await store.claim_messages(channel.id, "w", 100, t0 + 1, LEASE)
    await store.record_outcomes(
        "w", [SendResult.sent(m.id, f"prov-{m.id}") for m in claimed], t0 + 2,
        RetryPolicy())
    return pushed.message_ids


async def test_status_updates_only_move_forward(store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    t0 = time.time()
    [mid] = await submitted(store, channel, 1, t0)
    changed = await store.apply_status_updates([
        StatusUpdate(State.READ, t0 + 3, message_id=mid),
        StatusUpdate(State.DELIVERED, t0 + 4, message_id=mid),   # late, out of order
    ])
    assert changed == 1
    message = await store.get_message(project.id, mid)
    assert message is not None
    assert (message.state, message.status) == ("read", 3)
    events = message.events
    assert [e["state"] for e in events] == ["queued", "sending", "submitted", "read",
                                            "delivered"]
    assert events[-1]["detail"] and "ignored" in events[-1]["detail"]
    assert events[-2]["at"] == pytest.approx(t0 + 3)


async def test_status_updates_in_order_both_change(store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    t0 = time.time()
    [mid] = await submitted(store, channel, 1, t0)
    assert await store.apply_status_updates([
        StatusUpdate(State.DELIVERED, t0 + 3, message_id=mid),
        StatusUpdate(State.READ, t0 + 4, message_id=mid)]) == 2
    assert await states(store, project.id, [mid]) == ["read"]


async def test_status_update_by_provider_id_and_channel(store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    one = await make.channel(project.id, application=1)
    two = await make.channel(project.id, application=2)
    t0 = time.time()
    a, b = await submitted(store, one, 2, t0)
    # The same provider id on another channel names nothing.
    assert await store.apply_status_updates([
        StatusUpdate(State.DELIVERED, t0 + 3, channel_id=two.id, provider_id=f"prov-{a}"),
        StatusUpdate(State.DELIVERED, t0 + 3, channel_id=one.id, provider_id="unknown"),
    ]) == 0
    assert await store.apply_status_updates([
        StatusUpdate(State.DELIVERED, t0 + 3, channel_id=one.id, provider_id=f"prov-{a}"),
    ]) == 1
    assert await states(store, project.id, [a, b]) == ["delivered", "submitted"]


async def test_duplicate_updates_are_idempotent(store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    t0 = time.time()
    mids = await submitted(store, channel, 3, t0)
    updates = [StatusUpdate(State.DELIVERED, t0 + 3, message_id=m) for m in mids]
    assert await store.apply_status_updates(updates + updates) == 3
    assert await store.apply_status_updates(updates) == 0
    assert await states(store, project.id, mids) == ["delivered"] * 3
    first = await store.get_message(project.id, mids[0])
    assert first is not None
    push = await store.get_push(project.id, first.push_id)
    assert push is not None and push.counts == {"delivered": 3}


async def test_failure_after_delivery_is_ignored(store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    t0 = time.time()
    delivered, pending = await submitted(store, channel, 2, t0)
    await store.apply_status_updates([StatusUpdate(State.DELIVERED, t0 + 3,
                                                   message_id=delivered)])
    changed = await store.apply_status_updates([
        StatusUpdate(State.FAILED, t0 + 4, message_id=delivered, error_code="x"),
        StatusUpdate(State.FAILED, t0 + 4, message_id=pending, error_code="131026",
                     error_message="undeliverable"),
    ])
    assert changed == 1
    assert await states(store, project.id, [delivered, pending]) == ["delivered", "failed"]
    message = await store.get_message(project.id, pending)
    assert message is not None
    assert (message.status, message.error_code, message.error_message) == (
        2, "131026", "undeliverable")
    ignored = await store.get_message(project.id, delivered)
    assert ignored is not None and ignored.error_code is None
    assert ignored.events[-1]["state"] == "failed"
    assert "ignored" in ignored.events[-1]["detail"]


async def test_update_for_unknown_message_changes_nothing(store: Store, make: Any) -> None:
    assert await store.apply_status_updates([
        StatusUpdate(State.DELIVERED, time.time(), message_id=987_654)]) == 0
    assert await store.apply_status_updates([]) == 0


# --- expiry -----------------------------------------------------------------------------------

async def test_expire_due(store: Store, make: Any) -> None:
    project, _, _ = await make.project(credits="1")
    channel = await make.channel(project.id, price="0.005")
    t0 = time.time()
    soon = await queue(store, channel, 3, t0, tag="soon", expires_at=t0 + 100)
    later = await queue(store, channel, 2, t0, tag="later", expires_at=t0 + 1000)
    never = await queue(store, channel, 1, t0, tag="never", expires_at=None)
    sending = await queue(store, channel, 1, t0, tag="sending", priority=1,
                          expires_at=t0 + 100)
    # A message already sending, its lease live, does not expire (the channel may have it).
    [claimed] = await store.claim_messages(channel.id, "w", 1, t0 + 1, 1000.0)
    assert claimed.id == sending.message_ids[0]
    assert await balance(store, project.id) == parse_credits("1") - 7 * PRICE

    assert await store.expire_due(t0 + 50, 1000) == 0
    assert await store.expire_due(t0 + 500, 1000) == 3
    assert await states(store, project.id, soon.message_ids) == ["expired"] * 3
    assert await states(store, project.id, later.message_ids + never.message_ids) == (
        ["queued"] * 3)
    assert await states(store, project.id, sending.message_ids) == ["sending"]
    assert await balance(store, project.id) == parse_credits("1") - 4 * PRICE
    message = await store.get_message(project.id, soon.message_ids[0])
    assert message is not None
    assert message.status == 5
    assert [e["state"] for e in message.events] == ["queued", "expired"]
    assert await store.expire_due(t0 + 500, 1000) == 0   # nothing twice
    # Expired messages are never claimed.
    remaining = await store.claim_messages(channel.id, "w", 10, t0 + 20, LEASE)
    assert {m.id for m in remaining} == set(later.message_ids + never.message_ids)


async def test_a_message_in_flight_at_expiry_expires_when_it_comes_back(
        store: Store, make: Any, query: Any) -> None:
    """Validity is swept push by push (migration 0007): a push stays due while any of its
    messages is live, so one being sent at its expiry and retried later still expires; a
    push with nothing live left leaves the sweep."""
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    t0 = time.time()
    pushed = await queue(store, channel, 2, t0, expires_at=t0 + 100)
    done = await queue(store, channel, 1, t0, priority=1, expires_at=t0 + 100)
    claimed = await store.claim_messages(channel.id, "w", 2, t0 + 1, 1000.0)
    assert [m.id for m in claimed] == [done.message_ids[0], pushed.message_ids[0]]
    await store.record_outcomes("w", [SendResult.sent(done.message_ids[0], "p-done")], t0 + 2,
                                RetryPolicy())

    assert await store.expire_due(t0 + 200, 100) == 1   # the queued one; one is in flight
    assert await states(store, project.id, pushed.message_ids) == ["sending", "expired"]
    await store.record_outcomes("w", [SendResult.retry(pushed.message_ids[0], "503")],
                                t0 + 250, RetryPolicy())
    assert await states(store, project.id, pushed.message_ids) == ["queued", "expired"]
    assert await store.expire_due(t0 + 300, 100) == 1
    assert await states(store, project.id, pushed.message_ids) == ["expired", "expired"]
    assert await states(store, project.id, done.message_ids) == ["submitted"]
    assert query("SELECT count(*) FROM pushes WHERE expiry_due IS NOT NULL") == [(0,)]
    assert await store.expire_due(t0 + 400, 100) == 0


async def test_a_push_still_in_flight_at_expiry_does_not_hold_up_the_sweep(
        store: Store, make: Any) -> None:
    """A due push whose only live message is being sent is looked at again only
    EXPIRY_RECHECK_SECONDS later: a sweep of one push at a time reaches the next due push
    instead of reading the stuck one over and over."""
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    t0 = time.time()
    stuck = await queue(store, channel, 1, t0, tag="stuck", priority=1, expires_at=t0 + 10)
    behind = await queue(store, channel, 1, t0, tag="behind", expires_at=t0 + 20)
    [claimed] = await store.claim_messages(channel.id, "w", 1, t0 + 1, 1000.0)
    assert claimed.id == stuck.message_ids[0]
    assert await store.expire_due(t0 + 30, 1) == 0   # the stuck push, nothing to expire
    assert await store.expire_due(t0 + 31, 1) == 1   # then the one behind it
    assert await states(store, project.id, behind.message_ids) == ["expired"]
    assert await states(store, project.id, stuck.message_ids) == ["sending"]


async def test_a_queued_message_past_its_validity_is_never_claimed(
        store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    t0 = time.time()
    stale = await queue(store, channel, 2, t0, tag="stale", expires_at=t0 + 10)
    fresh = await queue(store, channel, 1, t0, tag="fresh", expires_at=t0 + 1000)
    assert await store.has_ready_messages(channel.id, t0 + 5)
    claimed = await store.claim_messages(channel.id, "w", 10, t0 + 20, LEASE)
    assert [m.id for m in claimed] == fresh.message_ids
    assert not await store.has_ready_messages(channel.id, t0 + 20)
    assert await states(store, project.id, stale.message_ids) == ["queued"] * 2
    assert await store.expire_due(t0 + 20, 100) == 2
    assert await states(store, project.id, stale.message_ids) == ["expired"] * 2


async def test_a_lease_that_ran_out_past_validity_is_expired_never_sent_again(
        store: Store, make: Any) -> None:
    """A worker stopped while sending: past the message's validity its lease running out
    does not make it a possible re-send; the sweep expires and refunds it, saying why."""
    project, _, _ = await make.project(credits="1", webhook_url="http://127.0.0.1:9/hook")
    channel = await make.channel(project.id)
    t0 = time.time()
    stale = await queue(store, channel, 2, t0, tag="stale", expires_at=t0 + 10)
    valid = await queue(store, channel, 1, t0, tag="valid", expires_at=t0 + 1000)
    assert len(await store.claim_messages(channel.id, "dead", 10, t0 + 1, 5.0)) == 3
    paid = await balance(store, project.id)

    # The lease ends at t0 + 6; at t0 + 20 only the one still valid goes out again.
    assert await store.has_ready_messages(channel.id, t0 + 20)
    again = await store.claim_messages(channel.id, "w", 10, t0 + 20, 5.0)
    assert [(m.id, m.possible_resend) for m in again] == [(valid.message_ids[0], True)]
    assert not await store.has_ready_messages(channel.id, t0 + 21)
    assert await store.claim_messages(channel.id, "w", 10, t0 + 21, 5.0) == []
    assert await states(store, project.id, stale.message_ids) == ["sending"] * 2

    assert await store.expire_due(t0 + 21, 100) == 2
    assert await states(store, project.id, stale.message_ids) == ["expired"] * 2
    assert await balance(store, project.id) == paid + 2 * PRICE
    message = await store.get_message(project.id, stale.message_ids[0])
    assert message is not None
    assert message.events[-1]["detail"] == (
        "validity period ended before its last send was confirmed; credit returned")
    reports = {str(item.report.message_id): report_payload(item.report)
               for batch in await store.claim_outbox("d", 100, t0 + 22, 30.0)
               for item in batch.items if item.report.state == "expired"}
    assert set(reports) == {str(mid) for mid in stale.message_ids}
    assert {r["error_message"] for r in reports.values()} == {
        "validity period ended before its last send was confirmed"}
    assert await store.claim_messages(channel.id, "w", 10, t0 + 22, 5.0) == []


async def test_expire_due_respects_limit(store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    t0 = time.time()
    pushed = await queue(store, channel, 5, t0, expires_at=t0 + 1)
    assert await store.expire_due(t0 + 2, 2) == 2
    assert await store.expire_due(t0 + 2, 10) == 3
    assert await states(store, project.id, pushed.message_ids) == ["expired"] * 5
    assert await balance(store, project.id) == parse_credits("100")


async def test_an_earlier_attempts_error_is_cleared_when_the_message_moves_on(
        store, make) -> None:
    """Errors belong to the attempt that had them: a retried message that then goes through,
    or a send with a problem that is then delivered, keeps the error in its history only. A
    failure keeps its error (refunded after failed brings none of its own)."""
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    t0 = time.time()
    retried, partial, failing = (await queue(store, channel, 3, t0)).message_ids
    await store.claim_messages(channel.id, "w", 10, t0 + 1, LEASE)
    await store.record_outcomes("w", [
        SendResult.retry(retried, "130429", "Rate limit hit"),
        SendResult.sent(partial, "p-partial", error_code="470", error_message="caption dropped"),
        SendResult.sent(failing, "p-failing"),
    ], t0 + 2, RetryPolicy(base_seconds=0.0))
    waiting = await store.get_message(project.id, retried)
    assert waiting is not None and (waiting.state, waiting.error_code) == (
        "queued", "130429")
    assert [m.id for m in await store.claim_messages(channel.id, "w", 10, t0 + 3, LEASE)] == [
        retried]
    await store.record_outcomes("w", [SendResult.sent(retried, "p-retried")],
                                t0 + 4, RetryPolicy())
    sent = await store.get_message(project.id, retried)
    assert sent is not None
    assert (sent.state, sent.error_code, sent.error_message) == ("submitted", None, None)

    await store.apply_status_updates([
        StatusUpdate(State.READ, t0 + 5, message_id=retried),
        StatusUpdate(State.DELIVERED, t0 + 5, message_id=partial),
        StatusUpdate(State.FAILED, t0 + 5, message_id=failing, error_code="131026",
                     error_message="undeliverable", refund=True),
    ])
    read = await store.get_message(project.id, retried)
    assert read is not None
    assert (read.state, read.error_code, read.error_message) == ("read", None, None)
    assert any(e["state"] == "queued" and "130429" in (e["detail"] or "")
               for e in read.events)
    delivered = await store.get_message(project.id, partial)
    assert delivered is not None
    assert (delivered.state, delivered.error_code) == ("delivered", None)
    assert any("470: caption dropped" in (e["detail"] or "") for e in delivered.events)
    refunded = await store.get_message(project.id, failing)
    assert refunded is not None
    assert (refunded.state, refunded.error_code) == ("refunded", "131026")
