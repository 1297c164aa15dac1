"""SQL helpers shared by the PostgreSQL store's areas: column arrays for ``unnest``, events,
refunds, webhook outbox rows, the per-channel receipt lock.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import asyncpg

# First key of the per-channel advisory lock between recorded sends and their receipts.
RECEIPT_LOCK = 0x70677263


def _has_webhook(rows: str) -> str:
    """SQL: whether the project of ``rows`` (an alias) has a webhook. The projects with one
    are read once per statement (ARRAY(…) is evaluated once), not probed per message by a
    join, which cost the outcome write dearly even with no webhook at all (EXPLAIN ANALYZE
    of the outcome write shows it)."""
    return (f"{rows}.project_id = ANY (ARRAY(SELECT id FROM projects"
            " WHERE coalesce(webhook_url, '') <> ''))")


def _now() -> float:
    return time.time()


def _rowcount(status: str) -> int:
    """The count in a command tag such as ``UPDATE 3``."""
    try:
        return int(status.rsplit(" ", 1)[1])
    except (IndexError, ValueError):
        return 0


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Row tuples → one list per column, the arrays that ``unnest`` takes back apart."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]


async def _add_events(
    conn: asyncpg.Connection, events: Sequence[tuple[int, str, float, str | None]]
) -> None:
    if events:
        await conn.execute(
            "INSERT INTO message_events (message_id, state, at, detail)"
            " SELECT * FROM unnest($1::bigint[], $2::text[], $3::float8[], $4::text[])",
            *_columns(events, 4))


async def _refund(
    conn: asyncpg.Connection, refunds: dict[int, int], now: float, reason: str
) -> None:
    # One project at a time in id order: concurrent refunds lock project rows in one order.
    for project_id in sorted(refunds):
        micro = refunds[project_id]
        if micro:
            await conn.execute(
                "UPDATE projects SET balance_micro = balance_micro + $1 WHERE id = $2",
                micro, project_id)
            await conn.execute(
                "INSERT INTO credit_ledger (project_id, delta_micro, reason, at)"
                " VALUES ($1, $2, $3, $4)", project_id, micro, reason, now)


async def _add_outbox(conn: asyncpg.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """rows: (project_id, message_id, state, at, error_code, error_message, next_attempt_at)."""
    if rows:
        await conn.execute(
            "INSERT INTO outbox (project_id, message_id, state, at, error_code, error_message,"
            " attempts, next_attempt_at, dead)"
            " SELECT p, m, s, a, c, e, 0, n, false FROM unnest($1::int[], $2::bigint[],"
            " $3::text[], $4::float8[], $5::text[], $6::text[], $7::float8[])"
            " AS u(p, m, s, a, c, e, n)", *_columns(rows, 7))
