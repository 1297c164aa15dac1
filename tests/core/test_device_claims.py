"""What both stores decide alike about a phone's claims and reports (core/devices.py), and how
the parts of a multi-part send are merged (core/transitions.py)."""

from __future__ import annotations

from pushgate.core.devices import (
    DeviceClaim,
    DeviceMessage,
    DeviceQuota,
    HandedMessage,
    ReportedMessage,
    claim_start,
    full_windows,
    handout_detail,
    leases_to_renew,
    plan_handout,
    ready_after_handout,
    ready_when_windows_free,
    sorted_claim,
)
from pushgate.core.lifecycle import State
from pushgate.core.transitions import merge_part_states

QUOTA = DeviceQuota(per_minute=0, per_hour=0, per_day=0, per_fetch=3, max_in_flight=5,
                    lease_seconds=60.0, offline_after=120.0, sticky_seconds=600.0,
                    delays=(1.0, 2.0, 4.0))


def message(mid: int, priority: int = 0) -> DeviceMessage:
    return DeviceMessage(mid, "+491", "hi", priority, 0.0, None)


def test_a_claim_is_sent_priority_first_then_in_id_order() -> None:
    claim = sorted_claim(DeviceClaim([message(3), message(1), message(2, priority=1)], 3, 0.0))
    assert [m.id for m in claim.messages] == [2, 1, 3]


def test_a_hand_out_says_whether_it_may_be_a_resend() -> None:
    assert handout_detail("ph", 1, False) == "device ph, attempt 1"
    assert handout_detail("ph", 2, True) == (
        "device ph, attempt 2: possible re-send, previous lease expired")


def test_a_device_waits_the_pauses_of_what_it_was_just_handed() -> None:
    assert ready_after_handout(QUOTA, 100.0, 2) == 103.0
    assert ready_after_handout(QUOTA, 100.0, 0) == 100.0


def test_only_held_messages_the_phone_has_queued_keep_their_lease() -> None:
    known = {1: ReportedMessage("sending", True), 2: ReportedMessage("sending", False),
             3: ReportedMessage("sending", True), 4: ReportedMessage("sending", True)}
    reports = [(3, "Processed", 1.0), (1, "Pending", 1.0), (2, "Pending", 1.0),
               (4, "Sent", 1.0), (9, "Pending", 1.0), (1, "Processed", 2.0)]
    assert leases_to_renew(reports, known) == [1, 3]


def test_a_device_is_handed_nothing_new_while_resting_or_its_channel_is_stopped() -> None:
    pending = [message(1)]
    claim, open_now = claim_start(pending, ready_at=90.0, paused_until=95.0,
                                  channel_paused=False, now=100.0)
    assert open_now and claim.messages == pending and claim.new == 0 and claim.ready_at == 95.0
    assert not claim_start([], 90.0, 105.0, False, 100.0)[1]   # Android refused to send more
    assert not claim_start([], 110.0, 0.0, False, 100.0)[1]    # its pause after a hand-out
    assert claim_start([], 110.0, 0.0, False, 100.0)[0].ready_at == 110.0
    assert not claim_start([], 0.0, 0.0, True, 100.0)[1]       # channel paused
    assert not claim_start([], 0.0, 0.0, None, 100.0)[1]       # channel gone


def test_the_allowance_is_the_tightest_of_fetch_in_flight_and_each_window() -> None:
    limited = DeviceQuota(per_minute=2, per_hour=10, per_day=0, per_fetch=3, max_in_flight=5,
                          lease_seconds=60.0, offline_after=120.0, sticky_seconds=600.0,
                          delays=(0.0,) * 3)
    assert limited.allowance(0, [0, 0]) == 2
    assert limited.allowance(4, [0, 0]) == 1
    assert limited.allowance(0, [1, 9]) == 1
    assert limited.allowance(0, [3, 0]) == 0
    assert full_windows(limited, [1, 9]) == []
    assert full_windows(limited, [2, 12]) == [(60.0, 0), (3600.0, 2)]


def test_a_full_device_is_ready_when_its_last_full_window_frees_up() -> None:
    assert ready_when_windows_free(100.0, []) == 100.0
    assert ready_when_windows_free(100.0, [(60.0, 50.0), (3600.0, 20.0)]) == 3620.0
    # The hand-out counted was pruned meanwhile: that window does not hold the device back.
    assert ready_when_windows_free(100.0, [(60.0, None)]) == 100.0


def test_a_handout_records_each_message_once_and_answers_in_sending_order() -> None:
    claim = DeviceClaim([message(5)], 0, 50.0)
    resent = DeviceMessage(9, "+492", "again", 0, 0.0, None, possible_resend=True)
    handed = [HandedMessage(resent, 2), HandedMessage(message(7, priority=1), 1),
              HandedMessage(message(6), 1)]
    plan = plan_handout("ph", QUOTA, 100.0, claim, handed)
    assert plan.events == [(6, "device ph, attempt 1"), (7, "device ph, attempt 1"),
                           (9, "device ph, attempt 2: possible re-send, previous lease expired")]
    assert plan.message_ids == [6, 7, 9]
    assert plan.numbers == ["+491", "+492"]
    assert plan.ready_at == 107.0 and plan.claim.ready_at == 107.0
    assert plan.claim.new == 3
    assert [m.id for m in plan.claim.messages] == [7, 5, 6, 9]


def test_an_empty_handout_leaves_the_device_ready_time_alone() -> None:
    plan = plan_handout("ph", QUOTA, 100.0, DeviceClaim([message(5)], 0, 50.0), [])
    assert plan.events == [] and plan.message_ids == [] and plan.numbers == []
    assert plan.ready_at is None and plan.claim.ready_at == 50.0 and plan.claim.new == 0


def test_the_furthest_state_of_each_part_wins() -> None:
    merged = merge_part_states([(1, 0, "submitted"), (1, 0, "delivered"), (1, 1, "submitted"),
                                (2, 0, "failed"), (2, 0, "submitted")])
    assert merged == {1: {0: State.DELIVERED, 1: State.SUBMITTED}, 2: {0: State.FAILED}}
