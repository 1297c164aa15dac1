"""Applying provider status updates in order: which ones move a message, what each records.

Both stores feed this the current states of the messages a batch of updates names, apply the
returned forward moves, and record one event per update (moves or not), so the rule lives once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from pushgate.core.lifecycle import ERROR_STATES, State, advances
from pushgate.core.models import StatusUpdate

# (message_id, state, at, detail) — a row of message_events.
EventRow = tuple[int, str, float, str | None]


#: (channel id, provider id): how a provider's status update names its message.
ProviderKey = tuple[int | None, str]


def provider_keys(updates: Sequence[StatusUpdate]) -> list[ProviderKey]:
    """The key of each update that names its message by the provider's id, not ours."""
    return [(u.channel_id, u.provider_id) for u in updates
            if u.message_id is None and u.provider_id is not None]


def message_id_by(provider_map: dict[ProviderKey, int]) -> Callable[[StatusUpdate], int | None]:
    """An update's message: our id when it names one, else the one ``provider_map`` knows."""
    return lambda u: (u.message_id if u.message_id is not None
                      else provider_map.get((u.channel_id, u.provider_id or "")))


def early_updates(updates: Sequence[StatusUpdate],
                  provider_map: dict[ProviderKey, int]) -> list[StatusUpdate]:
    """The updates naming a provider id no message carries yet: a receipt that overtook its
    send's outcome, to keep until the id is recorded. One with no channel could never be
    matched later, and is dropped."""
    return [u for u in updates if u.message_id is None and u.provider_id is not None
            and u.channel_id is not None and (u.channel_id, u.provider_id) not in provider_map]


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
    updates = _with_refunds(updates)
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


@dataclass(slots=True)
class StateChange:
    """The net effect of one message's moves in a batch: what its row becomes."""

    message_id: int
    state: str
    error_code: str | None
    error_message: str | None
    at: float
    # True: a code or text this change does not bring keeps the stored one.
    keep_stored_error: bool


def net_state_changes(moves: Sequence[tuple[int, StatusUpdate]]) -> list[StateChange]:
    """Fold each message's moves, in order, into one change (first-seen message order).

    A failure keeps the error it was reported with if it brings none (refunded after failed);
    a message moving on (delivered, read) sheds an earlier attempt's error.
    """
    changes: dict[int, StateChange] = {}
    for mid, u in moves:
        change = changes.get(mid)
        if change is None:
            change = changes[mid] = StateChange(mid, u.state.value, None, None, u.at, True)
        change.state = u.state.value
        change.at = u.at
        if u.state in ERROR_STATES:
            if u.error_code is not None:
                change.error_code = u.error_code
            if u.error_message is not None:
                change.error_message = u.error_message
        else:
            change.error_code, change.error_message = u.error_code, u.error_message
            change.keep_stored_error = False
    return list(changes.values())


def _with_refunds(updates: Sequence[StatusUpdate]) -> list[StatusUpdate]:
    """A FAILED update marked ``refund`` is followed by its REFUNDED move."""
    if not any(u.refund for u in updates):
        return list(updates)
    out: list[StatusUpdate] = []
    for u in updates:
        out.append(u)
        if u.refund and u.state is State.FAILED:
            out.append(replace(u, state=State.REFUNDED, refund=False,
                               error_message="credit returned"))
    return out


# (message_id, part) → the states of that part's refs are merged as one.
PartKey = tuple[int, int]


def resolve_part_updates(
    updates: Sequence[StatusUpdate],
    ref_of: dict[tuple[int, str], PartKey],
    part_states: dict[int, dict[int, State]],
) -> tuple[list[StatusUpdate], list[tuple[int, int, State]], list[EventRow]]:
    """Turn updates naming one part of a multi-part send into updates of its message.

    ``ref_of`` maps (channel_id, provider_id) to (message_id, part) for the updates' ids;
    ``part_states`` holds every part's state of those messages (updated in place). A message
    is delivered (read) when every part is, failed as soon as one part fails. Returns the
    updates with part-level ones replaced by message-level ones where the message moves, the
    part state changes to store as (message_id, part, state), and an event row for each part
    update that does not move its message yet.
    """
    out: list[StatusUpdate] = []
    part_changes: list[tuple[int, int, State]] = []
    events: list[EventRow] = []
    for u in updates:
        key = ref_of.get((u.channel_id or 0, u.provider_id or "")) \
            if u.message_id is None and u.provider_id is not None else None
        if key is None:
            out.append(u)
            continue
        mid, part = key
        parts = part_states.setdefault(mid, {})
        current = parts.get(part, State.SUBMITTED)
        if advances(current, u.state):
            parts[part] = u.state
            part_changes.append((mid, part, u.state))
        whole: State
        if u.state is State.FAILED:
            whole = u.state
        else:
            ranks = [_PART_RANK.get(state, 0) for state in parts.values()]
            lowest = min(ranks) if ranks else 0
            whole = next((s for s, r in _PART_RANK.items() if r == lowest), State.SUBMITTED)
        label = f"part {part + 1} of {len(parts)}: {u.state.value}"
        if whole is State.FAILED:
            out.append(replace(u, message_id=mid, state=whole, error_message=(
                f"{u.error_message} ({label})" if u.error_message else label)))
        elif whole in (State.DELIVERED, State.READ):
            out.append(replace(u, message_id=mid, state=whole))
        else:
            events.append((mid, u.state.value, u.at, label))
    return out, part_changes, events


_PART_RANK = {State.SUBMITTED: 0, State.DELIVERED: 1, State.READ: 2}


def merge_part_states(rows: Iterable[tuple[int, int, str]]) -> dict[int, dict[int, State]]:
    """The furthest state of each part of each message, from its ``provider_refs`` rows
    ``(message_id, part, state)`` (aliases of one part may stand at different states)."""
    merged: dict[int, dict[int, State]] = {}
    for mid, part, state in rows:
        parts = merged.setdefault(mid, {})
        current = parts.get(part)
        if current is None or advances(current, State(state)):
            parts[part] = State(state)
    return merged
