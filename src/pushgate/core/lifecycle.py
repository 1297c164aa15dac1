"""The message lifecycle: states, their order, and what Picky's reports call them.

``queued → sending → submitted → delivered → read``, a scheduled push's messages
``scheduled`` before ``queued`` (promoted when their ``send_at`` comes); side exits
``failed``, ``refunded``, ``expired``, ``cancelled``. Provider callbacks may arrive late or
out of order, so a status update only moves a message forward (``advances``); the dispatcher
alone may move ``sending`` back to ``queued`` for a retry.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    SENDING = "sending"
    SUBMITTED = "submitted"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"
    REFUNDED = "refunded"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


# Picky Assist delivery report statuses.
PICKY_STATUS: dict[State, int] = {
    State.SCHEDULED: 0,
    State.QUEUED: 0,
    State.SENDING: 0,
    State.SUBMITTED: 4,
    State.DELIVERED: 1,
    State.READ: 3,
    State.FAILED: 2,
    State.REFUNDED: 5,
    State.EXPIRED: 5,
    State.CANCELLED: 5,
}

FINAL_STATES: frozenset[State] = frozenset(
    {State.DELIVERED, State.READ, State.FAILED, State.REFUNDED, State.EXPIRED, State.CANCELLED}
)
# States in which a message's credit has been given back.
REFUNDED_STATES: frozenset[State] = frozenset({State.REFUNDED, State.EXPIRED, State.CANCELLED})
# States whose error fields are the message's outcome (Picky status 2 and 5). In any other
# state an error belongs to an earlier attempt (a retry, a wait): the message's history keeps
# it, its reports do not show it, and a later success clears the message's error columns.
ERROR_STATES: frozenset[State] = frozenset({State.FAILED}) | REFUNDED_STATES

_RANK: dict[State, int] = {
    State.SCHEDULED: -1,
    State.QUEUED: 0,
    State.SENDING: 1,
    State.SUBMITTED: 2,
    State.DELIVERED: 3,
    State.READ: 4,
}
_TERMINAL_SIDE_EXITS = frozenset({State.REFUNDED, State.EXPIRED, State.CANCELLED})


def advances(current: State, new: State) -> bool:
    """Whether a status update from ``current`` to ``new`` moves the message forward.

    A late ``delivered`` after ``read`` does not (it is still recorded as an event). ``failed``
    ends a message that was not yet delivered; a failure reported after delivery is ignored.
    Only ``refunded`` may follow ``failed``.
    """
    if current == new or current in _TERMINAL_SIDE_EXITS:
        return False
    if current is State.FAILED:
        return new is State.REFUNDED
    if new in _RANK:
        return _RANK[new] > _RANK[current]
    if new is State.FAILED:
        return _RANK[current] < _RANK[State.DELIVERED]
    # refunded / expired / cancelled: only before the channel took the message.
    return _RANK[current] < _RANK[State.SUBMITTED]
