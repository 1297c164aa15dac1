"""Applying provider status updates in order: which ones move a message, what each records.

Both stores feed this the current states of the messages a batch of updates names, apply the
returned forward moves, and record one event per update (moves or not), so the rule lives once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pushgate.core.lifecycle import State, advances
from pushgate.core.models import StatusUpdate

# (message_id, state, at, detail) — a row of message_events.
EventRow = tuple[int, str, float, str | None]


def walk_status_updates(
    updates: Sequence[StatusUpdate],
    states: dict[int, State],
    message_id_of: Callable[[StatusUpdate], int | None],
) -> tuple[list[tuple[int, StatusUpdate]], list[EventRow]]:
    """Walk ``updates`` in order against ``states`` (updated in place as messages move).

    Returns the updates that move their message forward, as ``(message_id, update)``, and an
    event row for every update of a known message — a late or duplicate one is recorded with
    the reason it changed nothing. Updates for unknown messages are dropped.
    """
    moves: list[tuple[int, StatusUpdate]] = []
    events: list[EventRow] = []
    for update in updates:
        mid = message_id_of(update)
        if mid is None or mid not in states:
            continue
        current = states[mid]
        moved = advances(current, update.state)
        detail = None if moved else f"ignored: message already {current.value}"
        if update.error_code or update.error_message:
            reason = f"{update.error_code or ''} {update.error_message or ''}".strip()
            detail = f"{reason} ({detail})" if detail else reason
        events.append((mid, update.state.value, update.at, detail))
        if moved:
            states[mid] = update.state
            moves.append((mid, update))
    return moves, events
