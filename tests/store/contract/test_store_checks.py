"""Picky's number filter behind the ``Store`` interface: a filter push charged and queued in
one transaction, claims under a lease, answers written once and queued for the event webhook,
the webhook's retries. Runs on every backend."""

from __future__ import annotations

import time

import pytest

from pushgate.core.checks import NumberCheck, plan_checks, plan_give_up
from pushgate.core.push import Limits, decode_push
from pushgate.store.errors import InsufficientCredit

LEASE = 60.0


def filter_plan(channel, numbers):
    body = decode_push(b'{"action": 1, "data": [%s]}' % b", ".join(
        b'{"number": "%s"}' % n.encode() for n in numbers))
    return plan_checks(body, channel, Limits())


async def test_a_filter_is_charged_and_queued_in_one_transaction(store, make, query) -> None:
    project, _, _ = await make.project(credits="0.6")
    channel = await make.channel(project.id, config={"check_price": "0.25"})
    now = time.time()
    plan = filter_plan(channel, ["919876500001", "919876500002", "12", "919876500001"])
    assert [n for _, n in plan.accepted] == ["919876500001", "919876500002"]
    assert [r.code for r in plan.refused] == [201, 207]
    result = await store.accept_checks(project.id, channel, plan, now)
    assert result.balance_micro == 100_000
    assert result.message_ids == sorted(result.message_ids)
    assert query("SELECT number FROM number_checks ORDER BY id") == [
        ("919876500001",), ("919876500002",)]
    assert query("SELECT count(*) FROM messages")[0][0] == 0
    assert query("SELECT delta_micro FROM credit_ledger WHERE push_id = ?",
                 result.push_id) == [(-500_000,)]
    with pytest.raises(InsufficientCredit):
        await store.accept_checks(project.id, channel, plan, now)
    assert query("SELECT count(*) FROM number_checks")[0][0] == 2


async def test_claims_are_leased_and_answers_written_once(store, make) -> None:
    project, _, _ = await make.project(webhook_url="http://127.0.0.1:9/events")
    channel = await make.channel(project.id)
    other = await make.channel(project.id, application=3)
    now = time.time()
    result = await store.accept_checks(project.id, channel,
                                       filter_plan(channel, ["919876500001", "919876500002"]),
                                       now)
    await store.accept_checks(project.id, other, filter_plan(other, ["919876500003"]), now)
    claimed = await store.claim_checks([channel.id], 10, now, LEASE)
    assert [c.id for c in claimed] == result.message_ids
    assert {c.push_id for c in claimed} == {result.push_id}
    assert await store.claim_checks([channel.id], 10, now + 1, LEASE) == []
    # A worker that died with them: they come back after the lease.
    again = await store.claim_checks([channel.id], 10, now + LEASE + 1, LEASE)
    assert [c.id for c in again] == result.message_ids
    answers = [(claimed[0].id, NumberCheck("919876500001", False, "sandbox")),
               (claimed[1].id, NumberCheck("919876500002", True, "waha", "x@c.us"))]
    assert await store.record_checks(answers, now + 2) == 2
    assert await store.record_checks(answers, now + 3) == 0      # written once
    assert await store.claim_checks([channel.id], 10, now + 2 * LEASE + 2, LEASE) == []

    reports = await store.claim_check_reports(10, now + 2, LEASE)
    assert [(r.report.number, r.report.on_whatsapp, r.report.checked_by, r.report.chat_id)
            for r in reports] == [("919876500001", False, "sandbox", None),
                                  ("919876500002", True, "waha", "x@c.us")]
    assert {r.url for r in reports} == {"http://127.0.0.1:9/events"}
    assert reports[0].report.push_id == result.push_id
    assert await store.claim_check_reports(10, now + 3, LEASE) == []
    await store.retry_check_reports([reports[0].id], now + 3, [5.0])
    [retried] = await store.claim_check_reports(10, now + 9, LEASE)
    assert retried.id == reports[0].id and retried.attempts == 1
    await store.retry_check_reports([retried.id], now + 9, [5.0])   # schedule spent: gives up
    await store.complete_check_reports([reports[1].id])
    assert await store.claim_check_reports(10, now + 3 * LEASE, LEASE) == []


