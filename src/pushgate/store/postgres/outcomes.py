"""Send outcomes in PostgreSQL: recording a batch's results (submitted, retry, defer, fail
and refund) under the channel's receipt lock, expiring messages past their validity,
cancelling a channel's queue.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import asyncpg

from pushgate.core.models import (
    SendResult,
)
from pushgate.core.policy import (
    EARLY_UPDATE_TTL,
    EXPIRED_UNCONFIRMED,
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
        # A receipt for these sends may be arriving right now (SMPP receipts often overtake
        # their submit_sm_resp): this lock and the one in _apply_status make the two wait for
        # each other per channel, so a receipt sees every id recorded here or none of them,
        # and one parked as early is seen by the look-up below.
        channels = [r[0] for r in await conn.fetch(
            "SELECT c, pg_advisory_xact_lock($2, c) FROM (SELECT DISTINCT channel_id AS c"
            " FROM messages WHERE id = ANY($1::bigint[]) ORDER BY 1) s",
            [res.message_id for res in results], RECEIPT_LOCK)]
        # Once the lock is held (a new statement, so a new snapshot under READ COMMITTED):
        # is any receipt parked for these channels? Nearly never; then the sweep below is
        # skipped, and a receipt arriving now waits for our commit.
        early_waiting = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM early_updates WHERE channel_id = ANY($1::int[]))",
            channels)
        # Sends that went through (nearly all): one statement marks them submitted, records
        # their events and queues their webhook reports. Its WHERE passes over a message whose
        # lease ran out and that another worker owns now; that worker's outcome counts.
        ok = [(res.message_id, res.provider_id, res.delivered, not res.error_code)
              for res in results if res.ok]
        if ok:
            # A send whose answer already says delivered gets its `delivered` report right
            # after its `submitted` one (the second row of `steps`). A clean outcome (the
            # routine case) keeps its steps in columns; one with a problem to report also
            # gets event rows, completed with the problem below (core/history.py).
            ids, provider_ids, delivered, clean = _columns(ok, 4)
            recorded = await conn.fetchval(
                "WITH s AS (UPDATE messages m SET state = CASE WHEN u.delivered"
                " THEN 'delivered' ELSE 'submitted' END,"
                " provider_id = u.provider_id, lease_until = NULL, leased_by = NULL,"
                # This attempt's problem, if any, is set below: an earlier attempt's error
                # (a retry's 130429) stays in the history only.
                " error_code = NULL, error_message = NULL, submitted_at = $4::float8,"
                " delivered_at = CASE WHEN u.clean AND u.delivered THEN $4::float8 END,"
                " updated_at = $4 FROM unnest($1::bigint[], $2::text[], $3::bool[],"
                " $6::bool[]) AS u(id, provider_id, delivered, clean)"
                " WHERE m.id = u.id AND m.state = 'sending' AND m.leased_by = $5"
                " RETURNING m.id, m.project_id, u.provider_id, u.delivered, u.clean),"
                " steps AS (SELECT s.*, k.step FROM s CROSS JOIN LATERAL (VALUES (1), (2))"
                " AS k(step) WHERE k.step = 1 OR s.delivered),"
                " e AS (INSERT INTO message_events (message_id, state, at, detail)"
                " SELECT id, CASE step WHEN 1 THEN 'submitted' ELSE 'delivered' END, $4,"
                " CASE step WHEN 1 THEN 'provider id ' || coalesce(provider_id, 'None') END"
                " FROM steps WHERE NOT clean ORDER BY id, step),"
                " o AS (INSERT INTO outbox (project_id, message_id, state, at, error_code,"
                " error_message, attempts, next_attempt_at, dead)"
                " SELECT steps.project_id, steps.id,"
                " CASE step WHEN 1 THEN 'submitted' ELSE 'delivered' END, $4, NULL, NULL, 0,"
                " $4, false FROM steps"
                f" WHERE {_has_webhook('steps')} ORDER BY steps.id, step)"
                " SELECT count(*) FROM s", ids, provider_ids, delivered, now, worker_id,
                clean)
            # An ok send may still report a problem with a part (e.g. an audio's text lost).
            partial = [(res.message_id, res.error_code, res.error_message or "")
                       for res in results if res.ok and res.error_code]
            if partial:
                await conn.execute(
                    "WITH u AS (SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[])"
                    " AS u(id, code, msg)),"
                    " m AS (UPDATE messages m SET error_code = u.code, error_message = u.msg"
                    " FROM u WHERE m.id = u.id AND m.leased_by IS NULL RETURNING m.id)"
                    " UPDATE message_events e SET detail = e.detail || '; ' || u.code || ': '"
                    " || u.msg FROM u WHERE e.message_id = u.id AND e.state = 'submitted'"
                    " AND e.at = $4", *_columns(partial, 3), now)
            if recorded < len(ok):
                # A provider callback may have moved a message on before this outcome was
                # recorded; keep its provider id, or later callbacks could not find it.
                await conn.execute(
                    "UPDATE messages m SET provider_id = u.provider_id"
                    " FROM unnest($1::bigint[], $2::text[]) AS u(id, provider_id)"
                    " WHERE m.id = u.id AND m.provider_id IS NULL AND u.provider_id IS NOT NULL"
                    " AND m.state IN ('submitted', 'delivered', 'read')",
                    *_columns([(m, p) for m, p, _d, _c in ok], 2))
            refs = [(res.message_id, pid, part) for res in results if res.ok
                    for part, pid in res.provider_refs]
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
                    *_columns([(m, p) for m, p, *_ in ok + refs], 2))
                await self._apply_early_updates(conn, [(k[0], k[1]) for k in keys])
        failures = [res for res in results if not res.ok]
        if not failures:
            return
        current = {r[0]: r for r in await conn.fetch(
            "SELECT m.id, m.project_id, m.credit_micro, m.attempts,"
            f" {_has_webhook('m')} FROM messages m"
            " WHERE m.id = ANY($1::bigint[]) AND m.state = 'sending' AND m.leased_by = $2"
            " ORDER BY m.id FOR UPDATE OF m",
            [res.message_id for res in failures], worker_id)}
        retried: list[tuple[int, float, str | None, str | None]] = []
        deferred: list[tuple[int, float, str | None, str | None]] = []
        failed: list[tuple[int, str | None, str | None]] = []
        events: list[tuple[int, str, float, str | None]] = []
        outbox: list[tuple[Any, ...]] = []
        refunds: dict[int, int] = defaultdict(int)
        for res in failures:
            row = current.get(res.message_id)
            if row is None:
                # Our lease ran out and another worker owns the message now; its outcome counts.
                continue
            mid, project_id, credit, attempts, hook = row
            detail = f"{res.error_code or 'error'}: {res.error_message or ''}".strip()
            if res.defer:
                wait = max(res.retry_after or 0.0, 0.05)
                deferred.append((mid, now + wait, res.error_code, res.error_message))
                events.append((mid, "queued", now,
                               f"waiting {wait:.1f}s (not an attempt): {detail}"))
                continue
            if res.retryable and attempts < policy.max_attempts:
                delay = policy.delay(attempts, res.retry_after)
                retried.append((mid, now + delay, res.error_code, res.error_message))
                events.append((mid, "queued", now, f"retry in {delay:.1f}s after {detail}"))
                continue
            if res.retryable:
                detail = f"gave up after {attempts} attempts; last {detail}"
            failed.append((mid, res.error_code, res.error_message))
            events.append((mid, "failed", now, detail))
            events.append((mid, "refunded", now, f"{credit} micro-credits returned"))
            refunds[project_id] += credit
            if hook:
                outbox.append((project_id, mid, "refunded", now, res.error_code,
                               res.error_message, now))
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
        await _add_events(conn, events)
        await _refund(conn, refunds, now, "refund: send failed")
        await _add_outbox(conn, outbox)

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
                    " AND (state = 'queued' OR (state = 'sending' AND lease_until < $1))"
                    " LIMIT $3 FOR UPDATE SKIP LOCKED)"
                    " UPDATE messages m SET state = 'expired', updated_at = $1, error_message ="
                    " CASE m.state WHEN 'queued' THEN 'validity period ended' ELSE $4 END"
                    " FROM due WHERE m.id = due.id RETURNING m.id, m.project_id,"
                    " m.credit_micro, m.error_message", now, push_id, left, EXPIRED_UNCONFIRMED)
                rows += expired
                if len(expired) == left:
                    break   # the limit: the rest of this push next time
                await conn.execute(
                    "UPDATE pushes SET expiry_due = (SELECT CASE WHEN min(expires_at) IS NULL"
                    " THEN NULL ELSE greatest(min(expires_at), $2) END FROM messages"
                    " WHERE push_id = $1 AND state IN ('queued', 'sending')) WHERE id = $1",
                    push_id, now + EXPIRY_RECHECK_SECONDS)
            if not rows:
                return 0
            refunds: dict[int, int] = defaultdict(int)
            for _mid, project_id, credit, _why in rows:
                refunds[project_id] += credit
            hooks = {r[0] for r in await conn.fetch(
                "SELECT id FROM projects WHERE id = ANY($1::int[])"
                " AND coalesce(webhook_url, '') <> ''", list(refunds))}
            await conn.execute(
                "INSERT INTO message_events (message_id, state, at, detail)"
                " SELECT id, 'expired', $2, why || '; credit returned'"
                " FROM unnest($1::bigint[], $3::text[]) AS e(id, why)",
                [r[0] for r in rows], now, [r[3] for r in rows])
            await _refund(conn, refunds, now, "refund: expired")
            await _add_outbox(conn, [
                (r[1], r[0], "expired", now, None, r[3], now)
                for r in rows if r[1] in hooks])
            return len(rows)

        return await self._tx(job)

    async def cancel_channel_queue(
        self, channel_id: int, now: float, reason: str, include_in_flight: bool = False
    ) -> tuple[int, int]:
        return await self._tx(_cancel_queue, channel_id, now, reason, include_in_flight)


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
    rows = sorted(rows)
    refunds: dict[int, int] = defaultdict(int)
    for _mid, project_id, credit in rows:
        refunds[project_id] += credit
    hooks = {r[0] for r in await conn.fetch(
        "SELECT id FROM projects WHERE id = ANY($1::int[]) AND coalesce(webhook_url, '') <> ''",
        sorted(refunds))}
    await _add_events(conn, [(mid, "cancelled", now, f"{reason}; {credit} micro-credits returned")
                             for mid, _project, credit in rows])
    await _refund(conn, refunds, now, f"refund: {reason}")
    await _add_outbox(conn, [(project_id, mid, "cancelled", now, None, reason, now)
                             for mid, project_id, _credit in rows if project_id in hooks])
    return len(rows), sum(refunds.values())
