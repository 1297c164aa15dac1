"""Send outcomes in SQLite: recording a batch's results (submitted, retry, defer, fail and
refund), expiring messages past their validity, cancelling a channel's queue or a push.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from pushgate import metrics
from pushgate.core.models import SendResult
from pushgate.core.outcomes import (
    EXPIRED_UNCONFIRMED,
    PUSH_CANCELLED,
    VALIDITY_ENDED,
    HeldMessage,
    OutcomePlan,
    Settled,
    SettlePlan,
    plan_cancellation,
    plan_expiry,
    plan_outcomes,
    provider_refs,
)
from pushgate.core.policy import (
    EARLY_UPDATE_TTL,
    EXPIRY_RECHECK_SECONDS,
    RetryPolicy,
)
from pushgate.store.sqlite.common import (
    _LIVE,
    _add_events,
    _add_outbox,
    _refund,
    _webhook_projects,
)
from pushgate.store.sqlite.connection import SQLiteBase, replayable
from pushgate.store.sqlite.status import apply_early_updates


class SQLiteOutcomes(SQLiteBase):
    """Recording send outcomes, expiry and cancellation."""

    async def record_outcomes(
        self, worker_id: str, results: Sequence[SendResult], now: float, policy: RetryPolicy
    ) -> None:
        if results:
            moves = await self._write(_record_outcomes_job, worker_id, list(results), now,
                                      policy)
            metrics.count_moves(moves)

    async def expire_due(self, now: float, limit: int) -> int:
        return await self._write(_expire_job, now, limit)

    async def cancel_channel_queue(
        self, channel_id: int, now: float, reason: str, include_in_flight: bool = False
    ) -> tuple[int, int]:
        return await self._write(_cancel_queue_job, channel_id, now, reason, include_in_flight)

    async def cancel_push(self, project_id: int, push_id: int, now: float) -> tuple[int, int]:
        return await self._write(_cancel_push_job, project_id, push_id, now)


@replayable
def _record_outcomes_job(
    conn: sqlite3.Connection,
    worker_id: str,
    results: list[SendResult],
    now: float,
    policy: RetryPolicy,
) -> list[tuple[int, str]]:
    """The results written; the messages moved, as (channel, new state), for the caller to
    count once they are committed (so the job has no effect outside the database and can be
    replayed, ``connection.replayable``)."""
    held = _held_messages(conn, worker_id, results)
    plan = plan_outcomes(results, {mid: row for mid, (row, _channel) in held.items()}, now,
                         policy)
    channels = {mid: channel for mid, (_row, channel) in held.items()}
    # Sends for messages no longer held: our lease ran out and another worker owns the
    # message now (its outcome counts), or a provider callback moved it on first; then keep
    # their provider ids, or later callbacks could not find them.
    late = [res for res in results if res.kind.went_out and res.message_id not in held]
    late_provider_ids = [(res.provider_id, res.message_id) for res in late if res.provider_id]
    for res in late:
        if res.provider_refs:
            row = conn.execute("SELECT channel_id FROM messages WHERE id = ?",
                               (res.message_id,)).fetchone()
            if row is not None:
                channels[res.message_id] = row[0]
    refs = [(channels[mid], pid, mid, part) for mid, pid, part in provider_refs(results)
            if mid in channels]
    _write_outcome_states(conn, plan, late_provider_ids, now)
    _settle(conn, plan, now)
    conn.executemany(
        "INSERT INTO provider_refs (channel_id, provider_id, message_id, part, state)"
        " VALUES (?, ?, ?, ?, 'submitted') ON CONFLICT DO NOTHING", refs)
    early = apply_early_updates(conn, [(channels[s.message_id], s.provider_id)
                                       for s in plan.submitted if s.provider_id]
                                + [(c, pid) for c, pid, _m, _p in refs])
    return ([(channels[s.message_id], s.state) for s in plan.submitted]
            + [(channels[f.message_id], "refunded") for f in plan.failed] + early)


def _held_messages(conn: sqlite3.Connection, worker_id: str,
                   results: list[SendResult]) -> dict[int, tuple[HeldMessage, int]]:
    """The results' messages ``worker_id`` still holds, with their channel, by id."""
    hooks = _webhook_projects(conn)
    return {
        mid: (HeldMessage(mid, project_id, credit, attempts, project_id in hooks), channel)
        for mid, project_id, credit, attempts, channel in conn.execute(
            "SELECT id, project_id, credit_micro, attempts, channel_id FROM messages"
            " WHERE id IN (SELECT value FROM json_each(?)) AND state = 'sending'"
            " AND leased_by = ?",
            (json.dumps([res.message_id for res in results]), worker_id))}


