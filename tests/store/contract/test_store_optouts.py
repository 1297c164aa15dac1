"""Opt-outs behind the ``Store`` interface: the list, the accept path refusing opted-out
numbers in place inside its transaction, users' STOP / START applied when their message is
recorded, the event rows and their retries. Runs on every backend."""

from __future__ import annotations

import time

import pytest

from pushgate.core.errors import Code
from pushgate.core.models import InboundMessage
from pushgate.core.optouts import Action, KeywordSettings, without_opted_out
from pushgate.core.pricing import parse_credits
from pushgate.core.push import Limits, decode_push, plan_push
from pushgate.store.errors import AllOptedOut

PRICE = parse_credits("0.005")


def push_plan(channel, numbers):
    body = decode_push(b'{"globalmessage": "hi", "data": [%s]}' % b", ".join(
        b'{"number": "%s"}' % n.encode() for n in numbers))
    return plan_push(body, channel, Limits())


async def test_the_list_adds_once_removes_and_pages_in_number_order(store, make) -> None:
    project, _, _ = await make.project()
    other, _, _ = await make.project()
    now = time.time()
    numbers = [f"9198765000{i:02d}" for i in range(12)]
    assert await store.add_optouts(project.id, numbers[::-1], now, "api") == 12
    assert await store.add_optouts(project.id, numbers[:3], now, "cli") == 0
    assert await store.add_optouts(other.id, numbers[:1], now, "cli") == 1
    assert await store.count_optouts(project.id) == 12
    first = await store.list_optouts(project.id, "", 5)
    assert [o.number for o in first] == numbers[:5]
    assert first[0].source == "api"
    rest = await store.list_optouts(project.id, first[-1].number, 100)
    assert [o.number for o in rest] == numbers[5:]
    assert await store.remove_optouts(project.id, [numbers[0], "919999999999"]) == 1
    assert await store.count_optouts(project.id) == 11
    assert await store.count_optouts(other.id) == 1


async def test_an_accept_refuses_opted_out_entries_in_place_and_charges_the_rest(
        store, make, query) -> None:
    project, _, _ = await make.project(credits="1")
    channel = await make.channel(project.id)
    numbers = ["919876500001", "919876500002", "919876500003"]
    await store.add_optouts(project.id, [numbers[1]], time.time(), "api")
    plan = push_plan(channel, numbers)
    result = await store.accept_push(project.id, channel, plan, time.time(), None)
    assert result.opted_out == frozenset({numbers[1]})
    assert len(result.message_ids) == 2
    assert result.balance_micro == parse_credits("1") - 2 * PRICE
    shown = without_opted_out(plan, result.opted_out)
    assert [(r.index, r.code) for r in shown.refused] == [(1, Code.OPTED_OUT)]
    assert shown.credit_total == 2 * PRICE
    assert query("SELECT number FROM messages ORDER BY id") == [(numbers[0],), (numbers[2],)]
    assert query("SELECT accepted, credit_micro FROM pushes") == [(2, 2 * PRICE)]
    assert query("SELECT delta_micro FROM credit_ledger WHERE push_id = ?",
                 result.push_id) == [(-2 * PRICE,)]


async def test_a_push_only_to_opted_out_numbers_writes_nothing(store, make, query) -> None:
    project, _, _ = await make.project(credits="1")
    channel = await make.channel(project.id)
    await store.add_optouts(project.id, ["919876500001"], time.time(), "api")
    with pytest.raises(AllOptedOut) as caught:
        await store.accept_push(project.id, channel, push_plan(channel, ["919876500001"]),
                                time.time(), None)
    assert caught.value.numbers == frozenset({"919876500001"})
    assert query("SELECT count(*) FROM pushes")[0][0] == 0
    project_after = await store.get_project(project.id)
    assert project_after is not None and project_after.balance_micro == parse_credits("1")


async def test_opt_outs_are_per_project_and_a_large_push_is_checked_whole(store, make) -> None:
    project, _, _ = await make.project(credits="1000")
    other, _, _ = await make.project(credits="1000")
    channel = await make.channel(project.id)
    other_channel = await make.channel(other.id)
    numbers = [f"9198765{i:05d}" for i in range(12_000)]
    opted = numbers[1::997] + [numbers[-1]]
    await store.add_optouts(project.id, opted + [f"9198766{i:05d}" for i in range(3000)],
                            time.time(), "api")
    plan = push_plan(channel, numbers[:9_999] + numbers[-1:])
    result = await store.accept_push(project.id, channel, plan, time.time(), None)
    expected = {n for n in opted if n in set(plan_numbers(plan))}
    assert result.opted_out == expected
    assert len(result.message_ids) == 10_000 - len(expected)
    assert numbers[-1] in expected
    clean = await store.accept_push(other.id, other_channel, push_plan(other_channel, opted),
                                    time.time(), None)
    assert clean.opted_out == frozenset() and len(clean.message_ids) == len(opted)


