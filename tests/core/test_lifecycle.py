"""The lifecycle: which status updates move a message forward, and Picky's report codes."""

from __future__ import annotations

import itertools

import pytest

from pushgate.core.lifecycle import (
    FINAL_STATES,
    PICKY_STATUS,
    REFUNDED_STATES,
    State,
    advances,
)

Q, S, SUB, D, R = State.QUEUED, State.SENDING, State.SUBMITTED, State.DELIVERED, State.READ
F, REF, EXP, C = State.FAILED, State.REFUNDED, State.EXPIRED, State.CANCELLED
SCH = State.SCHEDULED

# Every (current, new) pair that moves a message forward; every other pair does not.
FORWARD = {
    # A scheduled message goes on as a queued one does, and to the queue itself.
    (SCH, Q), (SCH, S), (SCH, SUB), (SCH, D), (SCH, R), (SCH, F), (SCH, REF), (SCH, EXP),
    (SCH, C),
    (Q, S), (Q, SUB), (Q, D), (Q, R), (Q, F), (Q, REF), (Q, EXP), (Q, C),
    (S, SUB), (S, D), (S, R), (S, F), (S, REF), (S, EXP), (S, C),
    (SUB, D), (SUB, R), (SUB, F),
    (D, R),
    (F, REF),
}


@pytest.mark.parametrize(("current", "new"), list(itertools.product(State, State)),
                         ids=lambda s: s.value)
def test_advances_table(current: State, new: State) -> None:
    assert advances(current, new) is ((current, new) in FORWARD)


def test_forward_table_is_about_real_states() -> None:
    # Guards the table above against typos: each listed pair is between distinct states.
    assert all(a != b for a, b in FORWARD)
    assert len(FORWARD) == 29


@pytest.mark.parametrize(("late", "after"), [(D, R), (SUB, D), (SUB, R), (S, SUB), (Q, S)])
def test_late_updates_never_move_back(late: State, after: State) -> None:
    assert advances(after, late) is False


def test_failure_after_delivery_is_ignored() -> None:
    assert advances(D, F) is False
    assert advances(R, F) is False
    assert advances(SUB, F) is True


def test_side_exits_are_terminal() -> None:
    for final in (REF, EXP, C):
        assert not any(advances(final, new) for new in State)
    # A failed message can only be refunded.
    assert [new for new in State if advances(F, new)] == [REF]


def test_picky_status_codes() -> None:
    # The delivery-report codes the issue fixes: 0 pending, 4 submitted, 1 delivered,
    # 3 read, 2 failed, 5 refunded.
    assert PICKY_STATUS == {SCH: 0, Q: 0, S: 0, SUB: 4, D: 1, R: 3, F: 2, REF: 5, EXP: 5, C: 5}


def test_final_and_refunded_states() -> None:
    assert {D, R, F, REF, EXP, C} == FINAL_STATES
    assert {REF, EXP, C} == REFUNDED_STATES
    assert REFUNDED_STATES <= FINAL_STATES
    assert all(PICKY_STATUS[s] == 5 for s in REFUNDED_STATES)
