"""Operators' records in SQLite: projects, credits, tokens and channels, and the lookups of
the accept path (token, channel).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from pushgate.core.channels import ChannelSpec
from pushgate.core.models import (
    Project,
    TokenInfo,
    TokenRecord,
)
from pushgate.store.rows import (
    AUTH_COLUMNS,
    CHANNEL_COLUMNS,
    PROJECT_COLUMNS,
    TOKEN_COLUMNS,
    channel_changes,
    channel_from_row,
    project_from_row,
    token_info,
    token_record,
)
from pushgate.store.sqlite.common import _now
from pushgate.store.sqlite.connection import SQLiteBase


class SQLiteAdmin(SQLiteBase):
    """Projects, tokens, channels and credits."""

    async def create_project(
        self, name: str, balance_micro: int, webhook_url: str | None, webhook_secret: str
    ) -> Project:
        def job(conn: sqlite3.Connection) -> Project:
            now = _now()
            cur = conn.execute(
                "INSERT INTO projects (name, balance_micro, webhook_url, webhook_secret, active,"
                " created_at) VALUES (?, ?, ?, ?, 1, ?)",
                (name, balance_micro, webhook_url, webhook_secret, now),
            )
            project_id = int(cur.lastrowid or 0)
            if balance_micro:
                conn.execute(
                    "INSERT INTO credit_ledger (project_id, delta_micro, reason, at)"
                    " VALUES (?, ?, 'initial credit', ?)", (project_id, balance_micro, now))
            return Project(project_id, name, balance_micro, webhook_url, True)

        return await self._write(job)

    async def get_project(self, project_id: int) -> Project | None:
        row = self._read().execute(
            f"SELECT {PROJECT_COLUMNS} FROM projects WHERE id = ?", (project_id,)).fetchone()
        return project_from_row(row) if row else None

    async def find_project(self, name: str) -> Project | None:
        row = self._read().execute("SELECT id FROM projects WHERE name = ?", (name,)).fetchone()
        return await self.get_project(row[0]) if row else None

    async def list_projects(self) -> list[Project]:
        rows = self._read().execute(
            f"SELECT {PROJECT_COLUMNS} FROM projects ORDER BY id").fetchall()
        return [project_from_row(r) for r in rows]

    async def set_webhook(self, project_id: int, url: str | None, secret: str | None) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE projects SET webhook_url = ?, webhook_secret = coalesce(?, webhook_secret)"
                " WHERE id = ?", (url, secret, project_id))

        await self._write(job)

    async def set_incoming_webhook(self, project_id: int, url: str | None) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE projects SET incoming_webhook_url = ? WHERE id = ?",
                         (url, project_id))

        await self._write(job)

    async def add_credits(self, project_id: int, delta_micro: int, reason: str) -> int:
        def job(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "UPDATE projects SET balance_micro = balance_micro + ? WHERE id = ?"
                " RETURNING balance_micro", (delta_micro, project_id)).fetchone()
            if row is None:
                raise KeyError(f"no project {project_id}")
            conn.execute(
                "INSERT INTO credit_ledger (project_id, delta_micro, reason, at)"
                " VALUES (?, ?, ?, ?)", (project_id, delta_micro, reason, _now()))
            return int(row[0])

        try:
            return await self._write(job)
        except sqlite3.IntegrityError:
            raise ValueError("the balance cannot go below zero") from None

    async def create_token(
        self, project_id: int, token_hash: str, label: str, ip_allow: Sequence[str]
    ) -> int:
        def job(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO api_tokens (project_id, token_hash, label, ip_allow, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (project_id, token_hash, label, ",".join(ip_allow), _now()))
            return int(cur.lastrowid or 0)

        return await self._write(job)

    async def revoke_token(self, token_id: int) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (_now(), token_id))
            return cur.rowcount > 0

        return await self._write(job)

    async def list_tokens(self, project_id: int) -> list[TokenRecord]:
        rows = self._read().execute(
            f"SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE project_id = ? ORDER BY id",
            (project_id,)).fetchall()
        return [token_record(r) for r in rows]

    async def add_channel(self, spec: ChannelSpec) -> ChannelSpec:
        def job(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO channels (project_id, kind, application, price_micro, price_unit,"
                " max_chars, max_segments, media_allowed, rate_per_second, delay_ms, jitter_ms,"
                " paused, name, config, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (spec.project_id, spec.kind, spec.application, spec.price_micro,
                 str(spec.price_unit), spec.max_chars, spec.max_segments, spec.media_allowed,
                 spec.rate_per_second, spec.delay_ms, spec.jitter_ms, spec.paused, spec.name,
                 json.dumps(spec.config), _now()))
            return int(cur.lastrowid or 0)

        channel_id = await self._write(job)
        channel = await self.get_channel(channel_id)
        assert channel is not None
        return channel

    async def update_channel(self, channel_id: int, **changes: Any) -> ChannelSpec | None:
        values = channel_changes(changes)
        if values:
            assignments = ", ".join(f"{name} = ?" for name in values)

            def job(conn: sqlite3.Connection) -> None:
                conn.execute(f"UPDATE channels SET {assignments} WHERE id = ?",
                             (*values.values(), channel_id))

            await self._write(job)
        return await self.get_channel(channel_id)

    async def list_channels(self, project_id: int | None = None) -> list[ChannelSpec]:
        if project_id is None:
            rows = self._read().execute(
                f"SELECT {CHANNEL_COLUMNS} FROM channels ORDER BY id").fetchall()
        else:
            rows = self._read().execute(
                f"SELECT {CHANNEL_COLUMNS} FROM channels WHERE project_id = ? ORDER BY id",
                (project_id,)).fetchall()
        return [channel_from_row(r) for r in rows]

    async def get_channel(self, channel_id: int) -> ChannelSpec | None:
        row = self._read().execute(
            f"SELECT {CHANNEL_COLUMNS} FROM channels WHERE id = ?", (channel_id,)).fetchone()
        return channel_from_row(row) if row else None

    async def authenticate(self, token_hash: str) -> TokenInfo | None:
        row = self._read().execute(
            f"SELECT {AUTH_COLUMNS} FROM api_tokens t"
            " JOIN projects p ON p.id = t.project_id WHERE t.token_hash = ?",
            (token_hash,)).fetchone()
        return token_info(row) if row else None

    async def find_channel(self, project_id: int, application: int) -> ChannelSpec | None:
        row = self._read().execute(
            f"SELECT {CHANNEL_COLUMNS} FROM channels WHERE project_id = ? AND application = ?"
            " ORDER BY paused, id LIMIT 1", (project_id, application)).fetchone()
        return channel_from_row(row) if row else None
