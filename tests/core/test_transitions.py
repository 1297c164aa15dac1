"""The status-update walk both stores share: forward moves only, one event per update."""

from __future__ import annotations

from pushgate.core.lifecycle import State
from pushgate.core.models import StatusUpdate
from pushgate.core.policy import RetryPolicy
from pushgate.core.transitions import StateChange, net_state_changes, walk_status_updates


def by_id(update: StatusUpdate) -> int | None:
    return update.message_id


def test_updates_apply_in_order_and_never_move_back() -> None:
    states = {1: State.SUBMITTED, 2: State.SENDING}
    updates = [
        StatusUpdate(State.READ, 10.0, message_id=1),
        StatusUpdate(State.DELIVERED, 11.0, message_id=1),          # late: recorded, ignored
        StatusUpdate(State.FAILED, 12.0, message_id=2, error_code="131026",
                     error_message="undeliverable"),
        StatusUpdate(State.DELIVERED, 13.0, message_id=3),          # unknown message: dropped
        StatusUpdate(State.READ, 14.0, message_id=1),               # duplicate: ignored
    ]
    moves, events = walk_status_updates(updates, states, by_id)
    assert [(mid, u.state) for mid, u in moves] == [(1, State.READ), (2, State.FAILED)]
    assert states == {1: State.READ, 2: State.FAILED}
    assert events == [
        (1, "read", 10.0, None),
        (1, "delivered", 11.0, "ignored: message already read"),
        (2, "failed", 12.0, "131026 undeliverable"),
        (1, "read", 14.0, "ignored: message already read"),
    ]


def test_retry_delay_grows_is_capped_and_honours_retry_after() -> None:
    policy = RetryPolicy(max_attempts=10, base_seconds=2.0, cap_seconds=30.0)
    for attempts, full in [(1, 2.0), (2, 4.0), (3, 8.0), (6, 30.0), (9, 30.0)]:
        delays = [policy.delay(attempts) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays), (attempts, min(delays), max(delays))
        assert max(delays) - min(delays) > 0   # jittered
    assert policy.delay(1, retry_after=60.0) == 60.0


def _move(mid: int, state: State, at: float, code: str | None = None,
          text: str | None = None) -> tuple[int, StatusUpdate]:
    return mid, StatusUpdate(state=state, at=at, message_id=mid, error_code=code,
                             error_message=text)


def test_net_change_of_failed_then_refunded_keeps_the_failure_error() -> None:
    changes = net_state_changes([_move(1, State.FAILED, 1.0, "131026", "undeliverable"),
                                 _move(1, State.REFUNDED, 2.0, None, "credit returned")])
    assert changes == [StateChange(1, "refunded", "131026", "credit returned", 2.0, True)]


def test_net_change_of_a_failure_without_an_error_keeps_the_stored_one() -> None:
    [change] = net_state_changes([_move(3, State.FAILED, 5.0)])
    assert (change.error_code, change.error_message, change.keep_stored_error) == (
        None, None, True)


def test_net_change_moving_on_sheds_an_earlier_error() -> None:
    changes = net_state_changes([_move(2, State.DELIVERED, 1.0),
                                 _move(2, State.READ, 3.0),
                                 _move(1, State.DELIVERED, 2.0)])
    assert [(c.message_id, c.state, c.at, c.keep_stored_error) for c in changes] == [
        (2, "read", 3.0, False), (1, "delivered", 2.0, False)]
