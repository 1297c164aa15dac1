"""Operators' records in PostgreSQL: projects, credits, tokens and channels, and the lookups
of the accept path (token, channel).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg

from pushgate.core.channels import ChannelSpec
from pushgate.core.models import (
    Project,
    TokenInfo,
    TokenRecord,
)
from pushgate.store.postgres.common import _now, _rowcount
from pushgate.store.postgres.connection import PostgresBase
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


# Columns update_channel may change, with the Python type each is stored as.
class PostgresAdmin(PostgresBase):
    """Projects, tokens, channels and credits."""

    async def create_project(
        self, name: str, balance_micro: int, webhook_url: str | None, webhook_secret: str
    ) -> Project:
        async def job(conn: asyncpg.Connection) -> Project:
            now = _now()
            project_id = await conn.fetchval(
                "INSERT INTO projects (name, balance_micro, webhook_url, webhook_secret, active,"
                " created_at) VALUES ($1, $2, $3, $4, true, $5) RETURNING id",
                name, balance_micro, webhook_url, webhook_secret, now)
            if balance_micro:
                await conn.execute(
                    "INSERT INTO credit_ledger (project_id, delta_micro, reason, at)"
                    " VALUES ($1, $2, 'initial credit', $3)", project_id, balance_micro, now)
            return Project(project_id, name, balance_micro, webhook_url, True)

        return await self._tx(job)

    async def get_project(self, project_id: int) -> Project | None:
        row = await self._fetchrow(
            f"SELECT {PROJECT_COLUMNS} FROM projects WHERE id = $1", project_id)
        return project_from_row(row) if row else None

    async def find_project(self, name: str) -> Project | None:
        row = await self._fetchrow(
            f"SELECT {PROJECT_COLUMNS} FROM projects WHERE name = $1", name)
        return project_from_row(row) if row else None

    async def list_projects(self) -> list[Project]:
        rows = await self._fetch(f"SELECT {PROJECT_COLUMNS} FROM projects ORDER BY id")
        return [project_from_row(r) for r in rows]

    async def set_webhook(self, project_id: int, url: str | None, secret: str | None) -> None:
        async def job(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "UPDATE projects SET webhook_url = $1,"
                " webhook_secret = coalesce($2, webhook_secret) WHERE id = $3",
                url, secret, project_id)

        await self._tx(job)

    async def set_incoming_webhook(self, project_id: int, url: str | None) -> None:
        async def job(conn: asyncpg.Connection) -> None:
            await conn.execute("UPDATE projects SET incoming_webhook_url = $1 WHERE id = $2",
                               url, project_id)

        await self._tx(job)

    async def add_credits(self, project_id: int, delta_micro: int, reason: str) -> int:
        async def job(conn: asyncpg.Connection) -> int:
            balance = await conn.fetchval(
                "UPDATE projects SET balance_micro = balance_micro + $1 WHERE id = $2"
                " RETURNING balance_micro", delta_micro, project_id)
            if balance is None:
                raise KeyError(f"no project {project_id}")
            await conn.execute(
                "INSERT INTO credit_ledger (project_id, delta_micro, reason, at)"
                " VALUES ($1, $2, $3, $4)", project_id, delta_micro, reason, _now())
            return int(balance)

        try:
            return await self._tx(job)
        except asyncpg.CheckViolationError:
            raise ValueError("the balance cannot go below zero") from None

    async def create_token(
        self, project_id: int, token_hash: str, label: str, ip_allow: Sequence[str]
    ) -> int:
        async def job(conn: asyncpg.Connection) -> int:
            return int(await conn.fetchval(
                "INSERT INTO api_tokens (project_id, token_hash, label, ip_allow, created_at)"
                " VALUES ($1, $2, $3, $4, $5) RETURNING id",
                project_id, token_hash, label, ",".join(ip_allow), _now()))

        return await self._tx(job)

    async def revoke_token(self, token_id: int) -> bool:
        async def job(conn: asyncpg.Connection) -> bool:
            status = await conn.execute(
                "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                _now(), token_id)
            return _rowcount(status) > 0

        return await self._tx(job)

    async def list_tokens(self, project_id: int) -> list[TokenRecord]:
        rows = await self._fetch(
            f"SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE project_id = $1 ORDER BY id",
            project_id)
        return [token_record(r) for r in rows]

    async def add_channel(self, spec: ChannelSpec) -> ChannelSpec:
        async def job(conn: asyncpg.Connection) -> int:
            return int(await conn.fetchval(
                "INSERT INTO channels (project_id, kind, application, price_micro, price_unit,"
                " max_chars, max_segments, media_allowed, rate_per_second, delay_ms, jitter_ms,"
                " paused, name, config, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8,"
                " $9, $10, $11, $12, $13, $14, $15) RETURNING id",
                spec.project_id, spec.kind, spec.application, spec.price_micro,
                str(spec.price_unit), spec.max_chars, spec.max_segments,
                bool(spec.media_allowed), float(spec.rate_per_second), int(spec.delay_ms),
                int(spec.jitter_ms), bool(spec.paused), spec.name, json.dumps(spec.config),
                _now()))

        channel_id = await self._tx(job)
        channel = await self.get_channel(channel_id)
        assert channel is not None
        return channel

    async def update_channel(self, channel_id: int, **changes: Any) -> ChannelSpec | None:
        values = channel_changes(changes)
        if values:
            assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(values, 1))

            async def job(conn: asyncpg.Connection) -> None:
                await conn.execute(
                    f"UPDATE channels SET {assignments} WHERE id = ${len(values) + 1}",
                    *values.values(), channel_id)

            await self._tx(job)
        return await self.get_channel(channel_id)

    async def list_channels(self, project_id: int | None = None) -> list[ChannelSpec]:
        if project_id is None:
            rows = await self._fetch(f"SELECT {CHANNEL_COLUMNS} FROM channels ORDER BY id")
        else:
            rows = await self._fetch(
                f"SELECT {CHANNEL_COLUMNS} FROM channels WHERE project_id = $1 ORDER BY id",
                project_id)
        return [channel_from_row(r) for r in rows]

    async def get_channel(self, channel_id: int) -> ChannelSpec | None:
        row = await self._fetchrow(
            f"SELECT {CHANNEL_COLUMNS} FROM channels WHERE id = $1", channel_id)
        return channel_from_row(row) if row else None

    async def authenticate(self, token_hash: str) -> TokenInfo | None:
        row = await self._fetchrow(
            f"SELECT {AUTH_COLUMNS} FROM api_tokens t"
            " JOIN projects p ON p.id = t.project_id WHERE t.token_hash = $1", token_hash)
        return token_info(row) if row else None

    async def find_channel(self, project_id: int, application: int) -> ChannelSpec | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"SELECT {CHANNEL_COLUMNS} FROM channels WHERE project_id = $1"
                " AND application = $2 ORDER BY paused, id LIMIT 1", project_id, application)
        return channel_from_row(row) if row else None