def _write_outcome_states(conn: sqlite3.Connection, plan: OutcomePlan,
                          late_provider_ids: list[tuple[str, int]], now: float) -> None:
    """The new states of a plan's messages, and the provider ids of sends recorded late."""
    conn.executemany(
        "UPDATE messages SET state = ?, provider_id = ?, error_code = ?, error_message = ?,"
        " submitted_at = ?, delivered_at = ?, lease_until = NULL, leased_by = NULL,"
        " updated_at = ? WHERE id = ?",
        [(s.state, s.provider_id, s.error_code, s.error_message, now, s.delivered_at, now,
          s.message_id) for s in plan.submitted])
    conn.executemany(
        "UPDATE messages SET provider_id = ? WHERE id = ? AND provider_id IS NULL"
        " AND state IN ('submitted', 'delivered', 'read')", late_provider_ids)
    conn.executemany(
        "UPDATE messages SET state = 'queued', next_attempt_at = ?, error_code = ?,"
        " error_message = ?, lease_until = NULL, leased_by = NULL, updated_at = ?"
        " WHERE id = ?",
        [(r.next_attempt_at, r.error_code, r.error_message, now, r.message_id)
         for r in plan.retried])
    conn.executemany(
        "UPDATE messages SET state = 'queued', next_attempt_at = ?, error_code = ?,"
        " error_message = ?, lease_until = NULL, leased_by = NULL, updated_at = ?,"
        " attempts = max(attempts - 1, 0) WHERE id = ?",
        [(r.next_attempt_at, r.error_code, r.error_message, now, r.message_id)
         for r in plan.deferred])
    conn.executemany(
        "UPDATE messages SET state = 'refunded', error_code = ?, error_message = ?,"
        " lease_until = NULL, leased_by = NULL, updated_at = ? WHERE id = ?",
        [(f.error_code, f.error_message, now, f.message_id) for f in plan.failed])


def _expire_job(conn: sqlite3.Connection, now: float, limit: int) -> int:
    conn.execute("DELETE FROM early_updates WHERE received_at < ?", (now - EARLY_UPDATE_TTL,))
    # Push by push (migration 0007): a due push's messages past their validity expire, queued
    # ones and those whose lease ran out (never sent again); once none of its messages is
    # live the push is done, else (some are still being sent, and may come back queued) it is
    # looked at again EXPIRY_RECHECK_SECONDS later.
    rows: list[Any] = []
    due = conn.execute("SELECT id FROM pushes WHERE expiry_due IS NOT NULL AND expiry_due < ?"
                       " ORDER BY expiry_due LIMIT ?", (now, limit)).fetchall()
    for (push_id,) in due:
        left = limit - len(rows)
        expired = conn.execute(
            "UPDATE messages SET state = 'expired', updated_at = ?, error_message ="
            " CASE state WHEN 'sending' THEN ? ELSE ? END"
            " WHERE id IN (SELECT id FROM messages WHERE push_id = ? AND expires_at < ?"
            " AND (state IN ('queued', 'scheduled')"
            " OR (state = 'sending' AND lease_until < ?)) LIMIT ?)"
            " RETURNING id, project_id, credit_micro, error_message, channel_id",
            (now, EXPIRED_UNCONFIRMED, VALIDITY_ENDED, push_id, now, now, left)).fetchall()
        rows += expired
        if len(expired) == left:
            break   # the limit: the rest of this push next time
        conn.execute(
            "UPDATE pushes SET expiry_due = (SELECT max(min(expires_at), ?) FROM messages"
            " WHERE push_id = ? AND state IN ('queued', 'sending', 'scheduled')) WHERE id = ?",
            (now + EXPIRY_RECHECK_SECONDS, push_id, push_id))
    if not rows:
        return 0
    hooks = _webhook_projects(conn)
    _settle(conn, plan_expiry([Settled(mid, project_id, credit, why, project_id in hooks)
                               for mid, project_id, credit, why, _channel in rows], now), now)
    metrics.count_moves((row[4], "expired") for row in rows)
    return len(rows)


def _cancel_queue_job(
    conn: sqlite3.Connection, channel_id: int, now: float, reason: str, include_in_flight: bool
) -> tuple[int, int]:
    states = ("queued", "sending") if include_in_flight else ("queued",)
    rows = conn.execute(
        "UPDATE messages SET state = 'cancelled', error_message = ?, lease_until = NULL,"
        f" leased_by = NULL, updated_at = ? WHERE channel_id = ? AND {_LIVE}"
        " AND state IN (SELECT value FROM json_each(?)) RETURNING id, project_id, credit_micro",
        (reason, now, channel_id, json.dumps(states))).fetchall()
    if not rows:
        return 0, 0
    hooks = _webhook_projects(conn)
    plan = plan_cancellation([Settled(mid, project_id, credit, reason, project_id in hooks)
                              for mid, project_id, credit in rows], now, reason)
    _settle(conn, plan, now)
    return len(rows), sum(plan.refunds.values())


def _cancel_push_job(
    conn: sqlite3.Connection, project_id: int, push_id: int, now: float
) -> tuple[int, int]:
    # Only `queued` and `scheduled`: a message being sent is in a worker's hands, and its
    # outcome decides.
    rows = conn.execute(
        "UPDATE messages SET state = 'cancelled', error_message = ?, lease_until = NULL,"
        " leased_by = NULL, updated_at = ? WHERE push_id = ? AND project_id = ?"
        " AND state IN ('queued', 'scheduled') RETURNING id, project_id, credit_micro",
        (PUSH_CANCELLED, now, push_id, project_id)).fetchall()
    if not rows:
        return 0, 0
    hooks = _webhook_projects(conn)
    plan = plan_cancellation([Settled(mid, project_id, credit, PUSH_CANCELLED,
                                      project_id in hooks)
                              for mid, project_id, credit in rows], now, PUSH_CANCELLED)
    _settle(conn, plan, now)
    return len(rows), sum(plan.refunds.values())


def _settle(conn: sqlite3.Connection, plan: OutcomePlan | SettlePlan, now: float) -> None:
    """The events, refunds and webhook reports of a plan."""
    _add_events(conn, plan.events)
    _refund(conn, plan.refunds, now, plan.refund_reason)
    _add_outbox(conn, [report.row() for report in plan.reports])
