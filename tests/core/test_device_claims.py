"""What both stores decide alike about a phone's claims and reports (core/devices.py), and how
the parts of a multi-part send are merged (core/transitions.py)."""

from __future__ import annotations

from pushgate.core.devices import (
    DeviceClaim,
    DeviceMessage,
    DeviceQuota,
    ReportedMessage,
    handout_detail,
    leases_to_renew,
    ready_after_handout,
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


def test_the_furthest_state_of_each_part_wins() -> None:
    merged = merge_part_states([(1, 0, "submitted"), (1, 0, "delivered"), (1, 1, "submitted"),
                                (2, 0, "failed"), (2, 0, "submitted")])
    assert merged == {1: {0: State.DELIVERED, 1: State.SUBMITTED}, 2: {0: State.FAILED}}
