"""Send outcomes in PostgreSQL: recording a batch's results (submitted, retry, defer, fail
and refund) under the channel's receipt lock, expiring messages past their validity,
cancelling a channel's queue or a push.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

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
    Submission,
    plan_cancellation,
    plan_expiry,
    plan_outcomes,
    plan_submissions,
    provider_refs,
)
from pushgate.core.policy import (
    EARLY_UPDATE_TTL,
    EXPIRY_RECHECK_SECONDS,
    RetryPolicy,
)
from pushgate.store.postgres.common import (
    RECEIPT_LOCK,
    _add_events,
    _add_outbox,
    _columns,
    _has_webhook,
    _refund,
)
from pushgate.store.postgres.connection import PostgresBase
from pushgate.store.postgres.status import apply_early_updates


class PostgresOutcomes(PostgresBase):
    """Recording send outcomes, expiry and cancellation."""

    async def record_outcomes(
        self, worker_id: str, results: Sequence[SendResult], now: float, policy: RetryPolicy
    ) -> None:
        if results:
            await self._tx(self._record_outcomes, worker_id, list(results), now, policy)

    async def _record_outcomes(
        self,
        conn: asyncpg.Connection,
        worker_id: str,
        results: list[SendResult],
        now: float,
        policy: RetryPolicy,
    ) -> None:
        early_waiting = await _lock_receipts(conn, results)
        # Sends that went through (nearly all): one statement marks them submitted, records
        # their events and queues their webhook reports.
        submitted = plan_submissions(results, now)
        if submitted:
            await self._record_went_out(conn, worker_id, results, submitted, now,
                                        early_waiting)
        failures = [res for res in results if not res.kind.went_out]
        if failures:
            await _record_failures(conn, worker_id, failures, now, policy)

    async def _record_went_out(
        self,
        conn: asyncpg.Connection,
        worker_id: str,
        results: list[SendResult],
        submitted: list[Submission],
        now: float,
        early_waiting: bool,
    ) -> None:
        """The sends that went through, their parts' provider ids, and the receipts parked
        for them, if ``early_waiting``."""
        recorded = await _record_submissions(conn, worker_id, submitted, now)
        if recorded < len(submitted):
            await _keep_late_provider_ids(conn, submitted)
        refs = provider_refs(results)
        if refs:
            await conn.execute(
                "INSERT INTO provider_refs (channel_id, provider_id, message_id, part, state)"
                " SELECT m.channel_id, u.provider_id, u.id, u.part, 'submitted'"
                " FROM unnest($1::bigint[], $2::text[], $3::int[]) AS u(id, provider_id,"
                " part) JOIN messages m ON m.id = u.id ON CONFLICT DO NOTHING",
                *_columns(refs, 3))
        if early_waiting:
            keys = await conn.fetch(
                "SELECT m.channel_id, u.provider_id FROM unnest($1::bigint[], $2::text[])"
                " AS u(id, provider_id) JOIN messages m ON m.id = u.id"
                " WHERE u.provider_id IS NOT NULL",
                *_columns([(sub.message_id, sub.provider_id) for sub in submitted]
                          + [(m, p) for m, p, _part in refs], 2))
            await apply_early_updates(conn, [(k[0], k[1]) for k in keys])

    async def expire_due(self, now: float, limit: int) -> int:
        async def job(conn: asyncpg.Connection) -> int:
            await conn.execute("DELETE FROM early_updates WHERE received_at < $1",
                               now - EARLY_UPDATE_TTL)
            # Push by push (migration 0007): a due push's messages past their validity
            # expire, queued ones and those whose lease ran out (never sent again); once none
            # of its messages is live the push is done, else (some are still being sent, and
            # may come back queued) it is looked at again EXPIRY_RECHECK_SECONDS later.
            # Pushes another worker is sweeping are skipped.
            rows: list[Any] = []
            due = await conn.fetch(
                "SELECT id FROM pushes WHERE expiry_due IS NOT NULL AND expiry_due < $1"
                " ORDER BY expiry_due LIMIT $2 FOR UPDATE SKIP LOCKED", now, limit)
            for (push_id,) in due:
                left = limit - len(rows)
                expired = await conn.fetch(
                    "WITH due AS (SELECT id FROM messages WHERE push_id = $2"
                    " AND expires_at < $1"
                    " AND (state IN ('queued', 'scheduled')"
                    " OR (state = 'sending' AND lease_until < $1))"
                    " LIMIT $3 FOR UPDATE SKIP LOCKED)"
                    " UPDATE messages m SET state = 'expired', updated_at = $1, error_message ="
                    " CASE m.state WHEN 'sending' THEN $4 ELSE $5 END"
                    " FROM due WHERE m.id = due.id RETURNING m.id, m.project_id,"
                    " m.credit_micro, m.error_message, m.channel_id", now, push_id, left,
                    EXPIRED_UNCONFIRMED, VALIDITY_ENDED)
                rows += expired
                if len(expired) == left:
                    break   # the limit: the rest of this push next time
                await conn.execute(
                    "UPDATE pushes SET expiry_due = (SELECT CASE WHEN min(expires_at) IS NULL"
                    " THEN NULL ELSE greatest(min(expires_at), $2) END FROM messages"
                    " WHERE push_id = $1 AND state IN ('queued', 'sending', 'scheduled'))"
                    " WHERE id = $1",
                    push_id, now + EXPIRY_RECHECK_SECONDS)
            if not rows:
                return 0
            hooks = {r[0] for r in await conn.fetch(
                "SELECT id FROM projects WHERE id = ANY($1::int[])"
                " AND coalesce(webhook_url, '') <> ''", sorted({r[1] for r in rows}))}
            await _settle(conn, plan_expiry([
                Settled(mid, project_id, credit, why, project_id in hooks)
                for mid, project_id, credit, why, _channel in rows], now), now)
            metrics.count_moves((row[4], "expired") for row in rows)
            return len(rows)

        return await self._tx(job)

    async def cancel_channel_queue(
        self, channel_id: int, now: float, reason: str, include_in_flight: bool = False
    ) -> tuple[int, int]:
        return await self._tx(_cancel_queue, channel_id, now, reason, include_in_flight)

    async def cancel_push(self, project_id: int, push_id: int, now: float) -> tuple[int, int]:
        return await self._tx(_cancel_push, project_id, push_id, now)


async def _cancel_queue(
    conn: asyncpg.Connection, channel_id: int, now: float, reason: str, include_in_flight: bool
) -> tuple[int, int]:
    states = ["queued", "sending"] if include_in_flight else ["queued"]
    rows = await conn.fetch(
        # The literal state list lets the planner prove the partial claim index applies.
        "WITH c AS (SELECT id FROM messages WHERE channel_id = $1 AND state = ANY($2::text[])"
        " AND state IN ('queued', 'sending') ORDER BY id FOR UPDATE)"
        " UPDATE messages m SET state = 'cancelled', error_message = $3, lease_until = NULL,"
        " leased_by = NULL, updated_at = $4 FROM c WHERE m.id = c.id"
        " RETURNING m.id, m.project_id, m.credit_micro", channel_id, states, reason, now)
    if not rows:
        return 0, 0
    hooks = {r[0] for r in await conn.fetch(
        "SELECT id FROM projects WHERE id = ANY($1::int[]) AND coalesce(webhook_url, '') <> ''",
        sorted({r[1] for r in rows}))}
    plan = plan_cancellation([Settled(mid, project_id, credit, reason, project_id in hooks)
                              for mid, project_id, credit in rows], now, reason)
    await _settle(conn, plan, now)
    return len(rows), sum(plan.refunds.values())


async def _cancel_push(
    conn: asyncpg.Connection, project_id: int, push_id: int, now: float
) -> tuple[int, int]:
    # Only `queued` and `scheduled`: a message being sent is in a worker's hands, and its
    # outcome decides. SKIP LOCKED: a row a claim holds right now is being handed to a
    # channel (or promoted: it is cancelled by the next call).
    rows = await conn.fetch(
        "WITH c AS (SELECT id FROM messages WHERE push_id = $1 AND project_id = $2"
        " AND state IN ('queued', 'scheduled') ORDER BY id FOR UPDATE SKIP LOCKED)"
        " UPDATE messages m SET state = 'cancelled', error_message = $3, lease_until = NULL,"
        " leased_by = NULL, updated_at = $4 FROM c WHERE m.id = c.id"
        " AND m.state IN ('queued', 'scheduled')"
        " RETURNING m.id, m.project_id, m.credit_micro", push_id, project_id, PUSH_CANCELLED,
        now)
    if not rows:
        return 0, 0
    hooks = {r[0] for r in await conn.fetch(
        "SELECT id FROM projects WHERE id = $1 AND coalesce(webhook_url, '') <> ''",
        project_id)}
    plan = plan_cancellation([Settled(mid, project, credit, PUSH_CANCELLED, project in hooks)
                              for mid, project, credit in rows], now, PUSH_CANCELLED)
    await _settle(conn, plan, now)
    return len(rows), sum(plan.refunds.values())


async def _lock_receipts(conn: asyncpg.Connection, results: list[SendResult]) -> bool:
    """Takes the receipt lock of the results' channels; returns whether any receipt is
    parked for them (nearly never)."""
    # A receipt for these sends may be arriving right now (SMPP receipts often overtake
    # their submit_sm_resp): this lock and the one in status.apply_status make the two wait for
    # each other per channel, so a receipt sees every id recorded here or none of them,
    # and one parked as early is seen by the look-up below.
    channels = [r[0] for r in await conn.fetch(
        "SELECT c, pg_advisory_xact_lock($2, c) FROM (SELECT DISTINCT channel_id AS c"
        " FROM messages WHERE id = ANY($1::bigint[]) ORDER BY 1) s",
        [res.message_id for res in results], RECEIPT_LOCK)]
    # Once the lock is held (a new statement, so a new snapshot under READ COMMITTED): is
    # any receipt parked for these channels? When none is, the early-update sweep is skipped,
    # and a receipt arriving now waits for our commit.
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM early_updates WHERE channel_id = ANY($1::int[]))",
        channels))


async def _keep_late_provider_ids(conn: asyncpg.Connection,
                                  submitted: list[Submission]) -> None:
    """A provider callback may have moved a message on before its outcome was recorded (its
    lease held no more): keep its provider id, or later callbacks could not find it."""
    await conn.execute(
        "UPDATE messages m SET provider_id = u.provider_id"
        " FROM unnest($1::bigint[], $2::text[]) AS u(id, provider_id)"
        " WHERE m.id = u.id AND m.provider_id IS NULL AND u.provider_id IS NOT NULL"
        " AND m.state IN ('submitted', 'delivered', 'read')",
        [sub.message_id for sub in submitted], [sub.provider_id for sub in submitted])


async def _record_failures(conn: asyncpg.Connection, worker_id: str,
                           failures: list[SendResult], now: float, policy: RetryPolicy) -> None:
    """The sends that did not go through, of the messages ``worker_id`` still holds:
    retried, deferred or failed and refunded, as ``plan_outcomes`` decides."""
    rows = await conn.fetch(
        "SELECT m.id, m.project_id, m.credit_micro, m.attempts,"
        f" {_has_webhook('m')}, m.channel_id FROM messages m"
        " WHERE m.id = ANY($1::bigint[]) AND m.state = 'sending' AND m.leased_by = $2"
        " ORDER BY m.id FOR UPDATE OF m",
        [res.message_id for res in failures], worker_id)
    held = {r[0]: HeldMessage(*r[:5]) for r in rows}
    plan = plan_outcomes(failures, held, now, policy)
    await _write_requeues(conn, plan, now)
    await _settle(conn, plan, now)
    channel_of = {r[0]: r[5] for r in rows}
    metrics.count_moves((channel_of[f.message_id], "refunded") for f in plan.failed)


async def _write_requeues(conn: asyncpg.Connection, plan: OutcomePlan, now: float) -> None:
    """The new states of a plan's retried, deferred and failed messages."""
    retried = [(r.message_id, r.next_attempt_at, r.error_code, r.error_message)
               for r in plan.retried]
    deferred = [(r.message_id, r.next_attempt_at, r.error_code, r.error_message)
                for r in plan.deferred]
    failed = [(f.message_id, f.error_code, f.error_message) for f in plan.failed]
    if retried:
        await conn.execute(
            "UPDATE messages m SET state = 'queued', next_attempt_at = u.next_at,"
            " error_code = u.code, error_message = u.msg, lease_until = NULL,"
            " leased_by = NULL, updated_at = $5"
            " FROM unnest($1::bigint[], $2::float8[], $3::text[], $4::text[])"
            " AS u(id, next_at, code, msg) WHERE m.id = u.id", *_columns(retried, 4), now)
    if deferred:
        await conn.execute(
            "UPDATE messages m SET state = 'queued', next_attempt_at = u.next_at,"
            " error_code = u.code, error_message = u.msg, lease_until = NULL,"
            " leased_by = NULL, updated_at = $5, attempts = greatest(m.attempts - 1, 0)"
            " FROM unnest($1::bigint[], $2::float8[], $3::text[], $4::text[])"
            " AS u(id, next_at, code, msg) WHERE m.id = u.id", *_columns(deferred, 4), now)
    if failed:
        await conn.execute(
            "UPDATE messages m SET state = 'refunded', error_code = u.code,"
            " error_message = u.msg, lease_until = NULL, leased_by = NULL, updated_at = $4"
            " FROM unnest($1::bigint[], $2::text[], $3::text[]) AS u(id, code, msg)"
            " WHERE m.id = u.id", *_columns(failed, 3), now)


