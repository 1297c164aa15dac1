"""Connector traffic behind the ``Store`` interface: multi-part provider ids, status updates
that overtake their send, deferred sends, refunds on provider failure, inbound messages and
their forwarding, template data, send counts. Runs on every backend."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

from tests.store.contract.test_store_queue import LEASE, balance, event_states, queue, states

from pushgate.core.lifecycle import State
from pushgate.core.models import InboundMessage, SendResult, StatusUpdate
from pushgate.core.policy import RetryPolicy
from pushgate.core.push import Limits, decode_push, plan_push
from pushgate.store.base import Store
from pushgate.webhooks.payloads import inbound_payload

POLICY = RetryPolicy(max_attempts=3)


async def claim_one(store: Store, channel_id: int, now: float) -> int:
    [message] = await store.claim_messages(channel_id, "w", 1, now, LEASE)
    return message.id


async def test_message_of_several_parts_is_delivered_when_every_part_is(store, make) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id, application=3)
    now = time.time()
    await queue(store, channel, 1, now)
    mid = await claim_one(store, channel.id, now)
    # Three parts; the SMSC's id of each also in its other base (the same part).
    refs = [(0, "0A"), (0, "10"), (1, "0B"), (1, "11"), (2, "0C"), (2, "12")]
    await store.record_outcomes("w", [SendResult.sent(mid, "0A", provider_refs=refs)], now,
                                POLICY)

    def update(pid: str, state: State = State.DELIVERED) -> StatusUpdate:
        return StatusUpdate(state=state, at=now + 1, channel_id=channel.id, provider_id=pid)

    assert await store.apply_status_updates([update("10"), update("0B")]) == 0
    assert await states(store, project.id, [mid]) == ["submitted"]
    await store.apply_status_updates([update("0B")])          # a repeat changes nothing
    assert await states(store, project.id, [mid]) == ["submitted"]
    assert await store.apply_status_updates([update("12")]) == 1   # the last part, by alias
    assert await states(store, project.id, [mid]) == ["delivered"]
    message = await store.get_message(project.id, mid)
    assert message is not None
    assert "part 1 of 3: delivered" in json.dumps(dataclasses.asdict(message))


async def test_one_failed_part_fails_the_message(store, make) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id, application=3)
    now = time.time()
    await queue(store, channel, 1, now)
    mid = await claim_one(store, channel.id, now)
    await store.record_outcomes("w", [SendResult.sent(mid, "a",
                                                      provider_refs=[(0, "a"), (1, "b")])],
                                now, POLICY)
    await store.apply_status_updates([
        StatusUpdate(state=State.DELIVERED, at=now, channel_id=channel.id, provider_id="a"),
        StatusUpdate(state=State.FAILED, at=now, channel_id=channel.id, provider_id="b",
                     error_code="UNDELIV", error_message="err:001")])
    message = await store.get_message(project.id, mid)
    assert message is not None
    assert message.state == "failed"
    assert message.error_code == "UNDELIV"
    assert "part 2 of 2" in message.error_message


async def test_update_that_overtakes_its_send_is_kept_until_the_id_is_recorded(
        store, make, query) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    now = time.time()
    await queue(store, channel, 2, now)
    [first, second] = [m.id for m in await store.claim_messages(channel.id, "w", 2, now, LEASE)]
    early = [StatusUpdate(state=State.DELIVERED, at=now, channel_id=channel.id,
                          provider_id="early-1"),
             StatusUpdate(state=State.DELIVERED, at=now, channel_id=channel.id,
                          provider_id="part-b")]
    assert await store.apply_status_updates(early) == 0
    assert query("SELECT count(*) FROM early_updates")[0][0] == 2
    await store.record_outcomes("w", [
        SendResult.sent(first, "early-1"),
        SendResult.sent(second, "part-a", provider_refs=[(0, "part-a"), (1, "part-b")])],
        now, POLICY)
    assert await states(store, project.id, [first, second]) == ["delivered", "submitted"]
    assert query("SELECT count(*) FROM early_updates")[0][0] == 0
    await store.apply_status_updates([StatusUpdate(
        state=State.DELIVERED, at=now, channel_id=channel.id, provider_id="part-a")])
    assert await states(store, project.id, [second]) == ["delivered"]


async def test_early_updates_are_purged_after_a_day(store, make, query) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    await store.apply_status_updates([StatusUpdate(
        state=State.DELIVERED, at=time.time(), channel_id=channel.id, provider_id="never")])
    await store.expire_due(time.time() + 3600, 10)
    assert query("SELECT count(*) FROM early_updates")[0][0] == 1
    await store.expire_due(time.time() + 86_401, 10)
    assert query("SELECT count(*) FROM early_updates")[0][0] == 0


async def test_deferred_send_waits_without_counting_an_attempt(store, make) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    now = time.time()
    await queue(store, channel, 1, now)
    for _ in range(POLICY.max_attempts + 2):   # more waits than attempts allowed
        mid = await claim_one(store, channel.id, now)
        await store.record_outcomes("w", [SendResult.defer(mid, error_message="pair limit",
                                                           retry_after=5)], now, POLICY)
        assert await store.claim_messages(channel.id, "w", 1, now + 4, LEASE) == []
        now += 5
    message = await store.get_message(project.id, mid)
    assert message is not None
    assert message.state == "queued"
    assert "not an attempt" in message.events[-1]["detail"]
    [again] = await store.claim_messages(channel.id, "w", 1, now, LEASE)
    assert again.attempts == 1


async def test_failure_the_provider_did_not_bill_is_refunded(store, make) -> None:
    project, _, _ = await make.project(credits="1")
    channel = await make.channel(project.id, price="0.5")
    now = time.time()
    await queue(store, channel, 1, now)
    assert await balance(store, project.id) == 500_000
    mid = await claim_one(store, channel.id, now)
    await store.record_outcomes("w", [SendResult.sent(mid, "wamid.1")],
                                now, POLICY)
    await store.apply_status_updates([StatusUpdate(
        state=State.FAILED, at=now, channel_id=channel.id, provider_id="wamid.1",
        error_code="131026", error_message="Message undeliverable", refund=True)])
    assert await event_states(store, project.id, mid) == [
        "queued", "sending", "submitted", "failed", "refunded"]
    assert await balance(store, project.id) == 1_000_000
    # A repeat of the callback refunds nothing more.
    await store.apply_status_updates([StatusUpdate(
        state=State.FAILED, at=now, channel_id=channel.id, provider_id="wamid.1", refund=True)])
    assert await balance(store, project.id) == 1_000_000


async def test_inbound_messages_are_stored_once_and_forwarded(store, make) -> None:
    project, _, secret = await make.project()
    channel = await make.channel(project.id, application=8)
    now = time.time()
    inbound = InboundMessage(channel_id=channel.id, number="919876543210", text="hi there & co",
                             provider_id="wamid.in1", at=now, type=1, name="Asha",
                             raw={"id": "wamid.in1"})
    # Without an incoming webhook the message is kept, not forwarded.
    assert await store.record_inbound([inbound], now) == 1
    assert await store.claim_inbound(10, now, 30) == []
    await store.set_incoming_webhook(project.id, "http://127.0.0.1:9/in")
    again = InboundMessage(channel_id=channel.id, number="919876543210", text="second",
                           provider_id="wamid.in2", at=now)
    assert await store.record_inbound([inbound, again], now) == 1   # the repeat is ignored
    [item] = await store.claim_inbound(10, now, 30)
    assert (item.url, item.secret) == ("http://127.0.0.1:9/in", secret)
    assert inbound_payload(item.message)["number"] == "919876543210"
    assert inbound_payload(item.message)["message_in_raw"] == "second"
    assert inbound_payload(item.message)["application"] == "8"
    assert inbound_payload(item.message)["project-id"] == str(project.id)
    assert await store.claim_inbound(10, now + 1, 30) == []          # leased
    await store.retry_inbound([item.id], now, [60])
    assert await store.claim_inbound(10, now + 59, 30) == []
    [retried] = await store.claim_inbound(10, now + 61, 30)
    assert retried.attempts == 1
    await store.retry_inbound([item.id], now + 61, [60])             # schedule used up
    assert await store.claim_inbound(10, now + 10_000, 30) == []
    third = InboundMessage(channel_id=channel.id, number="919876543211", text="a+b c",
                           provider_id="wamid.in3", at=now)
    await store.record_inbound([third], now)
    [item] = await store.claim_inbound(10, now, 30)
    assert inbound_payload(item.message)["message-in"] == "a%2Bb+c"
    await store.complete_inbound([item.id])
    assert await store.claim_inbound(10, now + 10_000, 30) == []


async def test_template_data_reaches_the_claim(store, make) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id, application=101)
    body = decode_push(json.dumps({
        "template_id": "bill_due", "language": "en",
        "template_globalmessage": ["Asha", 120.5],
        "data": [{"number": "919876543210"},
                 {"number": "919876543211", "template_message": ["Ravi", "80"],
                  "language": "hi"}]}))
    plan = plan_push(body, channel, Limits())
    await store.accept_push(project.id, channel, plan, time.time(), None)
    claimed = await store.claim_messages(channel.id, "w", 10, time.time(), LEASE)
    assert [m.extra for m in claimed] == [
        {"template": {"name": "bill_due", "language": "en", "header": None,
                      "values": ["Asha", "120.5"]}},
        {"template": {"name": "bill_due", "language": "hi", "header": None,
                      "values": ["Ravi", "80"]}}]


async def test_sent_since_counts_what_went_to_the_provider(store, make) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    now = time.time()
    await queue(store, channel, 3, now)
    claimed = await store.claim_messages(channel.id, "w", 2, now, LEASE)
    await store.record_outcomes("w", [SendResult.sent(m.id, f"p{m.id}")
                                      for m in claimed], now, POLICY)
    assert await store.sent_since(channel.id, now - 1) == 2
    assert await store.sent_since(channel.id, now + 1) == 0


async def test_paused_reason_round_trips(store, make) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    updated = await store.update_channel(channel.id, paused=True, paused_reason="190: expired")
    assert updated is not None
    assert (updated.paused, updated.paused_reason) == (True, "190: expired")


async def test_an_ok_send_can_carry_a_partial_problem(store, make) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    now = time.time()
    await queue(store, channel, 1, now)
    mid = await claim_one(store, channel.id, now)
    await store.record_outcomes("w", [SendResult.sent(
        mid, "wamid.audio", error_code="text-lost",
        error_message="the text after the audio was refused (131026)")], now, POLICY)
    message = await store.get_message(project.id, mid)
    assert message is not None
    assert (message.state, message.error_code) == ("submitted", "text-lost")
    assert message.events[-1]["detail"] == (
        "provider id wamid.audio; text-lost: the text after the audio was refused (131026)")


async def test_concurrent_callbacks_are_each_told_what_their_own_updates_changed(
        store, make) -> None:
    """Provider callbacks arrive one small call each and many at once (the PostgreSQL store
    writes those that arrive together in one transaction). Each call is answered with its own
    changes; a repeat in another call changes nothing; a receipt for an unsent id is parked."""
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    now = time.time()
    count = 120
    await queue(store, channel, count, now)
    claimed = await store.claim_messages(channel.id, "w", count, now, LEASE)
    await store.record_outcomes("w", [SendResult.sent(m.id, f"wamid.{m.id}")
                                      for m in claimed], now, POLICY)

    def update(mid: int, state: State) -> list[StatusUpdate]:
        return [StatusUpdate(state=state, at=now + 1, channel_id=channel.id,
                             provider_id=f"wamid.{mid}")]

    calls = [update(m.id, State.DELIVERED) for m in claimed]
    calls += [update(m.id, State.DELIVERED) for m in claimed[:10]]       # repeats
    calls += [update(m.id, State.READ) for m in claimed[:5]]
    calls += [[StatusUpdate(state=State.DELIVERED, at=now, channel_id=channel.id,
                            provider_id="wamid.unknown")]]
    changed = await asyncio.gather(*(store.apply_status_updates(c) for c in calls))
    assert changed[:count] == [1] * count
    assert changed[count:count + 10] == [0] * 10
    assert changed[count + 10:count + 15] == [1] * 5
    assert changed[-1] == 0
    ids = [m.id for m in claimed]
    assert await states(store, project.id, ids) == ["read"] * 5 + ["delivered"] * (count - 5)
    assert await event_states(store, project.id, ids[7]) == [
        "queued", "sending", "submitted", "delivered", "delivered"]
