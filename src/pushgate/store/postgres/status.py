"""Provider status updates in PostgreSQL: group-committed (the calls arriving while one group
is written form the next), applied in order and only forward, with updates for provider ids
not recorded yet kept until the id arrives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import asyncpg

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
from pushgate.store.errors import StoreUnavailable
from pushgate.store.postgres.common import (
    RECEIPT_LOCK,
    _add_events,
    _add_outbox,
    _columns,
    _has_webhook,
    _now,
    _refund,
)
from pushgate.store.postgres.connection import PostgresBase

# Status updates that arrive while a group of them is being written wait for the next group,
# up to this many updates in one transaction.
STATUS_GROUP_MAX = 5000


class PostgresStatus(PostgresBase):
    """Applying provider status updates."""

    async def apply_status_updates(self, updates: Sequence[StatusUpdate]) -> int:
        """Group commit: calls that arrive while a group is being written go together in the
        next transaction, through one set of statements. Each waits for that commit and is
        told what its own updates changed.

        Provider callbacks come one small call each. With a transaction per call they queued
        behind the channel's receipt lock, slower than a busy WhatsApp number sends them;
        grouped, they keep up (bench/status_updates.py, docs/benchmarks.md)."""
        if not updates:
            return 0
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._status_waiting.append((list(updates), future))
        writer = self._status_writer
        if writer is None or writer.done() or writer.get_loop() is not loop:
            self._status_writer = loop.create_task(self._write_status_groups())
        return await future

    async def _write_status_groups(self) -> None:
        waiting = self._status_waiting
        group: list[tuple[list[StatusUpdate], asyncio.Future[int]]] = []
        try:
            while waiting:
                group = [waiting.popleft()]
                size = len(group[0][0])
                while waiting and size + len(waiting[0][0]) <= STATUS_GROUP_MAX:
                    size += len(waiting[0][0])
                    group.append(waiting.popleft())
                await self._write_status_group(group)
        finally:
            # Cancelled with the loop: nobody may wait forever (settling is a no-op for the
            # callers already answered).
            for _, future in group:
                _settle(future, StoreUnavailable("the store is closing"))
            while waiting:
                _settle(waiting.popleft()[1], StoreUnavailable("the store is closing"))

    async def _write_status_group(
        self, group: list[tuple[list[StatusUpdate], asyncio.Future[int]]]
    ) -> None:
        try:
            counts = await self._tx(self._apply_status_group, [u for u, _ in group])
        except StoreUnavailable as exc:
            for _, future in group:
                _settle(future, exc)
            return
        except Exception as exc:
            if len(group) == 1:
                _settle(group[0][1], exc)
                return
            # One caller's updates broke the group: each on its own, so the others still land.
            for updates, future in group:
                try:
                    [count] = await self._tx(self._apply_status_group, [updates])
                except Exception as own:
                    _settle(future, own)
                else:
                    _settle(future, count)
            return
        for (_, future), count in zip(group, counts, strict=True):
            _settle(future, count)

    async def _apply_status_group(
        self, conn: asyncpg.Connection, calls: list[list[StatusUpdate]]
    ) -> list[int]:
        """Several callers' updates applied as one list, in arrival order (the same result as
        one after the other); returns how many transitions each caller's updates made."""
        tagged = [replace(u, group=i) for i, updates in enumerate(calls) for u in updates]
        counts = [0] * len(calls)
        for _mid, update in await apply_status(conn, tagged):
            counts[update.group] += 1
        return counts


# --- inside a caller's transaction (the outcome recorder applies early updates too) -------------

async def apply_early_updates(conn: asyncpg.Connection, keys: list[tuple[int, str]]) -> None:
    """Status updates that arrived before these provider ids were recorded: apply now."""
    if not keys:
        return
    rows = await conn.fetch(
        "DELETE FROM early_updates e USING unnest($1::int[], $2::text[]) AS k(c, p)"
        " WHERE e.channel_id = k.c AND e.provider_id = k.p"
        " RETURNING e.id, e.channel_id, e.provider_id, e.state, e.at, e.error_code,"
        " e.error_message", *_columns(keys, 2))
    if rows:
        rows = sorted(rows, key=lambda r: r[0])
        await apply_status(conn, [
            StatusUpdate(state=State(r[3]), at=r[4], channel_id=r[1], provider_id=r[2],
                         error_code=r[5], error_message=r[6]) for r in rows],
            keep_early=False)

async def apply_status(
    conn: asyncpg.Connection, updates: list[StatusUpdate], keep_early: bool = True
) -> list[tuple[int, StatusUpdate]]:
    """Returns the moves made: (message id, the update that moved it)."""
    by_provider_channels = sorted({u.channel_id for u in updates if u.message_id is None
                                   and u.provider_id is not None
                                   and u.channel_id is not None})
    if by_provider_channels:   # see outcomes._lock_receipts
        await conn.execute("SELECT pg_advisory_xact_lock($1, c) FROM unnest($2::int[]) c",
                           RECEIPT_LOCK, by_provider_channels)
    # Parts of multi-part sends first: their updates become their message's.
    updates, part_events = await _resolve_parts(conn, updates)
    provider_map = await _ids_by_provider(conn, updates)
    if keep_early:
        await _keep_early(conn, updates, provider_map)
    rows = await _lock_messages(
        conn, {u.message_id for u in updates if u.message_id is not None}
        | set(provider_map.values()))
    states = {mid: State(row[2]) for mid, row in rows.items()}
    moves, events = walk_status_updates(updates, states, message_id_by(provider_map))
    plan = plan_status_moves(moves, {mid: Moved(row[1], row[4], row[3])
                                     for mid, row in rows.items()})
    await _refund(conn, plan.refunds, _now(), plan.refund_reason)
    await _write_changes(conn, net_state_changes(moves), part_events + events)
    await _add_outbox(conn, [report.row() for report in plan.reports])
    metrics.count_moves((rows[mid][5], update.state.value) for mid, update in moves)
    return moves


