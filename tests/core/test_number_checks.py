"""The number filter's pure decisions: when unanswered checks give up, and a check's state and
status as reported."""

from __future__ import annotations

from pushgate.core.checks import (
    CHECK_CHECKED,
    CHECK_GAVE_UP,
    CHECK_QUEUED,
    CHECK_WAITING,
    CHECKED_BY_GAVE_UP,
    check_state,
    check_status,
    plan_give_up,
)


def test_checks_give_up_after_the_timeout_from_their_push() -> None:
    give_up = plan_give_up(10_000.0, 3600)
    assert give_up is not None
    assert give_up.cutoff == 6_400.0
    assert give_up.checked_by == CHECKED_BY_GAVE_UP == "gave_up"
    assert "3600 s" in give_up.reason


def test_a_zero_timeout_waits_for_ever() -> None:
    assert plan_give_up(10_000.0, 0) is None


def test_a_checks_state_from_its_row() -> None:
    assert check_state(None, None, 0) == CHECK_QUEUED
    assert check_state(None, None, 2) == CHECK_WAITING
    assert check_state("waha", 5.0, 1) == CHECK_CHECKED
    assert check_state("gave_up", 5.0, 7) == CHECK_GAVE_UP
    assert check_state("gave_up", 5.0, 0) == CHECK_GAVE_UP     # a paused channel: never asked


def test_status_is_null_when_not_known() -> None:
    assert (check_status(True), check_status(False), check_status(None)) == (1, 0, None)
