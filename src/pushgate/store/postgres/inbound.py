"""Users' messages in PostgreSQL: recording them, the parts of multi-part SMS awaiting the
rest, and their delivery to the incoming webhook.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg

from pushgate.core.models import (
    InboundForward,
    InboundMessage,
    InboundPart,
)
from pushgate.store.postgres.common import _columns
from pushgate.store.postgres.connection import PostgresBase
from pushgate.store.postgres.optouts import apply_keywords
from pushgate.store.rows import inbound_record

# First key of the per-channel advisory lock of users' multi-part SMS being put together.
PARTS_LOCK = 0x70677270


class PostgresInbound(PostgresBase):
    """Inbound messages and their webhook delivery."""

    async def record_inbound(self, messages: Sequence[InboundMessage], now: float) -> int:
        async def job(conn: asyncpg.Connection) -> int:
            rows = await conn.fetch(
                "INSERT INTO inbound_messages (project_id, channel_id, number, body, type,"
                " provider_id, media_url, name, raw, at, forward_at)"
                " SELECT c.project_id, c.id, u.number, u.body, u.type, u.provider_id,"
                " u.media_url, u.name, u.raw, u.at,"
                " CASE WHEN coalesce(p.incoming_webhook_url, '') <> '' THEN $10::float8 END"
                " FROM unnest($1::int[], $2::text[], $3::text[], $4::int[], $5::text[],"
                " $6::text[], $7::text[], $8::text[], $9::float8[]) WITH ORDINALITY"
                " AS u(channel_id, number, body, type, provider_id, media_url, name, raw, at,"
                " place)"
                " JOIN channels c ON c.id = u.channel_id JOIN projects p ON p.id = c.project_id"
                # The ids in the messages' order (the joins may reorder rows): the forwarder
                # sends a user's messages in id order.
                " ORDER BY u.place"
                " ON CONFLICT (channel_id, provider_id) DO NOTHING"
                " RETURNING channel_id, provider_id",
                *_columns([(m.channel_id, m.number, m.text, m.type, m.provider_id, m.media_url,
                            m.name, json.dumps(m.raw, default=str), m.at) for m in messages], 9),
                now)
            new = {(r[0], r[1]) for r in rows}
            await apply_keywords(conn, [m for m in messages
                                        if (m.channel_id, m.provider_id) in new], now)
            return len(rows)

        return await self._tx(job) if messages else 0

    async def add_inbound_parts(self, parts: Sequence[InboundPart]) -> list[InboundPart]:
        async def job(conn: asyncpg.Connection) -> list[InboundPart]:
            # Parts of one message arriving at once (two binds, a channel changing hands)
            # wait for each other, so one of them sees the message whole.
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1, c) FROM unnest($2::int[]) c ORDER BY c",
                PARTS_LOCK, sorted({p.channel_id for p in parts}))
            await conn.execute(
                "INSERT INTO inbound_parts (channel_id, number, destination, reference, total,"
                " seq, data_coding, data, at) SELECT * FROM unnest($1::int[], $2::text[],"
                " $3::text[], $4::int[], $5::int[], $6::int[], $7::int[], $8::bytea[],"
                " $9::float8[]) ON CONFLICT DO NOTHING",
                *_columns([(p.channel_id, p.number, p.destination, p.reference, p.total, p.seq,
                            p.data_coding, p.data, p.at) for p in parts], 9))
            keys = list(dict.fromkeys(p.key for p in parts))
            rows = await conn.fetch(
                "SELECT p.channel_id, p.number, p.destination, p.reference, p.total, p.seq,"
                " p.data_coding, p.data, p.at FROM inbound_parts p JOIN unnest($1::int[],"
                " $2::text[], $3::text[], $4::int[], $5::int[])"
                " AS k(channel_id, number, destination, reference, total)"
                " USING (channel_id, number, destination, reference, total)"
                " ORDER BY p.channel_id, p.number, p.destination, p.reference, p.total, p.seq",
                *_columns(keys, 5))
            return [_inbound_part(r) for r in rows]

        return await self._tx(job) if parts else []

    async def due_inbound_parts(self, channel_id: int, before: float,
                                limit: int) -> list[InboundPart]:
        rows = await self._fetch(
            "SELECT p.channel_id, p.number, p.destination, p.reference, p.total, p.seq,"
            " p.data_coding, p.data, p.at FROM inbound_parts p JOIN"
            " (SELECT number, destination, reference, total FROM inbound_parts"
            "  WHERE channel_id = $1 GROUP BY number, destination, reference, total"
            "  HAVING min(at) < $2 ORDER BY min(at) LIMIT $3) d"
            " USING (number, destination, reference, total)"
            " WHERE p.channel_id = $1 ORDER BY p.number, p.destination, p.reference,"
            " p.total, p.seq", channel_id, before, limit)
        return [_inbound_part(r) for r in rows]

    async def drop_inbound_parts(self, parts: Sequence[InboundPart]) -> None:
        async def job(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "DELETE FROM inbound_parts p USING unnest($1::int[], $2::text[], $3::text[],"
                " $4::int[], $5::int[], $6::int[])"
                " AS k(channel_id, number, destination, reference, total, seq)"
                " WHERE (p.channel_id, p.number, p.destination, p.reference, p.total, p.seq)"
                " = (k.channel_id, k.number, k.destination, k.reference, k.total, k.seq)",
                *_columns([(*p.key, p.seq) for p in parts], 6))

        if parts:
            await self._tx(job)

    async def claim_inbound(
        self, limit: int, now: float, lease_seconds: float
    ) -> list[InboundForward]:
        async def job(conn: asyncpg.Connection) -> list[InboundForward]:
            rows = await conn.fetch(
                "WITH c AS (UPDATE inbound_messages SET forward_at = $1 WHERE id IN"
                " (SELECT id FROM inbound_messages WHERE forward_at <= $2"
                " ORDER BY forward_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING *)"
                " SELECT i.id, i.project_id, i.channel_id, i.number, i.body, i.type,"
                " i.provider_id, i.media_url, i.name, ch.application, p.incoming_webhook_url,"
                " p.webhook_secret, i.forward_attempts, i.raw FROM c i"
                " JOIN channels ch ON ch.id = i.channel_id JOIN projects p ON p.id = i.project_id"
                " ORDER BY i.id", now + lease_seconds, now, limit)
            return [InboundForward(r[0], r[1], r[10] or "", r[11] or "", r[12],
                                   inbound_record(r)) for r in rows]

        return await self._tx(job)

    async def complete_inbound(self, ids: Sequence[int]) -> None:
        async def job(conn: asyncpg.Connection) -> None:
            await conn.execute("UPDATE inbound_messages SET forward_at = NULL"
                               " WHERE id = ANY($1::bigint[])", list(ids))

        if ids:
            await self._tx(job)

    async def retry_inbound(
        self, ids: Sequence[int], now: float, schedule: Sequence[float],
        error: str | None = None,
    ) -> None:
        async def job(conn: asyncpg.Connection) -> None:
            rows = await conn.fetch(
                "SELECT id, forward_attempts FROM inbound_messages WHERE id = ANY($1::bigint[])"
                " ORDER BY id FOR UPDATE", list(ids))
            await conn.executemany(
                "UPDATE inbound_messages SET forward_attempts = $1, forward_at = $2,"
                " forward_error = coalesce($4, forward_error) WHERE id = $3",
                [(tries, None if tries > len(schedule) else now + schedule[tries - 1], mid,
                  error) for mid, tries in ((r[0], r[1] + 1) for r in rows)])

        if ids:
            await self._tx(job)


def _inbound_part(row: Sequence[Any]) -> InboundPart:
    return InboundPart(row[0], row[1], row[2], row[3], row[4], row[5], row[6], bytes(row[7]),
                       row[8])