async def _resolve_parts(
    conn: asyncpg.Connection, updates: list[StatusUpdate]
) -> tuple[list[StatusUpdate], list[EventRow]]:
    """Updates naming one part of a multi-part send, turned into their message's (where it
    moves); the parts' own states stored. Returns the updates and the parts' events."""
    part_keys = sorted({(channel or 0, pid) for channel, pid in provider_keys(updates)})
    if not part_keys:
        return updates, []
    ref_of = {(r[0], r[1]): (r[2], r[3]) for r in await conn.fetch(
        "SELECT r.channel_id, r.provider_id, r.message_id, r.part FROM provider_refs r"
        " JOIN unnest($1::int[], $2::text[]) AS k(c, p)"
        " ON r.channel_id = k.c AND r.provider_id = k.p", *_columns(part_keys, 2))}
    if not ref_of:
        return updates, []
    part_states = merge_part_states(await conn.fetch(
        "SELECT message_id, part, state FROM provider_refs"
        " WHERE message_id = ANY($1::bigint[]) ORDER BY message_id, part"
        " FOR UPDATE", sorted({v[0] for v in ref_of.values()})))
    updates, part_changes, part_events = resolve_part_updates(updates, ref_of, part_states)
    if part_changes:
        await conn.execute(
            "UPDATE provider_refs r SET state = u.state FROM unnest($1::bigint[],"
            " $2::int[], $3::text[]) AS u(mid, part, state)"
            " WHERE r.message_id = u.mid AND r.part = u.part",
            *_columns([(m, p, st.value) for m, p, st in part_changes], 3))
    return updates, part_events


async def _ids_by_provider(
    conn: asyncpg.Connection, updates: list[StatusUpdate]
) -> dict[ProviderKey, int]:
    """Our message id for each (channel, provider id) the updates name, where one is known."""
    by_provider = provider_keys(updates)
    if not by_provider:
        return {}
    return {(r[1], r[2]): r[0] for r in await conn.fetch(
        "SELECT DISTINCT ON (m.channel_id, m.provider_id) m.id, m.channel_id,"
        " m.provider_id FROM messages m JOIN unnest($1::int[], $2::text[])"
        " AS v(channel_id, provider_id) ON m.channel_id = v.channel_id"
        " AND m.provider_id = v.provider_id"
        " ORDER BY m.channel_id, m.provider_id, m.id", *_columns(by_provider, 2))}


async def _keep_early(
    conn: asyncpg.Connection, updates: list[StatusUpdate],
    provider_map: dict[ProviderKey, int],
) -> None:
    """Receipts that overtook their send's outcome: kept until the id is recorded."""
    early = early_updates(updates, provider_map)
    if early:
        await conn.executemany(
            "INSERT INTO early_updates (channel_id, provider_id, state, at, error_code,"
            " error_message, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [(u.channel_id, u.provider_id, u.state.value, u.at, u.error_code,
              u.error_message, _now()) for u in early])


async def _lock_messages(conn: asyncpg.Connection, wanted: set[int]) -> dict[int, list[Any]]:
    """[id, project_id, state, has webhook, credit_micro, channel_id] of each message,
    locked, by id."""
    if not wanted:
        return {}
    return {r[0]: list(r) for r in await conn.fetch(
        f"SELECT m.id, m.project_id, m.state, {_has_webhook('m')}, m.credit_micro,"
        " m.channel_id FROM messages m"
        " WHERE m.id = ANY($1::bigint[]) ORDER BY m.id FOR UPDATE OF m", sorted(wanted))}


async def _write_changes(
    conn: asyncpg.Connection, changes: list[StateChange], events: list[EventRow]
) -> None:
    """The state changes and their events in one statement."""
    if not changes:
        await _add_events(conn, events)
        return
    await conn.execute(
        "WITH e AS (INSERT INTO message_events (message_id, state, at, detail)"
        " SELECT * FROM unnest($7::bigint[], $8::text[], $9::float8[], $10::text[]))"
        " UPDATE messages m SET state = u.state,"
        " error_code = coalesce(u.code, CASE WHEN u.keep THEN m.error_code END),"
        " error_message = coalesce(u.msg, CASE WHEN u.keep THEN m.error_message END),"
        " updated_at = u.at, lease_until = NULL, leased_by = NULL"
        " FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::float8[],"
        " $6::bool[]) AS u(id, state, code, msg, at, keep) WHERE m.id = u.id",
        *_columns([(c.message_id, c.state, c.error_code, c.error_message, c.at,
                    c.keep_stored_error) for c in changes], 6),
        *_columns(events, 4))


# --- helpers (inside a caller's transaction) ---------------------------------------------------

def _settle(future: asyncio.Future[int], outcome: int | BaseException) -> None:
    """Answer a waiting caller, unless it stopped waiting (cancelled)."""
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
