"""The outcome planner: what a batch's results, a validity sweep and a cancellation write,
decided without a database (core/outcomes.py); both stores execute these plans."""

from __future__ import annotations

from pushgate.core.lifecycle import State
from pushgate.core.models import SendResult, StatusUpdate
from pushgate.core.outcomes import (
    EXPIRED_UNCONFIRMED,
    MIN_DEFER_SECONDS,
    REFUND_EXPIRED,
    REFUND_PROVIDER_FAILURE,
    REFUND_SEND_FAILED,
    VALIDITY_ENDED,
    Event,
    HeldMessage,
    Moved,
    Report,
    Settled,
    plan_cancellation,
    plan_expiry,
    plan_outcomes,
    plan_status_moves,
    plan_submission,
)
from pushgate.core.policy import RetryPolicy

NOW = 1_000.0
POLICY = RetryPolicy(max_attempts=3, base_seconds=2.0, cap_seconds=600.0)


def held(mid: int, attempts: int = 1, project: int = 7, credit: int = 5_000,
         hook: bool = True) -> HeldMessage:
    return HeldMessage(mid, project, credit, attempts, hook)


def test_a_clean_submission_keeps_its_steps_in_columns() -> None:
    sub = plan_submission(SendResult.sent(1, "p1"), NOW)
    assert (sub.state, sub.provider_id, sub.error_code, sub.delivered_at) == (
        "submitted", "p1", None, None)
    assert sub.clean and sub.events == () and sub.report_states == ("submitted",)


def test_a_send_answered_delivered_is_submitted_then_delivered() -> None:
    sub = plan_submission(SendResult.delivered(1, "p1"), NOW)
    assert (sub.state, sub.delivered_at) == ("delivered", NOW)
    assert sub.report_states == ("submitted", "delivered")


def test_a_submission_with_a_problem_gets_event_rows_with_it() -> None:
    sub = plan_submission(SendResult.delivered(1, "p1", error_code="partial",
                                               error_message="text lost"), NOW)
    assert not sub.clean and sub.delivered_at is None
    assert (sub.error_code, sub.error_message) == ("partial", "text lost")
    assert sub.events == (Event(1, "submitted", NOW, "provider id p1; partial: text lost"),
                          Event(1, "delivered", NOW, None))


def test_results_of_messages_no_longer_held_write_nothing() -> None:
    plan = plan_outcomes([SendResult.sent(1, "p"),
                          SendResult.failed(2, "x")], {}, NOW, POLICY)
    assert (plan.submitted, plan.failed, plan.events, plan.reports) == ([], [], [], [])
    assert not plan.refunds


def test_a_deferred_send_waits_without_counting_an_attempt() -> None:
    plan = plan_outcomes([SendResult.defer(1, "busy", "pair limit", retry_after=None)],
                         {1: held(1)}, NOW, POLICY)
    [requeue] = plan.deferred
    assert requeue.next_attempt_at == NOW + MIN_DEFER_SECONDS
    assert plan.retried == [] and plan.failed == []
    assert plan.events == [Event(1, "queued", NOW,
                                 "waiting 0.1s (not an attempt): busy: pair limit")]


def test_a_retryable_error_backs_off_while_attempts_remain() -> None:
    plan = plan_outcomes([SendResult.retry(1, "429", "slow down", retry_after=30.0)],
                         {1: held(1, attempts=2)}, NOW, POLICY)
    [requeue] = plan.retried
    assert requeue.next_attempt_at == NOW + 30.0   # the provider's wait is honoured
    assert plan.events == [Event(1, "queued", NOW, "retry in 30.0s after 429: slow down")]
    assert plan.reports == [] and not plan.refunds


def test_giving_up_fails_refunds_and_reports() -> None:
    plan = plan_outcomes([SendResult.retry(1, "500", "down")],
                         {1: held(1, attempts=3)}, NOW, POLICY)
    assert [f.message_id for f in plan.failed] == [1]
    assert plan.events == [
        Event(1, "failed", NOW, "gave up after 3 attempts; last 500: down"),
        Event(1, "refunded", NOW, "5000 micro-credits returned")]
    assert dict(plan.refunds) == {7: 5_000} and plan.refund_reason == REFUND_SEND_FAILED
    assert plan.reports == [Report(7, 1, "refunded", NOW, "500", "down")]


def test_a_permanent_error_refunds_at_once_and_reports_only_with_a_webhook() -> None:
    plan = plan_outcomes([SendResult.failed(1, "400"),
                          SendResult.failed(2, "400")],
                         {1: held(1), 2: held(2, project=8, credit=10, hook=False)}, NOW, POLICY)
    assert [e.detail for e in plan.events if e.state == "failed"] == ["400:", "400:"]
    assert dict(plan.refunds) == {7: 5_000, 8: 10}
    assert [r.message_id for r in plan.reports] == [1]


def test_events_and_reports_follow_the_results_order() -> None:
    plan = plan_outcomes([SendResult.failed(2, "x"),
                          SendResult.sent(1, "p", error_code="w")],
                         {1: held(1), 2: held(2)}, NOW, POLICY)
    assert [(e.message_id, e.state) for e in plan.events] == [
        (2, "failed"), (2, "refunded"), (1, "submitted")]
    assert [(r.message_id, r.state) for r in plan.reports] == [(2, "refunded"), (1, "submitted")]


def test_expiry_refunds_each_message_and_says_why() -> None:
    plan = plan_expiry([Settled(1, 7, 100, VALIDITY_ENDED, True),
                        Settled(2, 8, 50, EXPIRED_UNCONFIRMED, False)], NOW)
    assert plan.events == [Event(1, "expired", NOW, f"{VALIDITY_ENDED}; credit returned"),
                           Event(2, "expired", NOW, f"{EXPIRED_UNCONFIRMED}; credit returned")]
    assert plan.reports == [Report(7, 1, "expired", NOW, None, VALIDITY_ENDED)]
    assert dict(plan.refunds) == {7: 100, 8: 50} and plan.refund_reason == REFUND_EXPIRED


def test_cancellation_refunds_in_id_order_with_the_reason() -> None:
    plan = plan_cancellation([Settled(3, 7, 20, "channel removed", True),
                              Settled(1, 7, 30, "channel removed", True)], NOW,
                             "channel removed")
    assert [e.message_id for e in plan.events] == [1, 3]
    assert plan.events[0].detail == "channel removed; 30 micro-credits returned"
    assert dict(plan.refunds) == {7: 50}
    assert plan.refund_reason == "refund: channel removed"
    assert [(r.message_id, r.error_message) for r in plan.reports] == [
        (1, "channel removed"), (3, "channel removed")]


def test_status_moves_refund_a_refunded_message_and_report_with_a_webhook() -> None:
    moves = [(1, StatusUpdate(channel_id=1, provider_id="p", state=State.FAILED, at=5.0,
                              error_code="30", error_message="bad number")),
             (1, StatusUpdate(channel_id=1, provider_id="p", state=State.REFUNDED, at=5.0)),
             (2, StatusUpdate(channel_id=1, provider_id="q", state=State.DELIVERED, at=6.0))]
    plan = plan_status_moves(moves, {1: Moved(7, 500, True), 2: Moved(8, 100, False)})
    assert dict(plan.refunds) == {7: 500} and plan.refund_reason == REFUND_PROVIDER_FAILURE
    assert plan.reports == [Report(7, 1, "failed", 5.0, "30", "bad number"),
                            Report(7, 1, "refunded", 5.0, None, None)]
