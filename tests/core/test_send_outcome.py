"""``Outcome`` and the constructors of ``SendResult``: one outcome per result, and only the
fields that outcome has."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from pushgate.core.models import Outcome, SendResult


def test_each_constructor_gives_its_outcome() -> None:
    assert SendResult.sent(1, "p").kind is Outcome.SENT
    assert SendResult.delivered(1, "p").kind is Outcome.DELIVERED
    assert SendResult.retry(1, "503", "busy").kind is Outcome.RETRY
    assert SendResult.failed(1, "21211", "invalid number").kind is Outcome.FAILED
    assert SendResult.defer(1, "pair-limit", "wait").kind is Outcome.DEFER
    assert SendResult.pause(1, "401", "token refused").kind is Outcome.PAUSE_CHANNEL


def test_sent_keeps_its_ids_and_a_part_problem() -> None:
    result = SendResult.sent(7, "m-1", provider_refs=[(0, "m-1"), (1, "m-2")],
                             error_code="text-lost", error_message="the text was refused")
    assert (result.message_id, result.provider_id) == (7, "m-1")
    assert result.provider_refs == [(0, "m-1"), (1, "m-2")]
    assert (result.error_code, result.error_message) == ("text-lost", "the text was refused")
    assert result.retry_after is None


def test_sent_without_an_id_has_no_refs() -> None:
    result = SendResult.sent(7)
    assert (result.provider_id, result.provider_refs) == (None, [])


def test_delivered_keeps_its_ids() -> None:
    result = SendResult.delivered(3, "sandbox-3", provider_refs=[(0, "sandbox-3")])
    assert (result.provider_id, result.provider_refs) == ("sandbox-3", [(0, "sandbox-3")])
    assert result.error_code is None


@pytest.mark.parametrize("make", [SendResult.retry, SendResult.defer, SendResult.pause])
def test_waiting_outcomes_keep_the_wait(make: Callable[..., SendResult]) -> None:
    result = make(4, "429", "slow down", retry_after=30.0)
    assert (result.error_code, result.error_message, result.retry_after) == (
        "429", "slow down", 30.0)
    assert (result.provider_id, result.provider_refs) == (None, [])


def test_failed_has_no_wait() -> None:
    result = SendResult.failed(4, "400", "bad request")
    assert (result.error_code, result.error_message, result.retry_after) == (
        "400", "bad request", None)


def test_went_out_and_waits() -> None:
    assert {o for o in Outcome if o.went_out} == {Outcome.SENT, Outcome.DELIVERED}
    assert {o for o in Outcome if o.waits} == {Outcome.DEFER, Outcome.PAUSE_CHANNEL}
    # RETRY and FAILED neither went out nor wait: the planner counts their attempt.
    assert not any(o.went_out and o.waits for o in Outcome)


def test_a_contradictory_result_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="no provider ids"):
        SendResult(1, Outcome.FAILED, provider_id="p")
    with pytest.raises(ValueError, match="no provider ids"):
        SendResult(1, Outcome.DEFER, provider_refs=[(0, "p")])
    with pytest.raises(ValueError, match="no retry_after"):
        SendResult(1, Outcome.SENT, provider_id="p", retry_after=5.0)


def test_a_result_is_not_changed_after_it_is_made() -> None:
    result = SendResult.retry(1, "503", "busy")
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.kind = Outcome.SENT  # type: ignore[misc]
