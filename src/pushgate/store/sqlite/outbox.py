"""The webhook outbox in SQLite: claiming due rows per project under a lease, completing and
rescheduling them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from pushgate.core.models import (
    OutboxBatch,
    WebhookDelivery,
)
from pushgate.store.rows import OUTBOX_COLUMNS, outbox_batches
from pushgate.store.sqlite.connection import SQLiteBase


class SQLiteOutbox(SQLiteBase):
    """The webhook outbox."""

    async def claim_outbox(
        self, worker_id: str, limit: int, now: float, lease_seconds: float
    ) -> list[OutboxBatch]:
        if not self._finds(f"SELECT 1 FROM outbox WHERE {_OUTBOX_DUE} LIMIT 1", now):
            return []
        return await self._write(_claim_outbox_job, limit, now, lease_seconds)

    async def complete_outbox(self, ids: Sequence[int]) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?))",
                         (json.dumps(list(ids)),))

        if ids:
            await self._write(job)

    async def retry_outbox(
        self, ids: Sequence[int], now: float, schedule: Sequence[float],
        error: str | None = None,
    ) -> None:
        def job(conn: sqlite3.Connection) -> None:
            rows = conn.execute(
                "SELECT id, attempts FROM outbox WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(list(ids)),)).fetchall()
            updates = []
            for outbox_id, attempts in rows:
                tries = attempts + 1
                if tries > len(schedule):
                    updates.append((tries, now, True, error, outbox_id))
                else:
                    updates.append((tries, now + schedule[tries - 1], False, error, outbox_id))
            conn.executemany(
                "UPDATE outbox SET attempts = ?, next_attempt_at = ?, dead = ?,"
                " last_error = coalesce(?, last_error) WHERE id = ?", updates)

        if ids:
            await self._write(job)

    async def outbox_stats(self) -> dict[str, int]:
        row = self._read().execute(
            "SELECT coalesce(sum(dead = 0), 0), coalesce(sum(dead = 1), 0) FROM outbox"
        ).fetchone()
        return {"pending": int(row[0]), "dead": int(row[1])}

    async def webhook_deliveries(self, project_id: int, limit: int) -> list[WebhookDelivery]:
        conn = self._read()
        events = conn.execute(
            "SELECT id, message_id, state, at, attempts, next_attempt_at, dead, last_error"
            " FROM outbox"
            " WHERE project_id = ? ORDER BY id DESC LIMIT ?", (project_id, limit)).fetchall()
        # `forward_at IS NOT NULL` repeated: the partial index `inbound_waiting`.
        incoming = conn.execute(
            "SELECT id, number, at, forward_attempts, forward_at, forward_error"
            " FROM inbound_messages"
            " WHERE project_id = ? AND forward_at IS NOT NULL ORDER BY id DESC LIMIT ?",
            (project_id, limit)).fetchall()
        return ([WebhookDelivery("event", r[0], f"message {r[1]} {r[2]}", r[3], r[4],
                                 None if r[6] else r[5], r[7]) for r in events]
                + [WebhookDelivery("incoming", r[0], r[1], r[2], r[3], r[4], r[5])
                   for r in incoming])

    async def retry_webhooks_now(self, project_id: int, now: float, kind: str | None = None,
                                 item_id: int | None = None) -> int:
        one = " AND id = ?" if item_id is not None else ""
        extra = (item_id,) if item_id is not None else ()

        def job(conn: sqlite3.Connection) -> int:
            moved = 0
            if kind in (None, "event"):
                moved += conn.execute(
                    "UPDATE outbox SET next_attempt_at = ?, dead = 0 WHERE project_id = ?"
                    f" AND (attempts > 0 OR dead){one}", (now, project_id, *extra)).rowcount
            if kind in (None, "incoming"):
                moved += conn.execute(
                    "UPDATE inbound_messages SET forward_at = ? WHERE project_id = ?"
                    f" AND forward_at IS NOT NULL AND forward_attempts > 0{one}",
                    (now, project_id, *extra)).rowcount
            return moved

        return await self._write(job)


#: The outbox rows a deliverer may claim at ``?`` (now). ``dead = 0``, not ``NOT dead``: an
#: equality lets SQLite search ``outbox_ready`` in order, where ``NOT dead`` scanned the whole
#: index, dead rows included, and sorted what it found.
_OUTBOX_DUE = "dead = 0 AND next_attempt_at <= ?"


def _claim_outbox_job(
    conn: sqlite3.Connection, limit: int, now: float, lease_seconds: float
) -> list[OutboxBatch]:
    # Pushing next_attempt_at past the lease is the lease: a crashed deliverer's items come
    # back when it passes, and a successful one deletes them.
    ids = [r[0] for r in conn.execute(
        "UPDATE outbox SET next_attempt_at = ? WHERE id IN (SELECT id FROM outbox"
        f" WHERE {_OUTBOX_DUE} ORDER BY next_attempt_at, id LIMIT ?)"
        " RETURNING id", (now + lease_seconds, now, limit)).fetchall()]
    if not ids:
        return []
    rows = conn.execute(
        f"SELECT {OUTBOX_COLUMNS} FROM outbox o"
        " JOIN messages m ON m.id = o.message_id JOIN projects p ON p.id = o.project_id"
        " WHERE o.id IN (SELECT value FROM json_each(?)) ORDER BY o.id",
        (json.dumps(ids),)).fetchall()
    batches, orphaned = outbox_batches(rows)
    if orphaned:
        conn.execute("DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?))",
                     (json.dumps(orphaned),))
    return batches
