"""Send outcomes in SQLite: recording a batch's results (submitted, retry, defer, fail and
refund), expiring messages past their validity, cancelling a channel's queue.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from pushgate.core.models import (
    SendResult,
)
from pushgate.core.policy import (
    EARLY_UPDATE_TTL,
    EXPIRED_UNCONFIRMED,
    EXPIRY_RECHECK_SECONDS,
    RetryPolicy,
)
from pushgate.store.sqlite.common import _LIVE, _add_outbox, _refund, _webhook_projects
from pushgate.store.sqlite.connection import SQLiteBase
from pushgate.store.sqlite.status import _apply_early_updates


class SQLiteOutcomes(SQLiteBase):
    """Recording send outcomes, expiry and cancellation."""

    async def record_outcomes(
        self, worker_id: str, results: Sequence[SendResult], now: float, policy: RetryPolicy
    ) -> None:
        if results:
            await self._write(_record_outcomes_job, worker_id, list(results), now, policy)

    async def expire_due(self, now: float, limit: int) -> int:
        return await self._write(_expire_job, now, limit)

    async def cancel_channel_queue(
        self, channel_id: int, now: float, reason: str, include_in_flight: bool = False
    ) -> tuple[int, int]:
        return await self._write(_cancel_queue_job, channel_id, now, reason, include_in_flight)


def _record_outcomes_job(
    conn: sqlite3.Connection,
    worker_id: str,
    results: list[SendResult],
    now: float,
    policy: RetryPolicy,
) -> None:
    current = {
        r[0]: r for r in conn.execute(
            "SELECT id, project_id, credit_micro, attempts, channel_id FROM messages"
            " WHERE id IN (SELECT value FROM json_each(?)) AND state = 'sending'"
            " AND leased_by = ?",
            (json.dumps([res.message_id for res in results]), worker_id)).fetchall()
    }
    hooks = _webhook_projects(conn)
    submitted, retried, deferred, failed, events, outbox = [], [], [], [], [], []
    refunds: dict[int, int] = defaultdict(int)
    late_provider_ids = []
    refs: list[tuple[int, str, int, int]] = []
    for res in results:
        row = current.get(res.message_id)
        if row is None:
            # Our lease ran out and another worker owns the message now; its outcome counts.
            # Or a provider callback moved it on first: then keep its provider ids.
            if res.ok and res.provider_id:
                late_provider_ids.append((res.provider_id, res.message_id))
            if res.ok and res.provider_refs:
                channel_id = conn.execute("SELECT channel_id FROM messages WHERE id = ?",
                                          (res.message_id,)).fetchone()
                if channel_id is not None:
                    refs += [(channel_id[0], pid, res.message_id, part)
                             for part, pid in res.provider_refs]
            continue
        mid, project_id, credit, attempts, channel_id = row
        if res.ok:
            # An ok send may still report a problem with a part (e.g. an audio's text lost).
            state = "delivered" if res.delivered else "submitted"
            refs += [(channel_id, pid, mid, part) for part, pid in res.provider_refs]
            if res.error_code:
                # A problem to report: the submission keeps its event rows, with the problem
                # (its `submitted_at` still counts it for the channel's caps).
                submitted.append((state, res.provider_id, res.error_code, res.error_message,
                                  now, None, now, mid))
                events.append((mid, "submitted", now, f"provider id {res.provider_id}; "
                               f"{res.error_code}: {res.error_message}"))
                if res.delivered:
                    events.append((mid, "delivered", now, None))
            else:
                # The routine case: the steps are columns, not rows (core/history.py).
                submitted.append((state, res.provider_id, None, None, now,
                                  now if res.delivered else None, now, mid))
            if project_id in hooks:
                outbox.append((project_id, mid, "submitted", now, None, None, now))
                if res.delivered:
                    outbox.append((project_id, mid, "delivered", now, None, None, now))
            continue
        detail = f"{res.error_code or 'error'}: {res.error_message or ''}".strip()
        if res.defer:
            wait = max(res.retry_after or 0.0, 0.05)
            deferred.append((now + wait, res.error_code, res.error_message, now, mid))
            events.append((mid, "queued", now, f"waiting {wait:.1f}s (not an attempt): {detail}"))
            continue
        if res.retryable and attempts < policy.max_attempts:
            delay = policy.delay(attempts, res.retry_after)
            retried.append((now + delay, res.error_code, res.error_message, now, mid))
            events.append((mid, "queued", now, f"retry in {delay:.1f}s after {detail}"))
            continue
        if res.retryable:
            detail = f"gave up after {attempts} attempts; last {detail}"
        failed.append((res.error_code, res.error_message, now, mid))
        events.append((mid, "failed", now, detail))
        events.append((mid, "refunded", now, f"{credit} micro-credits returned"))
        refunds[project_id] += credit
        if project_id in hooks:
            outbox.append((project_id, mid, "refunded", now, res.error_code, res.error_message,
                           now))
    # A send that went through has this attempt's problem, if any: an earlier attempt's
    # error (a retry's 130429) stays in the history only.
    conn.executemany(
        "UPDATE messages SET state = ?, provider_id = ?, error_code = ?, error_message = ?,"
        " submitted_at = ?, delivered_at = ?, lease_until = NULL, leased_by = NULL,"
        " updated_at = ? WHERE id = ?", submitted)
    conn.executemany(
        "UPDATE messages SET provider_id = ? WHERE id = ? AND provider_id IS NULL"
        " AND state IN ('submitted', 'delivered', 'read')", late_provider_ids)
    conn.executemany(
        "UPDATE messages SET state = 'queued', next_attempt_at = ?, error_code = ?,"
        " error_message = ?, lease_until = NULL, leased_by = NULL, updated_at = ?"
        " WHERE id = ?", retried)
    conn.executemany(
        "UPDATE messages SET state = 'queued', next_attempt_at = ?, error_code = ?,"
        " error_message = ?, lease_until = NULL, leased_by = NULL, updated_at = ?,"
        " attempts = max(attempts - 1, 0) WHERE id = ?", deferred)
    conn.executemany(
        "UPDATE messages SET state = 'refunded', error_code = ?, error_message = ?,"
        " lease_until = NULL, leased_by = NULL, updated_at = ? WHERE id = ?", failed)
    conn.executemany(
        "INSERT INTO message_events (message_id, state, at, detail) VALUES (?, ?, ?, ?)", events)
    _refund(conn, refunds, now, "refund: send failed")
    _add_outbox(conn, outbox)
    conn.executemany(
        "INSERT INTO provider_refs (channel_id, provider_id, message_id, part, state)"
        " VALUES (?, ?, ?, ?, 'submitted') ON CONFLICT DO NOTHING", refs)
    _apply_early_updates(conn, [(current[s[7]][4], s[1]) for s in submitted if s[1]]
                         + [(c, pid) for c, pid, _m, _p in refs])


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
            " CASE state WHEN 'queued' THEN 'validity period ended' ELSE ? END"
            " WHERE id IN (SELECT id FROM messages WHERE push_id = ? AND expires_at < ?"
            " AND (state = 'queued' OR (state = 'sending' AND lease_until < ?)) LIMIT ?)"
            " RETURNING id, project_id, credit_micro, error_message",
            (now, EXPIRED_UNCONFIRMED, push_id, now, now, left)).fetchall()
        rows += expired
        if len(expired) == left:
            break   # the limit: the rest of this push next time
        conn.execute(
            "UPDATE pushes SET expiry_due = (SELECT max(min(expires_at), ?) FROM messages"
            f" WHERE push_id = ? AND {_LIVE}) WHERE id = ?",
            (now + EXPIRY_RECHECK_SECONDS, push_id, push_id))
    if not rows:
        return 0
    hooks = _webhook_projects(conn)
    refunds: dict[int, int] = defaultdict(int)
    for _mid, project_id, credit, _why in rows:
        refunds[project_id] += credit
    conn.executemany(
        "INSERT INTO message_events (message_id, state, at, detail) VALUES (?, 'expired', ?, ?)",
        [(r[0], now, f"{r[3]}; credit returned") for r in rows])
    _refund(conn, refunds, now, "refund: expired")
    _add_outbox(conn, [(r[1], r[0], "expired", now, None, r[3], now)
                       for r in rows if r[1] in hooks])
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
    rows.sort()
    hooks = _webhook_projects(conn)
    refunds: dict[int, int] = defaultdict(int)
    for _mid, project_id, credit in rows:
        refunds[project_id] += credit
    conn.executemany(
        "INSERT INTO message_events (message_id, state, at, detail) VALUES (?, 'cancelled', ?, ?)",
        [(mid, now, f"{reason}; {credit} micro-credits returned") for mid, _p, credit in rows])
    _refund(conn, refunds, now, f"refund: {reason}")
    _add_outbox(conn, [(project_id, mid, "cancelled", now, None, reason, now)
                       for mid, project_id, _credit in rows if project_id in hooks])
    return len(rows), sum(refunds.values())
