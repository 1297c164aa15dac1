"""Reads for reports in PostgreSQL: a push and its messages, one message's history, media,
the sandbox inbox and a channel's queue counts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from pushgate.core.push import MAX_ID
from pushgate.core.records import (
    FoundMessage,
    FoundPage,
    LedgerEntry,
    MessageDetail,
    MessageRecord,
    PushRecord,
)
from pushgate.store.postgres.connection import PostgresBase
from pushgate.store.rows import (
    M_MESSAGE_COLUMNS,
    MESSAGE_COLUMNS,
    MESSAGE_DETAIL_COLUMNS,
    PUSH_COLUMNS,
    message_detail,
    message_record,
    push_record,
    search_asks_older,
    search_window,
)


class PostgresReports(PostgresBase):
    """Reads behind the report endpoints."""

    async def get_push(self, project_id: int, push_id: int) -> PushRecord | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"SELECT {PUSH_COLUMNS} FROM pushes WHERE id = $1 AND project_id = $2",
                push_id, project_id)
            if row is None:
                return None
            counts = {r[0]: r[1] for r in await conn.fetch(
                "SELECT state, count(*) FROM messages WHERE push_id = $1 GROUP BY state",
                push_id)}
        return push_record(row, counts)

    async def iter_push_messages(
        self, project_id: int, push_id: int, chunk: int = 1000
    ) -> AsyncIterator[list[MessageRecord]]:
        last = 0
        while True:
            rows = await self._fetch(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE push_id = $1"
                " AND project_id = $2 AND id > $3 ORDER BY id LIMIT $4",
                push_id, project_id, last, chunk)
            if not rows:
                return
            last = rows[-1][0]
            yield [message_record(r) for r in rows]
            if len(rows) < chunk:
                return

    async def list_pushes(self, project_id: int, before: int | None,
                          limit: int) -> list[PushRecord]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {PUSH_COLUMNS} FROM pushes WHERE project_id = $1 AND id < $2"
                " ORDER BY id DESC LIMIT $3",
                project_id, MAX_ID if before is None else before, limit)
            counts: dict[int, dict[str, int]] = {row[0]: {} for row in rows}
            if rows:
                for push_id, state, n in await conn.fetch(
                        "SELECT push_id, state, count(*) FROM messages"
                        " WHERE push_id = ANY($1::bigint[]) GROUP BY push_id, state",
                        [row[0] for row in rows]):
                    counts[push_id][state] = n
        return [push_record(row, counts[row[0]]) for row in rows]

    async def push_messages(self, project_id: int, push_id: int, after: int,
                            limit: int) -> list[MessageRecord]:
        rows = await self._fetch(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE push_id = $1"
            " AND project_id = $2 AND id > $3 ORDER BY id LIMIT $4",
            push_id, project_id, after, limit)
        return [message_record(r) for r in rows]

    async def project_counts_since(self, project_id: int, since: float) -> dict[str, int]:
        rows = await self._fetch(
            "SELECT m.state, count(*) FROM pushes p JOIN messages m ON m.push_id = p.id"
            " WHERE p.project_id = $1 AND p.created_at >= $2 GROUP BY m.state",
            project_id, since)
        return {r[0]: r[1] for r in rows}

    async def push_project(self, push_id: int) -> int | None:
        row = await self._fetchrow("SELECT project_id FROM pushes WHERE id = $1", push_id)
        return None if row is None else int(row[0])

    async def get_message(self, project_id: int, message_id: int) -> MessageDetail | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"SELECT {MESSAGE_DETAIL_COLUMNS} FROM messages"
                " WHERE id = $1 AND project_id = $2", message_id, project_id)
            if row is None:
                return None
            events = await conn.fetch(
                "SELECT state, at, detail FROM message_events WHERE message_id = $1"
                " ORDER BY id", message_id)
        return message_detail(row, [tuple(e) for e in events])

    async def find_messages(self, project_id: int, *, number: str | None = None,
                            reference: str | None = None, before: int | None = None,
                            limit: int = 50) -> FoundPage:
        column, value = ("number", number) if number is not None else ("reference", reference)
        if value is None:
            return FoundPage([], None)
        newest = None if before is not None else await self._fetchval(
            "SELECT max(id) FROM messages")
        # One window of ids a call, read through the primary key.
        window = search_window(before, newest)
        if window is None:
            return FoundPage([], None)
        top, floor = window
        # `column` is one of two names fixed above, never the caller's text.
        rows = await self._fetch(
            f"SELECT m.push_id, m.created_at, {M_MESSAGE_COLUMNS} FROM messages m"
            f" WHERE m.id < $1 AND m.id >= $2 AND m.project_id = $3 AND m.{column} = $4"
            " ORDER BY m.id DESC LIMIT $5",
            top, floor, project_id, value, limit + 1)
        found = [FoundMessage(int(r[0]), float(r[1]), message_record(tuple(r)[2:]))
                 for r in rows]
        older = None
        if search_asks_older(len(found), limit, floor):
            older = await self._fetchval("SELECT max(id) FROM messages WHERE id < $1", floor)
        return FoundPage.of(found, limit, None if older is None else floor)

    async def credit_history(self, project_id: int, before: int | None,
                             limit: int) -> list[LedgerEntry]:
        rows = await self._fetch(
            "SELECT id, delta_micro, reason, push_id, at FROM credit_ledger"
            " WHERE project_id = $1 AND id < $2::bigint ORDER BY id DESC LIMIT $3",
            project_id, MAX_ID if before is None else before, limit)
        return [LedgerEntry(int(r[0]), int(r[1]), str(r[2]),
                            None if r[3] is None else int(r[3]), float(r[4])) for r in rows]

    async def get_media(self, media_id: int) -> tuple[str, bytes] | None:
        row = await self._fetchrow(
            "SELECT content_type, data FROM media WHERE id = $1", media_id)
        return (row[0], bytes(row[1])) if row else None

    async def sandbox_inbox(self, project_id: int, limit: int) -> list[MessageRecord]:
        rows = await self._fetch(
            f"SELECT {M_MESSAGE_COLUMNS} FROM messages m JOIN channels c ON c.id = m.channel_id"
            " WHERE c.project_id = $1 AND c.kind = 'sandbox'"
            " AND m.state NOT IN ('queued', 'sending')"
            " ORDER BY m.updated_at DESC, m.id DESC LIMIT $2", project_id, limit)
        return [message_record(r) for r in rows]

    async def channel_queue_counts(self, channel_id: int) -> dict[str, int]:
        rows = await self._fetch(
            "SELECT state, count(*) FROM messages WHERE channel_id = $1"
            " AND state IN ('queued', 'sending') GROUP BY state", channel_id)
        counts = {r[0]: int(r[1]) for r in rows}
        return {"queued": counts.get("queued", 0), "sending": counts.get("sending", 0)}
