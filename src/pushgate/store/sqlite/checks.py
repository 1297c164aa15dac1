"""Picky's WhatsApp number filter in SQLite: a filter push and its checks in one writer job,
the dispatcher's claims and answers, the answers' delivery to the event webhook."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Sequence
from typing import Any

from pushgate.core.channels import ChannelSpec
from pushgate.core.checks import CheckPlan, GiveUp, NumberCheck, PendingCheck
from pushgate.core.models import AcceptResult
from pushgate.core.records import CheckForward, CheckReport
from pushgate.store.errors import InsufficientCredit
from pushgate.store.rows import CHECK_COLUMNS, check_report
from pushgate.store.sqlite.connection import SQLiteBase

#: The number checks whose report a forwarder may claim at ``?`` (now).
_REPORT_DUE = "forward_at <= ?"
# An answer's forward_at: now when the project has an event webhook, else NULL (kept only).
_FORWARD_AT = ("(SELECT CASE WHEN coalesce(p.webhook_url, '') <> '' THEN ? END FROM projects p"
               " WHERE p.id = number_checks.project_id)")


class SQLiteChecks(SQLiteBase):
    """Number checks."""

    async def accept_checks(self, project_id: int, channel: ChannelSpec, plan: CheckPlan,
                            now: float) -> AcceptResult:
        def job(conn: sqlite3.Connection) -> AcceptResult:
            total = plan.credit_total
            row = conn.execute(
                "UPDATE projects SET balance_micro = balance_micro - ? WHERE id = ?"
                " AND balance_micro >= ? RETURNING balance_micro",
                (total, project_id, total)).fetchone()
            if row is None:
                balance = conn.execute("SELECT balance_micro FROM projects WHERE id = ?",
                                       (project_id,)).fetchone()
                raise InsufficientCredit(total, int(balance[0]) if balance else 0)
            push_id = int(conn.execute(
                "INSERT INTO pushes (project_id, channel_id, priority, entries, accepted,"
                " credit_micro, created_at) VALUES (?, ?, 0, ?, ?, ?, ?)",
                (project_id, channel.id, plan.total_entries, len(plan.accepted), total,
                 now)).lastrowid or 0)
            if total:
                conn.execute(
                    "INSERT INTO credit_ledger (project_id, delta_micro, reason, push_id, at)"
                    " VALUES (?, ?, 'number filter', ?, ?)", (project_id, -total, push_id, now))
            ids = [int(conn.execute(
                "INSERT INTO number_checks (push_id, project_id, channel_id, number,"
                " created_at, check_at) VALUES (?, ?, ?, ?, ?, ?)",
                (push_id, project_id, channel.id, number, now, now)).lastrowid or 0)
                for _index, number in plan.accepted]
            return AcceptResult(push_id=push_id, message_ids=ids, balance_micro=int(row[0]))

        return await self._write(job)

    async def claim_checks(self, channel_ids: Sequence[int], limit: int, now: float,
                           lease_seconds: float) -> list[PendingCheck]:
        def job(conn: sqlite3.Connection) -> list[PendingCheck]:
            rows = conn.execute(
                "UPDATE number_checks SET check_at = ?, attempts = attempts + 1"
                " WHERE id IN (SELECT id FROM number_checks WHERE channel_id IN"
                " (SELECT value FROM json_each(?)) AND check_at <= ? ORDER BY check_at, id"
                " LIMIT ?) RETURNING id, push_id, channel_id, number",
                (now + lease_seconds, json.dumps(list(channel_ids)), now, limit)).fetchall()
            return sorted((PendingCheck(*r) for r in rows), key=lambda c: c.id)

        # Every runner step asks: nearly always nothing is due.
        if not channel_ids or not self._finds(
                "SELECT 1 FROM number_checks WHERE channel_id IN (SELECT value FROM json_each(?))"
                " AND check_at <= ? LIMIT 1", json.dumps(list(channel_ids)), now):
            return []
        return await self._write(job)

    async def record_checks(self, answers: Sequence[tuple[int, NumberCheck]],
                            now: float) -> int:
        def job(conn: sqlite3.Connection) -> int:
            written = 0
            for check_id, answer in answers:
                written += conn.execute(
                    "UPDATE number_checks SET on_whatsapp = ?, checked_by = ?, chat_id = ?,"
                    f" checked_at = ?, check_at = NULL, forward_at = {_FORWARD_AT}"
                    " WHERE id = ? AND checked_at IS NULL",
                    (answer.on_whatsapp, answer.checked_by, answer.chat_id, now, now,
                     check_id)).rowcount
            return written

        return await self._write(job) if answers else 0

    async def give_up_checks(self, give_up: GiveUp, now: float, limit: int) -> int:
        def job(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "UPDATE number_checks SET on_whatsapp = NULL, checked_by = ?, reason = ?,"
                f" chat_id = NULL, checked_at = ?, check_at = NULL, forward_at = {_FORWARD_AT}"
                " WHERE id IN (SELECT id FROM number_checks WHERE check_at IS NOT NULL"
                " AND created_at <= ? ORDER BY created_at, id LIMIT ?)",
                (give_up.checked_by, give_up.reason, now, now, give_up.cutoff,
                 limit)).rowcount

        # Asked at every renewal: a read spares the writer a job when nothing is that old.
        due = self._read().execute(
            "SELECT 1 FROM number_checks WHERE check_at IS NOT NULL AND created_at <= ?"
            " LIMIT 1", (give_up.cutoff,)).fetchone()
        return await self._write(job) if due else 0

    async def iter_push_checks(self, project_id: int, push_id: int,
                               chunk: int = 1000) -> AsyncIterator[list[CheckReport]]:
        last = 0
        while True:
            rows = self._read().execute(
                f"SELECT {CHECK_COLUMNS} FROM number_checks k WHERE k.push_id = ?"
                " AND k.project_id = ? AND k.id > ? ORDER BY k.id LIMIT ?",
                (push_id, project_id, last, chunk)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [check_report(r) for r in rows]
            if len(rows) < chunk:
                return
            await asyncio.sleep(0)

    async def claim_check_reports(self, limit: int, now: float,
                                  lease_seconds: float) -> list[CheckForward]:
        if not self._finds(f"SELECT 1 FROM number_checks WHERE {_REPORT_DUE} LIMIT 1", now):
            return []

        def job(conn: sqlite3.Connection) -> list[CheckForward]:
            rows = conn.execute(
                "UPDATE number_checks SET forward_at = ? WHERE id IN (SELECT id FROM"
                f" number_checks WHERE {_REPORT_DUE} ORDER BY forward_at, id LIMIT ?)"
                " RETURNING id", (now + lease_seconds, now, limit)).fetchall()
            if not rows:
                return []
            return [_forward(r) for r in conn.execute(
                f"SELECT {CHECK_COLUMNS}, p.webhook_url, p.webhook_secret,"
                " k.forward_attempts FROM number_checks k JOIN projects p"
                " ON p.id = k.project_id WHERE k.id IN (SELECT value FROM json_each(?))"
                " ORDER BY k.id", (json.dumps([r[0] for r in rows]),)).fetchall()]

        return await self._write(job)

    async def complete_check_reports(self, ids: Sequence[int]) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE number_checks SET forward_at = NULL"
                         " WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(list(ids)),))

        if ids:
            await self._write(job)

    async def retry_check_reports(self, ids: Sequence[int], now: float,
                                  schedule: Sequence[float]) -> None:
        def job(conn: sqlite3.Connection) -> None:
            rows = conn.execute(
                "SELECT id, forward_attempts FROM number_checks"
                " WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(list(ids)),))
            conn.executemany(
                "UPDATE number_checks SET forward_attempts = ?, forward_at = ? WHERE id = ?",
                [(tries, None if tries > len(schedule) else now + schedule[tries - 1], cid)
                 for cid, tries in ((r[0], r[1] + 1) for r in rows.fetchall())])

        if ids:
            await self._write(job)


def _forward(row: Sequence[Any]) -> CheckForward:
    return CheckForward(row[0], row[11] or "", row[12] or "", row[13], check_report(row))
