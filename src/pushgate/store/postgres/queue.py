"""The dispatch queue in PostgreSQL: channel leases, claims with ``FOR UPDATE SKIP LOCKED``
(taking back expired leases), releases, pacing counts, and LISTEN/NOTIFY wake-ups.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from pushgate.core.models import OutboundMessage, Promotion
from pushgate.core.policy import fair_share
from pushgate.store.errors import StoreUnavailable
from pushgate.store.outage import Backoff, Outage, describe
from pushgate.store.postgres.connection import (
    _UNAVAILABLE,
    CONNECT_TIMEOUT,
    PING_TIMEOUT,
    SERVER_SETTINGS,
    PostgresBase,
    log,
)

NOTIFY_CHANNEL = "pushgate_messages"
_NEXT_DUE_SQL = "SELECT min(schedule_due) FROM pushes WHERE schedule_due IS NOT NULL"
# How often an idle LISTEN connection checks that it is still alive.
LISTEN_PING_SECONDS = 30.0


class PostgresQueue(PostgresBase):
    """Channel leases and message claims."""

    async def acquire_channel_leases(self, worker_id: str, now: float, ttl: float,
                                     skip_kinds: Sequence[str] = ()) -> list[int]:
        skip = list(skip_kinds)

        async def job(conn: asyncpg.Connection) -> list[int]:
            until = now + ttl
            await conn.execute(
                "INSERT INTO workers (worker_id, heartbeat_at, started_at) VALUES ($1, $2, $2)"
                " ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
                worker_id, now)
            await conn.execute("DELETE FROM workers WHERE heartbeat_at < $1", now - ttl)
            # Paused channels are not sent, and channels of skipped kinds (phones, which fetch
            # their own messages) have no sender: neither takes a share of the workers.
            await conn.execute(
                "DELETE FROM channel_leases l USING channels c"
                " WHERE c.id = l.channel_id AND (c.paused OR c.kind = ANY($1::text[]))", skip)
            await conn.execute("DELETE FROM channel_leases WHERE lease_until < $1", now)
            await conn.execute(
                "UPDATE channel_leases SET lease_until = $1 WHERE worker_id = $2",
                until, worker_id)
            live, active = await conn.fetchrow(
                "SELECT (SELECT count(*) FROM workers),"
                " (SELECT count(*) FROM channels WHERE NOT paused"
                " AND NOT kind = ANY($1::text[]))", skip)
            share = fair_share(active, live)
            mine = sorted(r[0] for r in await conn.fetch(
                "SELECT channel_id FROM channel_leases WHERE worker_id = $1", worker_id))
            if len(mine) > share:
                # Another worker joined: hand back the surplus so it can take it.
                await conn.execute(
                    "DELETE FROM channel_leases WHERE worker_id = $1"
                    " AND channel_id = ANY($2::int[])", worker_id, mine[share:])
            elif len(mine) < share:
                # Free channels only; a live lease of another worker is left alone. A race
                # with another worker taking the same channel ends in DO NOTHING.
                await conn.execute(
                    "INSERT INTO channel_leases (channel_id, worker_id, lease_until)"
                    " SELECT c.id, $1, $2 FROM channels c WHERE NOT c.paused"
                    " AND NOT c.kind = ANY($4::text[])"
                    " AND NOT EXISTS (SELECT 1 FROM channel_leases l WHERE l.channel_id = c.id)"
                    " ORDER BY c.id LIMIT $3 ON CONFLICT (channel_id) DO NOTHING",
                    worker_id, until, share - len(mine), skip)
            rows = await conn.fetch(
                "SELECT channel_id FROM channel_leases WHERE worker_id = $1 ORDER BY channel_id",
                worker_id)
            return [r[0] for r in rows]

        return await self._tx(job)

    async def release_channel_leases(self, worker_id: str) -> None:
        async def job(conn: asyncpg.Connection) -> None:
            await conn.execute("DELETE FROM channel_leases WHERE worker_id = $1", worker_id)
            await conn.execute("DELETE FROM workers WHERE worker_id = $1", worker_id)

        await self._tx(job)

    async def channel_workers(self, channel_ids: Sequence[int], now: float) -> dict[int, str]:
        rows = await self._fetch(
            "SELECT channel_id, worker_id FROM channel_leases WHERE channel_id = ANY($1::int[])"
            " AND lease_until >= $2", list(channel_ids), now)
        return {int(r[0]): str(r[1]) for r in rows}

    async def claim_messages(
        self, channel_id: int, worker_id: str, limit: int, now: float, lease_seconds: float,
        min_priority: int = 0, reclaim: bool = True,
    ) -> list[OutboundMessage]:
        async def job(conn: asyncpg.Connection) -> list[OutboundMessage]:
            # A message whose lease ran out while `sending` may have reached the provider:
            # claim it again (nothing is lost) and count it as a possible re-send (nothing is
            # doubled silently). Then fresh ones up to the limit. SKIP LOCKED: rows another
            # worker is claiming right now are passed over, never waited for or taken twice.
            # Both candidate lists are limited by the parameter itself and cut by the outer
            # LIMIT, which pulls (and locks) fresh rows only as far as it needs them. A limit
            # computed from the expired count made the planner guess a tenth of the table
            # and join by a sequential scan of all messages, on every claim. Without
            # `reclaim` ($7) the expired leases are not looked for: a parameter alone in a
            # WHERE is a one-time filter, so the scan is not run at all.
            rows = await conn.fetch(
                # A message past its validity is never claimed, neither queued nor whose
                # lease ran out: the sweep (expire_due) expires and refunds it.
                "WITH expired AS (SELECT id FROM messages WHERE $7 AND channel_id = $1"
                "  AND state = 'sending' AND priority >= $6 AND lease_until < $2"
                "  AND (expires_at IS NULL OR expires_at >= $2)"
                "  ORDER BY priority DESC, id LIMIT $3 FOR UPDATE SKIP LOCKED),"
                " fresh AS (SELECT id FROM messages WHERE channel_id = $1"
                "  AND state = 'queued' AND priority >= $6 AND next_attempt_at <= $2"
                "  AND (expires_at IS NULL OR expires_at >= $2)"
                "  ORDER BY priority DESC, id LIMIT $3 FOR UPDATE SKIP LOCKED),"
                " c AS (SELECT id, true AS resend FROM expired"
                "  UNION ALL SELECT id, false FROM fresh LIMIT $3),"
                # A message's first claim is kept in its columns; only a later one is an
                # event row (core/history.py). SET sees the row as it was: `m.claims = 0`
                # is the count before this claim.
                " claimed AS (UPDATE messages m SET state = 'sending', lease_until = $4,"
                "  leased_by = $5, attempts = m.attempts + 1,"
                "  resends = m.resends + CASE WHEN c.resend THEN 1 ELSE 0 END, updated_at = $2,"
                "  claims = m.claims + 1,"
                "  first_claim_at = CASE WHEN m.claims = 0 AND NOT c.resend THEN $2"
                "  ELSE m.first_claim_at END,"
                "  first_claim_by = CASE WHEN m.claims = 0 AND NOT c.resend THEN $5"
                "  ELSE m.first_claim_by END"
                "  FROM c WHERE m.id = c.id"
                "  RETURNING m.id, m.push_id, m.project_id, m.channel_id, m.number, m.body,"
                "  m.media, m.media_kind, m.parts, m.priority, m.attempts, c.resend, m.extra,"
                "  m.claims, m.media_id),"
                " events AS (INSERT INTO message_events (message_id, state, at, detail)"
                "  SELECT id, 'sending', $2, 'worker ' || $5 || ', attempt ' || attempts"
                "  || CASE WHEN resend THEN ': possible re-send, previous lease expired'"
                "  ELSE '' END FROM claimed WHERE resend OR claims > 1 ORDER BY resend, id)"
                " SELECT * FROM claimed ORDER BY priority DESC, id",
                channel_id, now, limit, now + lease_seconds, worker_id, min_priority, reclaim)
            return [OutboundMessage(
                id=r[0], push_id=r[1], project_id=r[2], channel_id=r[3], number=r[4],
                text=r[5], media_url=r[6], media_kind=r[7], parts=r[8], priority=r[9],
                attempts=r[10], possible_resend=r[11], media_id=r[14],
                extra=json.loads(r[12]) if r[12] else None) for r in rows]

        return await self._tx(job)

    async def promote_due(self, now: float, limit: int) -> Promotion:
        """Scheduled messages of due pushes to the queue: the due pushes through
        ``pushes_schedule``, their waiting messages through ``messages_scheduled`` (migration
        0013). A push another worker is promoting is skipped; the promoted channels are
        notified, so every process's runners wake."""
        # Nothing due, the common case: one read of the index's first entry, no transaction.
        due = await self._fetchval(_NEXT_DUE_SQL)
        if due is None or due > now:
            return Promotion(0, frozenset(), due)

        async def job(conn: asyncpg.Connection) -> Promotion:
            moved = 0
            channels: set[int] = set()
            due = await conn.fetch(
                "SELECT id, channel_id FROM pushes WHERE schedule_due IS NOT NULL"
                " AND schedule_due <= $1 ORDER BY schedule_due, id LIMIT $2"
                " FOR UPDATE SKIP LOCKED", now, limit)
            for push_id, channel_id in due:
                left = limit - moved
                count = await conn.fetchval(
                    "WITH p AS (SELECT id FROM messages WHERE push_id = $1"
                    " AND state = 'scheduled' ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED),"
                    " u AS (UPDATE messages m SET state = 'queued', updated_at = $3 FROM p"
                    " WHERE m.id = p.id AND m.state = 'scheduled' RETURNING 1)"
                    " SELECT count(*) FROM u", push_id, left, now)
                moved += count
                if count:
                    channels.add(channel_id)
                if count == left:
                    break   # the limit: the rest of this push next time
                await conn.execute("UPDATE pushes SET schedule_due = NULL WHERE id = $1",
                                   push_id)
            for channel_id in sorted(channels):
                await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, str(channel_id))
            next_due = await conn.fetchval(_NEXT_DUE_SQL)
            return Promotion(moved, frozenset(channels), next_due)

        return await self._tx(job)

    async def release_messages(self, worker_id: str, message_ids: Sequence[int]) -> None:
        async def job(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "WITH r AS (UPDATE messages SET state = 'queued', lease_until = NULL,"
                " leased_by = NULL, attempts = greatest(attempts - 1, 0)"
                " WHERE id = ANY($1::bigint[]) AND state = 'sending' AND leased_by = $2"
                " RETURNING id)"
                " INSERT INTO message_events (message_id, state, at, detail)"
                " SELECT id, 'queued', $3, 'released unsent by worker ' || $2 FROM r ORDER BY id",
                list(message_ids), worker_id, time.time())

        if message_ids:
            await self._tx(job)

    async def sent_since(self, channel_id: int, since: float) -> int:
        return int(await self._fetchval(
            "SELECT count(*) FROM messages WHERE channel_id = $1 AND submitted_at >= $2",
            channel_id, since))

    async def submitted_before(self, channel_id: int, before: float, limit: int) -> list[int]:
        rows = await self._fetch(
            "SELECT id FROM messages WHERE channel_id = $1 AND state = 'submitted'"
            " AND updated_at <= $2 ORDER BY priority DESC, id LIMIT $3",
            channel_id, before, limit)
        return [r[0] for r in rows]

    async def queue_depths(self) -> dict[tuple[int, int], int]:
        rows = await self._fetch(
            "SELECT channel_id, priority, count(*) FROM messages WHERE state = 'queued'"
            " AND state IN ('queued', 'sending') GROUP BY channel_id, priority")
        return {(r[0], r[1]): r[2] for r in rows}

    async def has_ready_messages(self, channel_id: int, now: float,
                                 min_priority: int = 0) -> bool:
        return bool(await self._fetchval(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE channel_id = $1 AND state = 'queued'"
            " AND priority >= $3 AND next_attempt_at <= $2"
            " AND (expires_at IS NULL OR expires_at >= $2)) OR EXISTS (SELECT 1 FROM messages"
            " WHERE channel_id = $1 AND state = 'sending' AND priority >= $3"
            " AND lease_until < $2 AND (expires_at IS NULL OR expires_at >= $2))",
            channel_id, now, min_priority))

    async def listen(self, on_channel: Callable[[int], None],
                     outage: Outage | None = None) -> None:
        """Until cancelled: a dedicated connection LISTENs on ``pushgate_messages`` and calls
        ``on_channel`` with each channel id a push NOTIFYs; reconnects with back-off if the
        connection drops (meanwhile dispatchers fall back to their poll). The loss and the
        reconnection are reported to ``outage`` when given (once per outage for the whole
        process), else logged."""

        def handler(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            try:
                channel_id = int(payload)
            except ValueError:
                return
            on_channel(channel_id)

        def failed(exc: BaseException, began: float) -> None:
            if outage is not None:
                outage.failed(exc, began)
            else:
                log.warning("LISTEN connection lost (%s); reconnecting", describe(exc))

        backoff = Backoff()
        while True:
            conn: asyncpg.Connection | None = None
            began = time.monotonic()
            try:
                conn = await asyncpg.connect(self.dsn, timeout=CONNECT_TIMEOUT,
                                             server_settings=SERVER_SETTINGS)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(NOTIFY_CHANNEL, handler)
                if outage is not None:
                    outage.reached(began)
                backoff.reset()
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), LISTEN_PING_SECONDS)
                    if not lost.is_set():
                        began = time.monotonic()
                        await conn.fetchval("SELECT 1", timeout=PING_TIMEOUT)
                failed(StoreUnavailable("the LISTEN connection was closed"), time.monotonic())
            except (*_UNAVAILABLE, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                failed(exc, began)
            finally:
                if conn is not None and not conn.is_closed():
                    try:
                        await asyncio.wait_for(conn.close(), 2)
                    except BaseException:
                        conn.terminate()
                        raise
            await asyncio.sleep(backoff.next())
