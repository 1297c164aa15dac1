"""Provider status updates in SQLite: applied in order and only forward, with updates for
provider ids not recorded yet kept until the id arrives.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from pushgate import metrics
from pushgate.core.lifecycle import State
from pushgate.core.models import StatusUpdate
from pushgate.core.outcomes import Moved, plan_status_moves
from pushgate.core.transitions import (
    EventRow,
    ProviderKey,
    StateChange,
    early_updates,
    merge_part_states,
    message_id_by,
    net_state_changes,
    provider_keys,
    resolve_part_updates,
    walk_status_updates,
)
from pushgate.store.sqlite.common import _add_outbox, _now, _refund, _webhook_projects
from pushgate.store.sqlite.connection import SQLiteBase


class SQLiteStatus(SQLiteBase):
    """Applying provider status updates."""

    async def apply_status_updates(self, updates: Sequence[StatusUpdate]) -> int:
        if not updates:
            return 0
        moves = await self._write(_apply_status_job, list(updates))
        metrics.count_moves(moves)
        return len(moves)


def apply_early_updates(conn: sqlite3.Connection,
                        keys: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Status updates that arrived before these provider ids were recorded: apply them now.
    The messages moved, as (channel, new state), for the caller to count once committed."""
    if not keys or conn.execute("SELECT 1 FROM early_updates LIMIT 1").fetchone() is None:
        return []
    rows = conn.execute(
        "DELETE FROM early_updates WHERE (channel_id, provider_id) IN"
        " (SELECT value ->> 0, value ->> 1 FROM json_each(?))"
        " RETURNING id, channel_id, provider_id, state, at, error_code, error_message",
        (json.dumps(keys),)).fetchall()
    if not rows:
        return []
    rows.sort()
    return _apply_status_job(conn, [
        StatusUpdate(state=State(r[3]), at=r[4], channel_id=r[1], provider_id=r[2],
                     error_code=r[5], error_message=r[6]) for r in rows], keep_early=False)


def _apply_status_job(conn: sqlite3.Connection, updates: list[StatusUpdate],
                      keep_early: bool = True) -> list[tuple[int, str]]:
    """The messages moved, as (channel, new state): counted by the caller once committed."""
    # Parts of multi-part sends first: their updates become their message's.
    updates, part_events = _resolve_parts(conn, updates)
    rows, provider_map = _read_messages(conn, updates)
    if keep_early:
        _keep_early(conn, updates, provider_map)
    hooks = _webhook_projects(conn)
    states = {mid: State(row[2]) for mid, row in rows.items()}
    moves, events = walk_status_updates(updates, states, message_id_by(provider_map))
    plan = plan_status_moves(moves, {mid: Moved(row[1], row[5], row[1] in hooks)
                                     for mid, row in rows.items()})
    _refund(conn, plan.refunds, _now(), plan.refund_reason)
    _write_changes(conn, net_state_changes(moves), part_events + events)
    _add_outbox(conn, [report.row() for report in plan.reports])
    return [(rows[mid][3], update.state.value) for mid, update in moves]


def _resolve_parts(
    conn: sqlite3.Connection, updates: list[StatusUpdate]
) -> tuple[list[StatusUpdate], list[EventRow]]:
    """Updates naming one part of a multi-part send, turned into their message's (where it
    moves); the parts' own states stored. Returns the updates and the parts' events."""
    part_keys = set(provider_keys(updates))
    if not part_keys or not conn.execute("SELECT 1 FROM provider_refs LIMIT 1").fetchone():
        return updates, []
    ref_of: dict[tuple[int, str], tuple[int, int]] = {}
    for channel_id, provider_id in part_keys:
        r = conn.execute("SELECT message_id, part FROM provider_refs"
                         " WHERE channel_id = ? AND provider_id = ?",
                         (channel_id, provider_id)).fetchone()
        if r is not None:
            ref_of[(channel_id or 0, provider_id)] = (r[0], r[1])
    if not ref_of:
        return updates, []
    part_states = merge_part_states(conn.execute(
        "SELECT message_id, part, state FROM provider_refs"
        " WHERE message_id IN (SELECT value FROM json_each(?))",
        (json.dumps(sorted({k[0] for k in ref_of.values()})),)))
    updates, part_changes, part_events = resolve_part_updates(updates, ref_of, part_states)
    conn.executemany(
        "UPDATE provider_refs SET state = ? WHERE message_id = ? AND part = ?",
        [(state.value, mid, part) for mid, part, state in part_changes])
    return updates, part_events


def _read_messages(
    conn: sqlite3.Connection, updates: list[StatusUpdate]
) -> tuple[dict[int, list[Any]], dict[ProviderKey, int]]:
    """[id, project_id, state, channel_id, provider_id, credit_micro] of each message the
    updates name, by id; and our id for each (channel, provider id) they name, where known."""
    by_id = [u.message_id for u in updates if u.message_id is not None]
    rows: dict[int, list[Any]] = {}
    provider_map: dict[ProviderKey, int] = {}
    if by_id:
        for r in conn.execute(
                "SELECT id, project_id, state, channel_id, provider_id, credit_micro FROM messages"
                " WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(by_id),)):
            rows[r[0]] = list(r)
    for channel_id, provider_id in provider_keys(updates):
        r = conn.execute(
            "SELECT id, project_id, state, channel_id, provider_id, credit_micro FROM messages"
            " WHERE channel_id = ? AND provider_id = ?", (channel_id, provider_id)).fetchone()
        if r is not None:
            rows[r[0]] = list(r)
            provider_map[(channel_id, provider_id)] = r[0]
    return rows, provider_map


def _keep_early(conn: sqlite3.Connection, updates: list[StatusUpdate],
                provider_map: dict[ProviderKey, int]) -> None:
    """Receipts that overtook their send's outcome: kept until the id is recorded."""
    conn.executemany(
        "INSERT INTO early_updates (channel_id, provider_id, state, at, error_code,"
        " error_message, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(u.channel_id, u.provider_id, u.state.value, u.at, u.error_code, u.error_message,
          _now()) for u in early_updates(updates, provider_map)])


def _write_changes(conn: sqlite3.Connection, changes: list[StateChange],
                   events: list[EventRow]) -> None:
    """The state changes and their events."""
    conn.executemany(
        "UPDATE messages SET state = ?, error_code = coalesce(?, CASE WHEN ? THEN error_code"
        " END), error_message = coalesce(?, CASE WHEN ? THEN error_message END),"
        " updated_at = ?, lease_until = NULL, leased_by = NULL WHERE id = ?",
        [(c.state, c.error_code, c.keep_stored_error, c.error_message, c.keep_stored_error,
          c.at, c.message_id) for c in changes])
    conn.executemany(
        "INSERT INTO message_events (message_id, state, at, detail) VALUES (?, ?, ?, ?)", events)
