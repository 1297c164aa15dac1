"""Picky's WhatsApp number filter in PostgreSQL: a filter push and its checks in one
transaction (ids drawn from the sequence in bulk, the debit last), the dispatcher's claims and
answers (``SKIP LOCKED``), the answers' delivery to the event webhook."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg

from pushgate.core.channels import ChannelSpec
from pushgate.core.checks import CheckPlan, GiveUp, NumberCheck, PendingCheck
from pushgate.core.models import AcceptResult
from pushgate.core.records import CheckForward, CheckReport
from pushgate.store.errors import InsufficientCredit
from pushgate.store.postgres.connection import PostgresBase
from pushgate.store.postgres.queue import NOTIFY_CHANNEL
from pushgate.store.rows import CHECK_COLUMNS, check_report


class PostgresChecks(PostgresBase):
    """Number checks."""

    async def accept_checks(self, project_id: int, channel: ChannelSpec, plan: CheckPlan,
                            now: float) -> AcceptResult:
        async def job(conn: asyncpg.Connection) -> AcceptResult:
            total = plan.credit_total
            row = await conn.fetchrow(
                "WITH p AS (INSERT INTO pushes (project_id, channel_id, priority, entries,"
                " accepted, credit_micro, created_at) VALUES ($1, $2, 0, $3, $4, $5, $6)"
                " RETURNING id) SELECT (SELECT id FROM p), array(SELECT"
                " nextval(pg_get_serial_sequence('number_checks', 'id'))"
                " FROM generate_series(1, $4))",
                project_id, channel.id, plan.total_entries, len(plan.accepted), total, now)
            push_id, ids = int(row[0]), sorted(row[1])
            await conn.execute(
                "INSERT INTO number_checks (id, push_id, project_id, channel_id, number,"
                " created_at, check_at) SELECT u.id, $3, $4, $5, u.number, $6, $6"
                " FROM unnest($1::bigint[], $2::text[]) AS u(id, number)",
                ids, [number for _index, number in plan.accepted], push_id, project_id,
                channel.id, now)
            debit = await conn.fetchrow(
                "WITH d AS (UPDATE projects SET balance_micro = balance_micro - $1"
                " WHERE id = $2 AND balance_micro >= $1 RETURNING balance_micro),"
                " l AS (INSERT INTO credit_ledger (project_id, delta_micro, reason, push_id,"
                " at) SELECT $2, -$1, 'number filter', $3, $4 FROM d WHERE $1 <> 0)"
                " SELECT balance_micro, pg_notify($5, $6) FROM d",
                total, project_id, push_id, now, NOTIFY_CHANNEL, str(channel.id))
            if debit is None:
                balance = await conn.fetchval(
                    "SELECT balance_micro FROM projects WHERE id = $1", project_id)
                raise InsufficientCredit(total, int(balance or 0))
            return AcceptResult(push_id=push_id, message_ids=ids, balance_micro=int(debit[0]))

        return await self._tx(job)

    async def claim_checks(self, channel_ids: Sequence[int], limit: int, now: float,
                           lease_seconds: float) -> list[PendingCheck]:
        if not channel_ids:
            return []
        rows = await self._fetch(
            "UPDATE number_checks SET check_at = $1, attempts = attempts + 1 WHERE id IN"
            " (SELECT id FROM number_checks WHERE channel_id = ANY($2::int[])"
            " AND check_at <= $3 ORDER BY check_at, id LIMIT $4 FOR UPDATE SKIP LOCKED)"
            " RETURNING id, push_id, channel_id, number",
            now + lease_seconds, list(channel_ids), now, limit)
        return sorted((PendingCheck(*r) for r in rows), key=lambda c: c.id)

    async def record_checks(self, answers: Sequence[tuple[int, NumberCheck]],
                            now: float) -> int:
        if not answers:
            return 0
        rows = await self._fetch(
            "UPDATE number_checks k SET on_whatsapp = u.on_whatsapp, checked_by = u.checked_by,"
            " chat_id = u.chat_id, checked_at = $5::float8, check_at = NULL,"
            " forward_at = CASE WHEN coalesce(p.webhook_url, '') <> '' THEN $5::float8 END"
            " FROM unnest($1::bigint[], $2::bool[], $3::text[], $4::text[])"
            " AS u(id, on_whatsapp, checked_by, chat_id), projects p"
            " WHERE k.id = u.id AND p.id = k.project_id AND k.checked_at IS NULL"
            " RETURNING k.id",
            [i for i, _ in answers], [a.on_whatsapp for _, a in answers],
            [a.checked_by for _, a in answers], [a.chat_id for _, a in answers], now)
        return len(rows)

    async def give_up_checks(self, give_up: GiveUp, now: float, limit: int) -> int:
        rows = await self._fetch(
            "UPDATE number_checks k SET on_whatsapp = NULL, checked_by = $1, reason = $2,"
            " chat_id = NULL, checked_at = $3::float8, check_at = NULL,"
            " forward_at = CASE WHEN coalesce(p.webhook_url, '') <> '' THEN $3::float8 END"
            " FROM projects p WHERE p.id = k.project_id AND k.id IN (SELECT id"
            " FROM number_checks WHERE check_at IS NOT NULL AND created_at <= $4"
            " ORDER BY created_at, id LIMIT $5 FOR UPDATE SKIP LOCKED) RETURNING k.id",
            give_up.checked_by, give_up.reason, now, give_up.cutoff, limit)
        return len(rows)

    async def iter_push_checks(self, project_id: int, push_id: int,
                               chunk: int = 1000) -> AsyncIterator[list[CheckReport]]:
        last = 0
        while True:
            rows = await self._fetch(
                f"SELECT {CHECK_COLUMNS} FROM number_checks k WHERE k.push_id = $1"
                " AND k.project_id = $2 AND k.id > $3 ORDER BY k.id LIMIT $4",
                push_id, project_id, last, chunk)
            if not rows:
                return
            last = rows[-1][0]
            yield [check_report(r) for r in rows]
            if len(rows) < chunk:
                return

    async def claim_check_reports(self, limit: int, now: float,
                                  lease_seconds: float) -> list[CheckForward]:
        rows = await self._fetch(
            "WITH c AS (UPDATE number_checks SET forward_at = $1 WHERE id IN"
            " (SELECT id FROM number_checks WHERE forward_at <= $2"
            " ORDER BY forward_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING *)"
            f" SELECT {CHECK_COLUMNS}, p.webhook_url, p.webhook_secret, k.forward_attempts"
            " FROM c k JOIN projects p ON p.id = k.project_id ORDER BY k.id",
            now + lease_seconds, now, limit)
        return [_forward(r) for r in rows]

    async def complete_check_reports(self, ids: Sequence[int]) -> None:
        if ids:
            await self._fetch("UPDATE number_checks SET forward_at = NULL"
                              " WHERE id = ANY($1::bigint[]) RETURNING id", list(ids))

    async def retry_check_reports(self, ids: Sequence[int], now: float,
                                  schedule: Sequence[float]) -> None:
        async def job(conn: asyncpg.Connection) -> None:
            rows = await conn.fetch(
                "SELECT id, forward_attempts FROM number_checks WHERE id = ANY($1::bigint[])"
                " ORDER BY id FOR UPDATE", list(ids))
            await conn.executemany(
                "UPDATE number_checks SET forward_attempts = $1, forward_at = $2 WHERE id = $3",
                [(tries, None if tries > len(schedule) else now + schedule[tries - 1], cid)
                 for cid, tries in ((r[0], r[1] + 1) for r in rows)])

        if ids:
            await self._tx(job)


def _forward(row: Sequence[Any]) -> CheckForward:
    return CheckForward(row[0], row[11] or "", row[12] or "", row[13], check_report(row))
