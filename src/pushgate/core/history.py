"""A message's history: its stored event rows with its routine steps put back in place.

The steps nearly every message takes are columns of the message, not event rows (migration
0005): the dispatcher's first claim, the submission and a delivery the send itself reported.
Each would otherwise be one more row written per message on the dispatch path. Everything
else — later claims, retries, releases, failures, refunds, expiry, status updates — is an
event row, in the order it was written. Both stores build the history through this one
function, so the two kinds read as one list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Event rows the dispatcher writes while a message is still its own (claims and the ways a
# claim ends without a submission). A message is submitted once, after all of them; what
# comes after the submission (status updates) is written later. Placing the submission by
# this, not by time, keeps a provider's receipt (timestamped by the provider's clock, often
# in whole seconds) after the submission it reports on.
_DISPATCH_STATES = frozenset({"queued", "sending"})


@dataclass(frozen=True, slots=True)
class RoutineSteps:
    """The columns of ``messages`` that hold a message's routine steps (None: not taken)."""

    created_at: float
    first_claim_at: float | None
    first_claim_by: str | None
    submitted_at: float | None
    provider_id: str | None
    delivered_at: float | None
    # Its push's send_at when the push was scheduled: the message was ``scheduled`` from
    # ``created_at`` and went to the queue when that time came.
    send_at: float | None = None


def message_history(
    steps: RoutineSteps, stored: Sequence[tuple[str, float, str | None]]
) -> list[dict[str, Any]]:
    """The whole history, oldest first: ``stored`` are the event rows ``(state, at, detail)``
    in the order they were written."""
    if steps.send_at is None:
        events = [_event("queued", steps.created_at, None)]
    else:
        events = [_event("scheduled", steps.created_at, None)]
        if steps.first_claim_at is not None:
            # Claimed, so it was queued: the promoter moves it when send_at comes.
            events.append(_event("queued", steps.send_at, None))
    if steps.first_claim_at is not None:
        # The first claim is the dispatcher's first step: nothing is written before it.
        events.append(_event("sending", steps.first_claim_at,
                             f"worker {steps.first_claim_by}, attempt 1"))
    rows = [_event(*row) for row in stored]
    submitted_after = 0
    for index, row in enumerate(stored):
        if row[0] in _DISPATCH_STATES:
            submitted_after = index + 1
    events += rows[:submitted_after]
    # A submission with a problem to report (or one recorded before the columns existed) is
    # also an event row, at the same time: then the row, which says more, stands alone.
    if steps.submitted_at is not None and not any(
            row[0] == "submitted" and row[1] == steps.submitted_at for row in stored):
        events.append(_event("submitted", steps.submitted_at,
                             f"provider id {steps.provider_id}"))
    if steps.delivered_at is not None:
        events.append(_event("delivered", steps.delivered_at, None))
    events += rows[submitted_after:]
    return events


def _event(state: str, at: float, detail: str | None) -> dict[str, Any]:
    return {"state": state, "at": at, "detail": detail}
