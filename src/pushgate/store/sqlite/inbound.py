"""Users' messages in SQLite: recording them, the parts of multi-part SMS awaiting the rest,
and their delivery to the incoming webhook.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from pushgate.core.models import (
    InboundForward,
    InboundMessage,
    InboundPart,
)
from pushgate.store.rows import inbound_record
from pushgate.store.sqlite.connection import SQLiteBase
from pushgate.store.sqlite.optouts import apply_keyword

#: The inbound messages a forwarder may claim at ``?`` (now).
_FORWARD_DUE = "forward_at <= ?"


class SQLiteInbound(SQLiteBase):
    """Inbound messages and their webhook delivery."""

    async def record_inbound(self, messages: Sequence[InboundMessage], now: float) -> int:
        def job(conn: sqlite3.Connection) -> int:
            new = 0
            for m in messages:
                row = conn.execute(
                    "INSERT INTO inbound_messages (project_id, channel_id, number, body, type,"
                    " provider_id, media_url, name, raw, at, forward_at)"
                    " SELECT c.project_id, c.id, ?, ?, ?, ?, ?, ?, ?, ?,"
                    " CASE WHEN coalesce(p.incoming_webhook_url, '') <> '' THEN ? END"
                    " FROM channels c JOIN projects p ON p.id = c.project_id WHERE c.id = ?"
                    " ON CONFLICT (channel_id, provider_id) DO NOTHING RETURNING id",
                    (m.number, m.text, m.type, m.provider_id, m.media_url, m.name,
                     json.dumps(m.raw, default=str), m.at, now, m.channel_id)).fetchone()
                if row is not None:
                    new += 1
                    apply_keyword(conn, m, now)
            return new

        return await self._write(job) if messages else 0

    async def add_inbound_parts(self, parts: Sequence[InboundPart]) -> list[InboundPart]:
        def job(conn: sqlite3.Connection) -> list[InboundPart]:
            conn.executemany(
                "INSERT INTO inbound_parts (channel_id, number, destination, reference, total,"
                " seq, data_coding, data, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                [(p.channel_id, p.number, p.destination, p.reference, p.total, p.seq,
                  p.data_coding, p.data, p.at) for p in parts])
            stored: list[InboundPart] = []
            for key in dict.fromkeys(p.key for p in parts):
                stored += [_inbound_part(r) for r in conn.execute(
                    "SELECT channel_id, number, destination, reference, total, seq,"
                    " data_coding, data, at FROM inbound_parts WHERE channel_id = ?"
                    " AND number = ? AND destination = ? AND reference = ? AND total = ?"
                    " ORDER BY seq", key)]
            return stored

        return await self._write(job) if parts else []

    async def due_inbound_parts(self, channel_id: int, before: float,
                                limit: int) -> list[InboundPart]:
        return [_inbound_part(r) for r in self._read().execute(
            "SELECT p.channel_id, p.number, p.destination, p.reference, p.total, p.seq,"
            " p.data_coding, p.data, p.at FROM inbound_parts p JOIN"
            " (SELECT number, destination, reference, total FROM inbound_parts"
            "  WHERE channel_id = ? GROUP BY number, destination, reference, total"
            "  HAVING min(at) < ? ORDER BY min(at) LIMIT ?) d"
            " ON d.number = p.number AND d.destination = p.destination"
            " AND d.reference = p.reference AND d.total = p.total"
            " WHERE p.channel_id = ? ORDER BY p.number, p.destination, p.reference,"
            " p.total, p.seq", (channel_id, before, limit, channel_id))]

    async def drop_inbound_parts(self, parts: Sequence[InboundPart]) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "DELETE FROM inbound_parts WHERE channel_id = ? AND number = ?"
                " AND destination = ? AND reference = ? AND total = ? AND seq = ?",
                [(*p.key, p.seq) for p in parts])

        if parts:
            await self._write(job)

    async def claim_inbound(
        self, limit: int, now: float, lease_seconds: float
    ) -> list[InboundForward]:
        if not self._finds(f"SELECT 1 FROM inbound_messages WHERE {_FORWARD_DUE} LIMIT 1", now):
            return []

        def job(conn: sqlite3.Connection) -> list[InboundForward]:
            rows = conn.execute(
                "UPDATE inbound_messages SET forward_at = ? WHERE id IN (SELECT id FROM"
                f" inbound_messages WHERE {_FORWARD_DUE} ORDER BY forward_at, id LIMIT ?)"
                " RETURNING id", (now + lease_seconds, now, limit)).fetchall()
            if not rows:
                return []
            return [InboundForward(r[0], r[1], r[10] or "", r[11] or "", r[12],
                                   inbound_record(r)) for r in conn.execute(
                "SELECT i.id, i.project_id, i.channel_id, i.number, i.body, i.type,"
                " i.provider_id, i.media_url, i.name, c.application, p.incoming_webhook_url,"
                " p.webhook_secret, i.forward_attempts, i.raw FROM inbound_messages i"
                " JOIN channels c ON c.id = i.channel_id JOIN projects p ON p.id = i.project_id"
                " WHERE i.id IN (SELECT value FROM json_each(?)) ORDER BY i.id",
                (json.dumps([r[0] for r in rows]),)).fetchall()]

        return await self._write(job)

    async def complete_inbound(self, ids: Sequence[int]) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE inbound_messages SET forward_at = NULL"
                         " WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(list(ids)),))

        if ids:
            await self._write(job)

    async def retry_inbound(
        self, ids: Sequence[int], now: float, schedule: Sequence[float],
        error: str | None = None,
    ) -> None:
        def job(conn: sqlite3.Connection) -> None:
            rows = conn.execute(
                "SELECT id, forward_attempts FROM inbound_messages"
                " WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(list(ids)),))
            conn.executemany(
                "UPDATE inbound_messages SET forward_attempts = ?, forward_at = ?,"
                " forward_error = coalesce(?, forward_error) WHERE id = ?",
                [(tries, None if tries > len(schedule) else now + schedule[tries - 1], error,
                  mid) for mid, tries in ((r[0], r[1] + 1) for r in rows.fetchall())])

        if ids:
            await self._write(job)


def _inbound_part(row: Sequence[Any]) -> InboundPart:
    return InboundPart(row[0], row[1], row[2], row[3], row[4], row[5], row[6], bytes(row[7]),
                       row[8])
