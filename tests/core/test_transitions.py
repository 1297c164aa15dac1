"""The status-update walk both stores share: forward moves only, one event per update."""

from __future__ import annotations

from pushgate.core.lifecycle import State
from pushgate.core.models import StatusUpdate
from pushgate.core.policy import RetryPolicy
from pushgate.core.transitions import walk_status_updates


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
