"""SQL fragments and writes shared by the SQLite store's areas: live and valid messages,
event rows, refunds, webhook outbox rows.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from pushgate.core.outcomes import Event

# The live messages (queued, sending): the rows the claim index holds. SQLite uses a partial
# index only when the query repeats its WHERE terms (migration 0006), so queries of live
# messages by channel add this one.
_LIVE = "state IN ('queued', 'sending')"

# A message past its validity is never claimed, neither queued nor whose lease ran out: it
# waits for the sweep (expire_due) to expire and refund it. Bound to `now`.
_VALID = "(expires_at IS NULL OR expires_at >= ?)"


# --- write jobs (run on the writer thread, inside the batch transaction) -----------------------

def _now() -> float:
    return time.time()


def _webhook_projects(conn: sqlite3.Connection) -> set[int]:
    rows = conn.execute(
        "SELECT id FROM projects WHERE webhook_url IS NOT NULL AND webhook_url <> ''").fetchall()
    return {r[0] for r in rows}


def _refund(conn: sqlite3.Connection, refunds: dict[int, int], now: float, reason: str) -> None:
    for project_id, micro in refunds.items():
        if micro:
            conn.execute("UPDATE projects SET balance_micro = balance_micro + ? WHERE id = ?",
                         (micro, project_id))
            conn.execute(
                "INSERT INTO credit_ledger (project_id, delta_micro, reason, at)"
                " VALUES (?, ?, ?, ?)", (project_id, micro, reason, now))


def _add_outbox(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """rows: (project_id, message_id, state, at, error_code, error_message, next_attempt_at)."""
    if rows:
        conn.executemany(
            "INSERT INTO outbox (project_id, message_id, state, at, error_code, error_message,"
            " attempts, next_attempt_at, dead) VALUES (?, ?, ?, ?, ?, ?, 0, ?, 0)", rows)


def _add_events(conn: sqlite3.Connection, events: Sequence[Event]) -> None:
    conn.executemany(
        "INSERT INTO message_events (message_id, state, at, detail) VALUES (?, ?, ?, ?)",
        [(e.message_id, e.state, e.at, e.detail) for e in events])
