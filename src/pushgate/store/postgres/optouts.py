"""Opt-outs in PostgreSQL: the list, the project's keywords, users' STOP / START applied when
their message is recorded, and the event 4 rows they leave for the event webhook.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from pushgate.core.models import InboundMessage
from pushgate.core.optouts import (
    Action,
    KeywordSettings,
    OptOut,
    OptoutEvent,
    keyword_action,
    normal_number,
)
from pushgate.store.postgres.connection import PostgresBase

_SETTINGS = "stop_keywords, start_keywords, stop_reply, start_reply"


class PostgresOptouts(PostgresBase):
    """Opt-out lists and keyword events."""

    async def add_optouts(self, project_id: int, numbers: Sequence[str], now: float,
                          source: str) -> int:
        if not numbers:
            return 0
        rows = await self._fetch(
            "INSERT INTO optouts (project_id, number, at, source)"
            " SELECT $1, u.number, $3, $4 FROM unnest($2::text[]) AS u(number)"
            " ON CONFLICT DO NOTHING RETURNING 1",
            project_id, list(dict.fromkeys(numbers)), now, source)
        return len(rows)

    async def remove_optouts(self, project_id: int, numbers: Sequence[str]) -> int:
        if not numbers:
            return 0
        rows = await self._fetch(
            "DELETE FROM optouts WHERE project_id = $1 AND number = ANY($2::text[])"
            " RETURNING 1", project_id, list(numbers))
        return len(rows)

    async def list_optouts(self, project_id: int, after: str, limit: int) -> list[OptOut]:
        return [OptOut(r[0], r[1], r[2]) for r in await self._fetch(
            "SELECT number, at, source FROM optouts WHERE project_id = $1 AND number > $2"
            " ORDER BY number COLLATE \"C\" LIMIT $3", project_id, after, limit)]

    async def count_optouts(self, project_id: int) -> int:
        return int(await self._fetchval("SELECT count(*) FROM optouts WHERE project_id = $1",
                                        project_id))

    async def keyword_settings(self, project_id: int) -> KeywordSettings:
        row = await self._fetchrow(f"SELECT {_SETTINGS} FROM projects WHERE id = $1",
                                   project_id)
        return KeywordSettings() if row is None else KeywordSettings.from_columns(*row)

    async def set_keyword_settings(self, project_id: int, settings: KeywordSettings) -> None:
        await self._fetch("UPDATE projects SET stop_keywords = $1, start_keywords = $2,"
                          " stop_reply = $3, start_reply = $4 WHERE id = $5",
                          ",".join(settings.stop), ",".join(settings.start),
                          settings.stop_reply, settings.start_reply, project_id)

    async def claim_optout_events(self, limit: int, now: float,
                                  lease_seconds: float) -> list[OptoutEvent]:
        async def job(conn: asyncpg.Connection) -> list[OptoutEvent]:
            rows = await conn.fetch(
                "WITH c AS (UPDATE optout_events SET forward_at = $1 WHERE id IN"
                " (SELECT id FROM optout_events WHERE forward_at IS NOT NULL"
                "  AND forward_at <= $2 ORDER BY forward_at, id LIMIT $3"
                "  FOR UPDATE SKIP LOCKED) RETURNING *)"
                " SELECT c.id, c.project_id, c.channel_id, c.number, c.action, c.keyword, c.at,"
                " coalesce(p.webhook_url, ''), p.webhook_secret, p.stop_keywords,"
                " p.start_keywords, p.stop_reply, p.start_reply, c.forward_attempts"
                " FROM c JOIN projects p ON p.id = c.project_id ORDER BY c.id",
                now + lease_seconds, now, limit)
            return [_event(r) for r in rows]

        return await self._tx(job)

    async def complete_optout_events(self, ids: Sequence[int]) -> None:
        if ids:
            await self._fetch("UPDATE optout_events SET forward_at = NULL"
                              " WHERE id = ANY($1::bigint[])", list(ids))

    async def retry_optout_events(self, ids: Sequence[int], now: float,
                                  schedule: Sequence[float]) -> None:
        if not ids:
            return
        # forward_attempts counts tries; past the schedule the event is given up (NULL).
        await self._fetch(
            "UPDATE optout_events SET forward_attempts = forward_attempts + 1,"
            " forward_at = CASE WHEN forward_attempts + 1 > cardinality($3::float8[]) THEN NULL"
            " ELSE $2 + ($3::float8[])[forward_attempts + 1] END"
            " WHERE id = ANY($1::bigint[])", list(ids), now, list(schedule))


async def apply_keywords(conn: asyncpg.Connection, messages: Sequence[InboundMessage],
                         now: float) -> None:
    """The new ``messages`` (just recorded) that are one of their project's keywords applied:
    the opt-out row written or removed, and an event row for the event webhook, due now when
    the project has a webhook or a confirmation to answer."""
    candidates = [m for m in messages if m.text.strip() and len(m.text) <= 64]
    if not candidates:
        return
    projects = {r[0]: r for r in await conn.fetch(
        f"SELECT c.id, p.id, coalesce(p.webhook_url, ''), {_SETTINGS} FROM channels c"
        " JOIN projects p ON p.id = c.project_id WHERE c.id = ANY($1::int[])",
        list({m.channel_id for m in candidates}))}
    for m in candidates:
        row = projects.get(m.channel_id)
        if row is None:
            continue
        settings = KeywordSettings.from_columns(row[3], row[4], row[5], row[6])
        action = keyword_action(m.text, settings)
        if action is None:
            continue
        project_id, number = row[1], normal_number(m.number)
        if action is Action.STOP:
            await conn.execute("INSERT INTO optouts (project_id, number, at, source)"
                               " VALUES ($1, $2, $3, 'keyword') ON CONFLICT DO NOTHING",
                               project_id, number, now)
        else:
            await conn.execute("DELETE FROM optouts WHERE project_id = $1 AND number = $2",
                               project_id, number)
        due = now if row[2] or settings.reply_for(action) else None
        await conn.execute(
            "INSERT INTO optout_events (project_id, channel_id, number, action, keyword, at,"
            " forward_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            project_id, m.channel_id, number, str(action), " ".join(m.text.split()).upper(),
            m.at, due)


def _event(r: Any) -> OptoutEvent:
    action = Action(r[4])
    settings = KeywordSettings.from_columns(r[9], r[10], r[11], r[12])
    return OptoutEvent(r[0], r[1], r[2], r[3], action, r[5], r[6], r[7], r[8] or "",
                       settings.reply_for(action), r[13])

