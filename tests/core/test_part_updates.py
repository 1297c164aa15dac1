"""Multi-part sends: a message is delivered when every part is, failed when one part fails."""

from __future__ import annotations

from pushgate.core.lifecycle import State
from pushgate.core.models import StatusUpdate
from pushgate.core.transitions import resolve_part_updates, walk_status_updates

CH = 5


def u(pid: str, state: State = State.DELIVERED, **kw: object) -> StatusUpdate:
    return StatusUpdate(state=state, at=1.0, channel_id=CH, provider_id=pid, **kw)  # type: ignore[arg-type]


REFS = {(CH, "a"): (10, 0), (CH, "a-dec"): (10, 0), (CH, "b"): (10, 1)}


def test_delivered_only_when_every_part_is() -> None:
    parts = {10: {0: State.SUBMITTED, 1: State.SUBMITTED}}
    out, changes, events = resolve_part_updates([u("a")], REFS, parts)
    assert out == [] and changes == [(10, 0, State.DELIVERED)]
    assert events == [(10, "delivered", 1.0, "part 1 of 2: delivered")]
    out, changes, _ = resolve_part_updates([u("b")], REFS, parts)
    assert [(x.message_id, x.state) for x in out] == [(10, State.DELIVERED)]


def test_an_alias_counts_as_its_part_and_repeats_change_nothing() -> None:
    parts = {10: {0: State.SUBMITTED, 1: State.SUBMITTED}}
    resolve_part_updates([u("a")], REFS, parts)
    out, changes, _ = resolve_part_updates([u("a-dec")], REFS, parts)
    assert out == [] and changes == []


def test_read_needs_every_part_read_else_delivered() -> None:
    parts = {10: {0: State.SUBMITTED, 1: State.SUBMITTED}}
    out, _, _ = resolve_part_updates([u("a", State.READ), u("b")], REFS, parts)
    assert [x.state for x in out] == [State.DELIVERED]


def test_one_failed_part_fails_the_message_with_its_code() -> None:
    parts = {10: {0: State.SUBMITTED, 1: State.SUBMITTED}}
    out, _, _ = resolve_part_updates([u("b", State.FAILED, error_code="UNDELIV")], REFS, parts)
    [failed] = out
    assert (failed.message_id, failed.state, failed.error_code) == (10, State.FAILED, "UNDELIV")
    assert failed.error_message == "part 2 of 2: failed"


def test_updates_of_single_sends_pass_through() -> None:
    other = u("zzz")
    out, _, _ = resolve_part_updates([other], REFS, {})
    assert out == [other]


def test_refund_flag_adds_the_refund_move() -> None:
    moves, events = walk_status_updates(
        [StatusUpdate(state=State.FAILED, at=2.0, message_id=1, refund=True)],
        {1: State.SUBMITTED}, lambda x: x.message_id)
    assert [m[1].state for m in moves] == [State.FAILED, State.REFUNDED]
    assert [e[1] for e in events] == ["failed", "refunded"]
