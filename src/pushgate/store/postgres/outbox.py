"""The webhook outbox in PostgreSQL: claiming due rows per project under a lease, completing
and rescheduling them.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from pushgate.core.models import (
    OutboxBatch,
    WebhookDelivery,
)
from pushgate.store.postgres.connection import PostgresBase
from pushgate.store.rows import OUTBOX_COLUMNS, outbox_batches


class PostgresOutbox(PostgresBase):
    """The webhook outbox."""

    async def claim_outbox(
        self, worker_id: str, limit: int, now: float, lease_seconds: float
    ) -> list[OutboxBatch]:
        async def job(conn: asyncpg.Connection) -> list[OutboxBatch]:
            # Pushing next_attempt_at past the lease is the lease: a crashed deliverer's items
            # come back when it passes, and a successful one deletes them.
            rows = await conn.fetch(
                "WITH c AS (SELECT id FROM outbox WHERE NOT dead AND next_attempt_at <= $1"
                " ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED),"
                " u AS (UPDATE outbox o SET next_attempt_at = $3 FROM c WHERE o.id = c.id"
                " RETURNING o.id, o.project_id, o.attempts, o.state, o.at, o.error_code,"
                " o.error_message, o.message_id)"
                f" SELECT {OUTBOX_COLUMNS} FROM u o JOIN messages m ON m.id = o.message_id"
                " JOIN projects p ON p.id = o.project_id ORDER BY o.id",
                now, limit, now + lease_seconds)
            batches, orphaned = outbox_batches(rows)
            if orphaned:
                await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", orphaned)
            return batches

        return await self._tx(job)

    async def complete_outbox(self, ids: Sequence[int]) -> None:
        async def job(conn: asyncpg.Connection) -> None:
            await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", list(ids))

        if ids:
            await self._tx(job)

    async def retry_outbox(
        self, ids: Sequence[int], now: float, schedule: Sequence[float],
        error: str | None = None,
    ) -> None:
        async def job(conn: asyncpg.Connection) -> None:
            # `attempts` on the right is the value before this update; the schedule array is
            # 1-based: try n waits schedule[n].
            await conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, dead = attempts + 1 > $3,"
                " next_attempt_at = CASE WHEN attempts + 1 > $3 THEN $2"
                " ELSE $2 + ($4::float8[])[attempts + 1] END,"
                " last_error = coalesce($5, last_error) WHERE id = ANY($1::bigint[])",
                list(ids), now, len(schedule), [float(s) for s in schedule], error)

        if ids:
            await self._tx(job)

    async def outbox_stats(self) -> dict[str, int]:
        row = await self._fetchrow(
            "SELECT count(*) FILTER (WHERE NOT dead), count(*) FILTER (WHERE dead) FROM outbox")
        assert row is not None
        return {"pending": int(row[0]), "dead": int(row[1])}

    async def webhook_deliveries(self, project_id: int, limit: int) -> list[WebhookDelivery]:
        events = await self._fetch(
            "SELECT id, message_id, state, at, attempts, next_attempt_at, dead, last_error"
            " FROM outbox"
            " WHERE project_id = $1 ORDER BY id DESC LIMIT $2", project_id, limit)
        incoming = await self._fetch(
            "SELECT id, number, at, forward_attempts, forward_at, forward_error"
            " FROM inbound_messages"
            " WHERE project_id = $1 AND forward_at IS NOT NULL ORDER BY id DESC LIMIT $2",
            project_id, limit)
        return ([WebhookDelivery("event", r[0], f"message {r[1]} {r[2]}", r[3], r[4],
                                 None if r[6] else r[5], r[7]) for r in events]
                + [WebhookDelivery("incoming", r[0], r[1], r[2], r[3], r[4], r[5])
                   for r in incoming])

    async def retry_webhooks_now(self, project_id: int, now: float, kind: str | None = None,
                                 item_id: int | None = None) -> int:
        async def job(conn: asyncpg.Connection) -> int:
            moved = 0
            # $3 NULL: every one of the project's.
            if kind in (None, "event"):
                status = await conn.execute(
                    "UPDATE outbox SET next_attempt_at = $1, dead = false WHERE project_id = $2"
                    " AND (attempts > 0 OR dead) AND ($3::bigint IS NULL OR id = $3)",
                    now, project_id, item_id)
                moved += int(status.split()[-1])
            if kind in (None, "incoming"):
                status = await conn.execute(
                    "UPDATE inbound_messages SET forward_at = $1 WHERE project_id = $2"
                    " AND forward_at IS NOT NULL AND forward_attempts > 0"
                    " AND ($3::bigint IS NULL OR id = $3)", now, project_id, item_id)
                moved += int(status.split()[-1])
            return moved

        return await self._tx(job)
