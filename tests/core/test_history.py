"""A message's history: stored event rows with the routine steps (columns) put back."""

from __future__ import annotations

from pushgate.core.history import RoutineSteps, message_history

NONE = RoutineSteps(created_at=10.0, first_claim_at=None, first_claim_by=None,
                    submitted_at=None, provider_id=None, delivered_at=None)


def states(events: list[dict]) -> list[tuple[str, float]]:
    return [(e["state"], e["at"]) for e in events]


def test_a_queued_message_is_only_queued() -> None:
    assert message_history(NONE, []) == [{"state": "queued", "at": 10.0, "detail": None}]


def test_the_routine_steps_read_as_events() -> None:
    steps = RoutineSteps(created_at=10.0, first_claim_at=11.0, first_claim_by="w1",
                         submitted_at=12.0, provider_id="wamid.1", delivered_at=12.0)
    events = message_history(steps, [])
    assert states(events) == [("queued", 10.0), ("sending", 11.0), ("submitted", 12.0),
                              ("delivered", 12.0)]
    assert events[1]["detail"] == "worker w1, attempt 1"
    assert events[2]["detail"] == "provider id wamid.1"


def test_retries_come_between_the_first_claim_and_the_submission() -> None:
    steps = RoutineSteps(created_at=10.0, first_claim_at=11.0, first_claim_by="w1",
                         submitted_at=20.0, provider_id="p", delivered_at=None)
    stored = [("queued", 11.5, "retry in 5.0s after 503: busy"),
              ("sending", 16.5, "worker w2, attempt 2"),
              ("read", 25.0, None)]
    assert [e["state"] for e in message_history(steps, stored)] == [
        "queued", "sending", "queued", "sending", "submitted", "read"]


def test_a_receipt_stamped_before_the_submission_still_follows_it() -> None:
    # Providers stamp receipts with their own clock, often in whole seconds.
    steps = RoutineSteps(created_at=10.0, first_claim_at=10.2, first_claim_by="w",
                         submitted_at=10.7, provider_id="p", delivered_at=None)
    events = message_history(steps, [("delivered", 10.0, None)])
    assert states(events) == [("queued", 10.0), ("sending", 10.2), ("submitted", 10.7),
                              ("delivered", 10.0)]


def test_a_message_claimed_only_by_a_phone_keeps_its_rows_in_order() -> None:
    stored = [("sending", 11.0, "device d1"), ("submitted", 12.0, "sent by d1")]
    assert [e["state"] for e in message_history(NONE, stored)] == [
        "queued", "sending", "submitted"]


def test_a_submission_kept_as_a_row_too_shows_once() -> None:
    # A send with a problem to report: its column for the caps, its row for the problem.
    steps = RoutineSteps(created_at=10.0, first_claim_at=11.0, first_claim_by="w",
                         submitted_at=12.0, provider_id="p", delivered_at=None)
    events = message_history(steps, [("submitted", 12.0, "provider id p; 470: caption lost")])
    assert [(e["state"], e["detail"]) for e in events][-1] == (
        "submitted", "provider id p; 470: caption lost")
    assert [e["state"] for e in events].count("submitted") == 1


def test_a_scheduled_message_waits_then_is_queued_at_its_send_at() -> None:
    waiting = RoutineSteps(created_at=10.0, first_claim_at=None, first_claim_by=None,
                           submitted_at=None, provider_id=None, delivered_at=None,
                           send_at=100.0)
    assert states(message_history(waiting, [])) == [("scheduled", 10.0)]
    assert states(message_history(waiting, [("cancelled", 20.0, "push cancelled")])) == [
        ("scheduled", 10.0), ("cancelled", 20.0)]
    sent = RoutineSteps(created_at=10.0, first_claim_at=100.5, first_claim_by="w1",
                        submitted_at=101.0, provider_id="p1", delivered_at=None,
                        send_at=100.0)
    assert states(message_history(sent, [])) == [("scheduled", 10.0), ("queued", 100.0),
                                                 ("sending", 100.5), ("submitted", 101.0)]
