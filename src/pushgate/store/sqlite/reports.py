"""Reads for reports in SQLite: a push and its messages, one message's history, media, the
sandbox inbox and a channel's queue counts.
"""

from __future__ import annotations

import asyncio
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
from pushgate.store.sqlite.common import _LIVE
from pushgate.store.sqlite.connection import SQLiteBase


class SQLiteReports(SQLiteBase):
    """Reads behind the report endpoints."""

    async def get_push(self, project_id: int, push_id: int) -> PushRecord | None:
        conn = self._read()
        row = conn.execute(
            f"SELECT {PUSH_COLUMNS} FROM pushes WHERE id = ? AND project_id = ?",
            (push_id, project_id)).fetchone()
        if row is None:
            return None
        counts = dict(conn.execute(
            "SELECT state, count(*) FROM messages WHERE push_id = ? GROUP BY state",
            (push_id,)).fetchall())
        return push_record(row, counts)

    async def iter_push_messages(
        self, project_id: int, push_id: int, chunk: int = 1000
    ) -> AsyncIterator[list[MessageRecord]]:
        last = 0
        while True:
            rows = self._read().execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE push_id = ? AND project_id = ?"
                " AND id > ? ORDER BY id LIMIT ?",
                (push_id, project_id, last, chunk)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [message_record(r) for r in rows]
            if len(rows) < chunk:
                return
            await asyncio.sleep(0)

    async def list_pushes(self, project_id: int, before: int | None,
                          limit: int) -> list[PushRecord]:
        conn = self._read()
        rows = conn.execute(
            f"SELECT {PUSH_COLUMNS} FROM pushes WHERE project_id = ? AND id < ?"
            " ORDER BY id DESC LIMIT ?",
            (project_id, MAX_ID if before is None else before, limit)).fetchall()
        counts: dict[int, dict[str, int]] = {row[0]: {} for row in rows}
        if rows:
            marks = ", ".join("?" * len(rows))
            for push_id, state, n in conn.execute(
                    f"SELECT push_id, state, count(*) FROM messages WHERE push_id IN ({marks})"
                    " GROUP BY push_id, state", [row[0] for row in rows]).fetchall():
                counts[push_id][state] = n
        return [push_record(row, counts[row[0]]) for row in rows]

    async def push_messages(self, project_id: int, push_id: int, after: int,
                            limit: int) -> list[MessageRecord]:
        rows = self._read().execute(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE push_id = ? AND project_id = ?"
            " AND id > ? ORDER BY id LIMIT ?", (push_id, project_id, after, limit)).fetchall()
        return [message_record(r) for r in rows]

    async def project_counts_since(self, project_id: int, since: float) -> dict[str, int]:
        return dict(self._read().execute(
            "SELECT m.state, count(*) FROM pushes p JOIN messages m ON m.push_id = p.id"
            " WHERE p.project_id = ? AND p.created_at >= ? GROUP BY m.state",
            (project_id, since)).fetchall())

    async def push_project(self, push_id: int) -> int | None:
        row = self._read().execute(
            "SELECT project_id FROM pushes WHERE id = ?", (push_id,)).fetchone()
        return None if row is None else int(row[0])

    async def get_message(self, project_id: int, message_id: int) -> MessageDetail | None:
        conn = self._read()
        row = conn.execute(
            f"SELECT {MESSAGE_DETAIL_COLUMNS} FROM messages WHERE id = ? AND project_id = ?",
            (message_id, project_id)).fetchone()
        if row is None:
            return None
        events = conn.execute(
            "SELECT state, at, detail FROM message_events WHERE message_id = ? ORDER BY id",
            (message_id,)).fetchall()
        return message_detail(row, events)

    async def find_messages(self, project_id: int, *, number: str | None = None,
                            reference: str | None = None, before: int | None = None,
                            limit: int = 50) -> FoundPage:
        column, value = ("number", number) if number is not None else ("reference", reference)
        if value is None:
            return FoundPage([], None)
        conn = self._read()
        newest = None if before is not None else conn.execute(
            "SELECT max(id) FROM messages").fetchall()[0][0]
        # One window of ids a call, read through the primary key: the read runs on the event
        # loop's thread, so its time is bounded whatever the table's size.
        window = search_window(before, newest)
        if window is None:
            return FoundPage([], None)
        top, floor = window
        # `column` is one of two names fixed above, never the caller's text.
        rows = conn.execute(
            f"SELECT m.push_id, m.created_at, {M_MESSAGE_COLUMNS} FROM messages m"
            f" WHERE m.id < ? AND m.id >= ? AND m.project_id = ? AND m.{column} = ?"
            " ORDER BY m.id DESC LIMIT ?",
            (top, floor, project_id, value, limit + 1)).fetchall()
        found = [FoundMessage(int(r[0]), float(r[1]), message_record(r[2:])) for r in rows]
        older = None
        if search_asks_older(len(found), limit, floor):
            older = conn.execute("SELECT max(id) FROM messages WHERE id < ?",
                                 (floor,)).fetchall()[0][0]
        return FoundPage.of(found, limit, None if older is None else floor)

    async def credit_history(self, project_id: int, before: int | None,
                             limit: int) -> list[LedgerEntry]:
        rows = self._read().execute(
            "SELECT id, delta_micro, reason, push_id, at FROM credit_ledger"
            " WHERE project_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
            (project_id, MAX_ID if before is None else before, limit)).fetchall()
        return [LedgerEntry(int(r[0]), int(r[1]), str(r[2]),
                            None if r[3] is None else int(r[3]), float(r[4])) for r in rows]

    async def get_media(self, media_id: int) -> tuple[str, bytes] | None:
        row = self._read().execute(
            "SELECT content_type, data FROM media WHERE id = ?", (media_id,)).fetchone()
        return (row[0], bytes(row[1])) if row else None

    async def sandbox_inbox(self, project_id: int, limit: int) -> list[MessageRecord]:
        rows = self._read().execute(
            f"SELECT {M_MESSAGE_COLUMNS} FROM messages m JOIN channels c ON c.id = m.channel_id"
            " WHERE c.project_id = ? AND c.kind = 'sandbox'"
            " AND m.state NOT IN ('queued', 'sending')"
            " ORDER BY m.updated_at DESC, m.id DESC LIMIT ?", (project_id, limit)).fetchall()
        return [message_record(r) for r in rows]

    async def channel_queue_counts(self, channel_id: int) -> dict[str, int]:
        counts = dict(self._read().execute(
            f"SELECT state, count(*) FROM messages WHERE channel_id = ? AND {_LIVE}"
            " GROUP BY state", (channel_id,)).fetchall())
        return {"queued": int(counts.get("queued", 0)), "sending": int(counts.get("sending", 0))}
