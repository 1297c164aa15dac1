"""Opt-outs in SQLite: the list, the project's keywords, users' STOP / START applied when
their message is recorded, and the event 4 rows they leave for the event webhook.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from pushgate.core.models import InboundMessage
from pushgate.core.optouts import (
    Action,
    KeywordSettings,
    OptOut,
    OptoutEvent,
    keyword_action,
    normal_number,
)
from pushgate.store.sqlite.connection import SQLiteBase

#: The opt-out events a forwarder may claim at ``?`` (now).
_EVENT_DUE = "forward_at IS NOT NULL AND forward_at <= ?"
_SETTINGS = "stop_keywords, start_keywords, stop_reply, start_reply"


class SQLiteOptouts(SQLiteBase):
    """Opt-out lists and keyword events."""

    async def add_optouts(self, project_id: int, numbers: Sequence[str], now: float,
                          source: str) -> int:
        def job(conn: sqlite3.Connection) -> int:
            return sum(conn.execute(
                "INSERT INTO optouts (project_id, number, at, source) VALUES (?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING RETURNING 1",
                (project_id, number, now, source)).fetchone() is not None
                for number in dict.fromkeys(numbers))

        return await self._write(job) if numbers else 0

    async def remove_optouts(self, project_id: int, numbers: Sequence[str]) -> int:
        def job(conn: sqlite3.Connection) -> int:
            return len(conn.execute(
                "DELETE FROM optouts WHERE project_id = ? AND number IN"
                " (SELECT value FROM json_each(?)) RETURNING 1",
                (project_id, json.dumps(list(numbers)))).fetchall())

        return await self._write(job) if numbers else 0

    async def list_optouts(self, project_id: int, after: str, limit: int) -> list[OptOut]:
        return [OptOut(r[0], r[1], r[2]) for r in self._read().execute(
            "SELECT number, at, source FROM optouts WHERE project_id = ? AND number > ?"
            " ORDER BY number LIMIT ?", (project_id, after, limit))]

    async def count_optouts(self, project_id: int) -> int:
        return int(self._read().execute("SELECT count(*) FROM optouts WHERE project_id = ?",
                                        (project_id,)).fetchone()[0])

    async def keyword_settings(self, project_id: int) -> KeywordSettings:
        row = self._read().execute(f"SELECT {_SETTINGS} FROM projects WHERE id = ?",
                                   (project_id,)).fetchone()
        return KeywordSettings() if row is None else KeywordSettings.from_columns(*row)

    async def set_keyword_settings(self, project_id: int, settings: KeywordSettings) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE projects SET stop_keywords = ?, start_keywords = ?,"
                         " stop_reply = ?, start_reply = ? WHERE id = ?",
                         (",".join(settings.stop), ",".join(settings.start),
                          settings.stop_reply, settings.start_reply, project_id))

        await self._write(job)

    async def claim_optout_events(self, limit: int, now: float,
                                  lease_seconds: float) -> list[OptoutEvent]:
        if not self._finds(f"SELECT 1 FROM optout_events WHERE {_EVENT_DUE} LIMIT 1", now):
            return []

        def job(conn: sqlite3.Connection) -> list[OptoutEvent]:
            ids = [r[0] for r in conn.execute(
                "UPDATE optout_events SET forward_at = ? WHERE id IN (SELECT id FROM"
                f" optout_events WHERE {_EVENT_DUE}"
                " ORDER BY forward_at, id LIMIT ?) RETURNING id",
                (now + lease_seconds, now, limit)).fetchall()]
            if not ids:
                return []
            return [_event(r) for r in conn.execute(
                "SELECT e.id, e.project_id, e.channel_id, e.number, e.action, e.keyword, e.at,"
                " coalesce(p.webhook_url, ''), p.webhook_secret, p.stop_keywords,"
                " p.start_keywords, p.stop_reply, p.start_reply, e.forward_attempts"
                " FROM optout_events e JOIN projects p ON p.id = e.project_id"
                " WHERE e.id IN (SELECT value FROM json_each(?)) ORDER BY e.id",
                (json.dumps(ids),))]

        return await self._write(job)

    async def complete_optout_events(self, ids: Sequence[int]) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE optout_events SET forward_at = NULL"
                         " WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(list(ids)),))

        if ids:
            await self._write(job)

    async def retry_optout_events(self, ids: Sequence[int], now: float,
                                  schedule: Sequence[float]) -> None:
        def job(conn: sqlite3.Connection) -> None:
            rows = conn.execute(
                "SELECT id, forward_attempts FROM optout_events"
                " WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(list(ids)),))
            conn.executemany(
                "UPDATE optout_events SET forward_attempts = ?, forward_at = ? WHERE id = ?",
                [(tries, None if tries > len(schedule) else now + schedule[tries - 1], eid)
                 for eid, tries in ((r[0], r[1] + 1) for r in rows.fetchall())])

        if ids:
            await self._write(job)


def apply_keyword(conn: sqlite3.Connection, message: InboundMessage, now: float) -> None:
    """``message`` (just recorded, new) applied when it is one of its project's keywords: the
    opt-out row written or removed, and an event row for the event webhook, due now when the
    project has a webhook or a confirmation to answer."""
    row = conn.execute(
        f"SELECT p.id, coalesce(p.webhook_url, ''), {_SETTINGS} FROM channels c"
        " JOIN projects p ON p.id = c.project_id WHERE c.id = ?",
        (message.channel_id,)).fetchone()
    if row is None:
        return
    settings = KeywordSettings.from_columns(*row[2:])
    action = keyword_action(message.text, settings)
    if action is None:
        return
    project_id, number = row[0], normal_number(message.number)
    if action is Action.STOP:
        conn.execute("INSERT INTO optouts (project_id, number, at, source)"
                     " VALUES (?, ?, ?, 'keyword') ON CONFLICT DO NOTHING",
                     (project_id, number, now))
    else:
        conn.execute("DELETE FROM optouts WHERE project_id = ? AND number = ?",
                     (project_id, number))
    due = now if row[1] or settings.reply_for(action) else None
    conn.execute(
        "INSERT INTO optout_events (project_id, channel_id, number, action, keyword, at,"
        " forward_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (project_id, message.channel_id, number, str(action),
         " ".join(message.text.split()).upper(), message.at, due))


def _event(r: Sequence[Any]) -> OptoutEvent:
    action = Action(r[4])
    settings = KeywordSettings.from_columns(r[9], r[10], r[11], r[12])
    return OptoutEvent(r[0], r[1], r[2], r[3], action, r[5], r[6], r[7], r[8] or "",
                       settings.reply_for(action), r[13])