async def _settle(conn: asyncpg.Connection, plan: OutcomePlan | SettlePlan, now: float) -> None:
    """The events, refunds and webhook reports of a plan."""
    await _add_events(conn, [(e.message_id, e.state, e.at, e.detail) for e in plan.events])
    await _refund(conn, plan.refunds, now, plan.refund_reason)
    await _add_outbox(conn, [report.row() for report in plan.reports])


async def _record_submissions(conn: asyncpg.Connection, worker_id: str,
                              submitted: list[Submission], now: float) -> int:
    """Write the sends that went through, of the messages ``worker_id`` still holds (its
    lease may have run out and another worker own the message now: that one's outcome
    counts), with their event rows and webhook reports; returns how many were held."""
    events = [(e.message_id, e.state, e.detail) for sub in submitted for e in sub.events]
    reports = [(sub.message_id, state) for sub in submitted for state in sub.report_states]
    counts = await conn.fetch(
        "WITH s AS (UPDATE messages m SET state = u.state, provider_id = u.provider_id,"
        " lease_until = NULL, leased_by = NULL, error_code = u.code, error_message = u.msg,"
        " submitted_at = $7::float8, delivered_at = u.delivered_at, updated_at = $7"
        " FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],"
        " $6::float8[]) AS u(id, state, provider_id, code, msg, delivered_at)"
        " WHERE m.id = u.id AND m.state = 'sending' AND m.leased_by = $8"
        " RETURNING m.id, m.project_id, m.channel_id, m.state),"
        " e AS (INSERT INTO message_events (message_id, state, at, detail)"
        " SELECT v.id, v.state, $7, v.detail FROM unnest($9::bigint[], $10::text[], $11::text[])"
        " WITH ORDINALITY AS v(id, state, detail, n) JOIN s ON s.id = v.id ORDER BY v.id, v.n),"
        " o AS (INSERT INTO outbox (project_id, message_id, state, at, error_code,"
        " error_message, attempts, next_attempt_at, dead)"
        " SELECT s.project_id, r.id, r.state, $7, NULL, NULL, 0, $7, false"
        " FROM unnest($12::bigint[], $13::text[]) WITH ORDINALITY AS r(id, state, n)"
        f" JOIN s ON s.id = r.id WHERE {_has_webhook('s')} ORDER BY r.id, r.n)"
        " SELECT s.channel_id, s.state, count(*) FROM s GROUP BY 1, 2",
        *_columns([(sub.message_id, sub.state, sub.provider_id, sub.error_code,
                    sub.error_message, sub.delivered_at) for sub in submitted], 6),
        now, worker_id, *_columns(events, 3), *_columns(reports, 2))
    metrics.count_finals({(r[0], r[1]): r[2] for r in counts})
    return sum(r[2] for r in counts)