def plan_numbers(plan):
    return [row[1] for row in plan.accepted]


async def test_a_reply_to_an_opted_out_number_goes_only_as_a_confirmation(store, make) -> None:
    project, _, _ = await make.project(credits="1")
    channel = await make.channel(project.id)
    number = "919876500001"
    await store.add_optouts(project.id, [number], time.time(), "keyword")
    plan = push_plan(channel, [number])
    now = time.time()
    with pytest.raises(AllOptedOut):
        await store.accept_reply(project.id, channel, plan, number, now, None, now)
    confirmed = await store.accept_reply(project.id, channel, plan, number, now, None, now,
                                         confirmation=True)
    assert confirmed is not None and len(confirmed.message_ids) == 1


def user_writes(channel_id, text, provider_id, number="+91 98765 00001"):
    return InboundMessage(channel_id=channel_id, number=number, text=text,
                          provider_id=provider_id, at=time.time())


async def test_stop_and_start_keywords_opt_out_and_back_in_with_events(store, make) -> None:
    project, _, secret = await make.project(webhook_url="https://example.com/events")
    channel = await make.channel(project.id)
    await store.set_keyword_settings(project.id, KeywordSettings(
        stop=("STOP", "ARRET"), start=("START",), stop_reply="You are out.", start_reply=None))
    now = time.time()
    assert await store.record_inbound([user_writes(channel.id, "  arrêt ", "m0"),
                                       user_writes(channel.id, " arret\n", "m1")], now) == 2
    assert [o.number for o in await store.list_optouts(project.id, "", 10)] == ["919876500001"]
    # The same callback again is not a second keyword.
    assert await store.record_inbound([user_writes(channel.id, "arret", "m1")], now) == 0
    assert await store.record_inbound([user_writes(channel.id, "please stop", "m2"),
                                       user_writes(channel.id, "Start", "m3")], now) == 2
    assert await store.count_optouts(project.id) == 0
    events = await store.claim_optout_events(10, now + 1, 60)
    assert [(e.action, e.keyword, e.number) for e in events] == [
        (Action.STOP, "ARRET", "919876500001"), (Action.START, "START", "919876500001")]
    assert events[0].reply == "You are out." and events[1].reply is None
    assert {(e.webhook_url, e.webhook_secret, e.attempts) for e in events} == {
        ("https://example.com/events", secret, 0)}
    # Claimed: leased, not claimed again until the lease ends.
    assert await store.claim_optout_events(10, now + 2, 60) == []
    await store.retry_optout_events([events[0].id], now + 3, [10.0])
    await store.complete_optout_events([events[1].id])
    again = await store.claim_optout_events(10, now + 14, 60)
    assert [(e.id, e.attempts) for e in again] == [(events[0].id, 1)]
    await store.retry_optout_events([events[0].id], now + 20, [10.0])
    assert await store.claim_optout_events(10, now + 1000, 60) == []


async def test_default_keywords_and_no_event_without_webhook_or_confirmation(
        store, make, query) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    assert await store.keyword_settings(project.id) == KeywordSettings()
    now = time.time()
    await store.record_inbound([user_writes(channel.id, "UNSUBSCRIBE", "m0")], now)
    assert await store.count_optouts(project.id) == 1
    assert query("SELECT action, forward_at FROM optout_events") == [("stop", None)]
    assert await store.claim_optout_events(10, now + 1, 60) == []


async def test_a_keyed_push_with_opted_out_entries_replays_with_the_same_refusals(
        store, make) -> None:
    project, _, _ = await make.project(credits="1")
    channel = await make.channel(project.id)
    numbers = ["919876500011", "919876500012", "919876500013"]
    await store.add_optouts(project.id, [numbers[0]], time.time(), "api")
    plan = push_plan(channel, numbers)
    first = await store.accept_push(project.id, channel, plan, time.time(), None,
                                    idempotency_key="campaign-1")
    # The list changes between the two: the replay answers as the push was accepted.
    await store.remove_optouts(project.id, [numbers[0]])
    again = await store.accept_push(project.id, channel, plan, time.time(), None,
                                    idempotency_key="campaign-1")
    assert again.replayed and not first.replayed
    assert again.push_id == first.push_id
    assert again.message_ids == first.message_ids
    assert again.opted_out == first.opted_out == frozenset({numbers[0]})
    assert again.balance_micro == first.balance_micro == parse_credits("1") - 2 * PRICE