async def test_answers_of_a_project_without_event_webhook_are_kept_not_queued(
        store, make, query) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    now = time.time()
    await store.accept_checks(project.id, channel, filter_plan(channel, ["919876500004"]), now)
    [check] = await store.claim_checks([channel.id], 10, now, LEASE)
    assert await store.record_checks([(check.id, NumberCheck(check.number, True, "sandbox"))],
                                     now) == 1
    assert await store.claim_check_reports(10, now + 1, LEASE) == []
    assert query("SELECT on_whatsapp, checked_by FROM number_checks") == [(1, "sandbox")]


async def test_checks_past_the_timeout_give_up_unknown_and_are_reported(store, make,
                                                                        query) -> None:
    project, _, _ = await make.project(webhook_url="http://127.0.0.1:9/events")
    channel = await make.channel(project.id)
    now = time.time()
    old = await store.accept_checks(project.id, channel,
                                    filter_plan(channel, ["919876500001", "919876500002"]),
                                    now - 100)
    new = await store.accept_checks(project.id, channel, filter_plan(channel, ["919876500003"]),
                                    now)
    [first, second] = old.message_ids
    # One was answered before the timeout: it keeps its answer.
    assert await store.record_checks([(first, NumberCheck("919876500001", True, "waha"))],
                                     now - 50) == 1
    await store.claim_check_reports(10, now - 50, LEASE)   # taken by the deliverer
    # The other is held by a worker (a bridge that keeps failing): it gives up all the same.
    assert [c.id for c in await store.claim_checks([channel.id], 1, now - 10, LEASE)] == [
        second]
    give_up = plan_give_up(now, 60)
    assert give_up is not None
    assert await store.give_up_checks(give_up, now, 10) == 1
    assert await store.give_up_checks(give_up, now, 10) == 0
    # An answer arriving late is not written over the give-up.
    assert await store.record_checks([(second, NumberCheck("919876500002", True, "waha"))],
                                     now + 1) == 0
    # Only the check of the newer push is still due.
    assert [c.id for c in await store.claim_checks([channel.id], 10, now + 2 * LEASE,
                                                   LEASE)] == new.message_ids
    [report] = await store.claim_check_reports(10, now + 1, LEASE)
    assert (report.id, report.report.on_whatsapp, report.report.checked_by) == (
        second, None, "gave_up")
    assert report.report.reason == give_up.reason
    assert query("SELECT on_whatsapp, checked_by, reason FROM number_checks WHERE id = ?",
                 second) == [(None, "gave_up", give_up.reason)]
    assert query("SELECT checked_at, reason FROM number_checks WHERE id IN (?, ?) ORDER BY id",
                 first, new.message_ids[0]) == [(now - 50, None), (None, None)]


async def test_a_pushs_checks_are_read_in_chunks_answered_or_not(store, make) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    other, _, _ = await make.project()
    now = time.time()
    numbers = [f"91987650{i:04d}" for i in range(5)]
    result = await store.accept_checks(project.id, channel, filter_plan(channel, numbers), now)
    await store.record_checks([(result.message_ids[1], NumberCheck(numbers[1], False,
                                                                   "sandbox"))], now)
    chunks = [chunk async for chunk in store.iter_push_checks(project.id, result.push_id, 2)]
    assert [len(c) for c in chunks] == [2, 2, 1]
    checks = [c for chunk in chunks for c in chunk]
    assert [c.id for c in checks] == result.message_ids
    assert [c.number for c in checks] == numbers
    assert (checks[0].on_whatsapp, checks[0].checked_at, checks[0].attempts) == (None, None, 0)
    assert (checks[1].on_whatsapp, checks[1].checked_by, checks[1].checked_at) == (
        False, "sandbox", now)
    assert [c async for c in store.iter_push_checks(other.id, result.push_id)] == []
