"""The PostgreSQL store: many API nodes and workers on one database.

asyncpg with a connection pool per process. Every write is one transaction on one pooled
connection; concurrent commits share WAL flushes in the server (its own group commit), so no
writer thread is needed as with SQLite. The behaviour is that of ``sqlite.py`` (the reference);
where SQLite's single writer serialises everything for free, this store locks what it changes:

- accept: the messages go in with one ``INSERT … SELECT FROM unnest(arrays)``, their ids drawn in
  bulk from the table's sequence (so the answer lists them in request order without reading
  them back); the debit is a conditional ``UPDATE … WHERE balance_micro >= total`` in the same
  transaction, taken last so the project row stays locked only until the commit. Concurrent
  pushes on any number of API nodes can never overdraw a balance.
- claims (messages and outbox) take batches with ``FOR UPDATE SKIP LOCKED``: workers never wait
  on each other's rows and never claim the same one.
- outcomes, status updates and events are applied with ``UPDATE … FROM unnest(arrays)`` and
  ``INSERT … SELECT FROM unnest(arrays)``; rows are locked in id order first, so concurrent
  transactions cannot deadlock on them (and are retried if the server reports one anyway).
- channel leases are ``INSERT … ON CONFLICT``: a free or expired lease is taken, one's own
  renewed, anyone else's left alone.
- a push does ``pg_notify('pushgate_messages', channel_id)`` in its transaction; ``listen``
  keeps a dedicated LISTEN connection so idle dispatchers in every process wake at the commit.

Pool size: ``?pool_min_size=2&pool_max_size=10`` in the URL (the defaults), stripped before the
URL reaches asyncpg.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import asyncpg

from pushgate.core.channels import ChannelSpec
from pushgate.core.lifecycle import ERROR_STATES, State, advances
from pushgate.core.models import (
    AcceptResult,
    InboundForward,
    InboundMessage,
    InboundPart,
    OutboundMessage,
    OutboxBatch,
    OutboxItem,
    Project,
    SendResult,
    StatusUpdate,
    TokenInfo,
)
from pushgate.core.push import PushPlan
from pushgate.core.transitions import resolve_part_updates, walk_status_updates
from pushgate.store.base import (
    DEVICE_COLUMNS,
    DEVICE_HISTORY_SECONDS,
    EARLY_UPDATE_TTL,
    EXPIRED_UNCONFIRMED,
    EXPIRY_RECHECK_SECONDS,
    Device,
    DeviceClaim,
    DeviceMessage,
    DeviceQuota,
    InsufficientCredit,
    ReportedMessage,
    RetryPolicy,
    Store,
    StoreUnavailable,
    device_worker,
    fair_share,
)
from pushgate.store.migrate import split_pool_options
from pushgate.store.outage import Backoff, Outage, describe
from pushgate.store.rows import (
    CHANNEL_COLUMNS,
    MESSAGE_DETAIL_COLUMNS,
    PROJECT_COLUMNS,
    channel_from_row,
    inbound_payload,
    message_detail,
    message_dict,
    project_from_row,
    report_payload,
)

T = TypeVar("T")

log = logging.getLogger("pushgate.store")

NOTIFY_CHANNEL = "pushgate_messages"
# First key of the per-channel advisory lock between recorded sends and their receipts.
RECEIPT_LOCK = 0x70677263
# First key of the per-channel advisory lock of users' multi-part SMS being put together.
PARTS_LOCK = 0x70677270
DEFAULT_POOL_MIN = 2
DEFAULT_POOL_MAX = 10
CONNECT_TIMEOUT = 10.0
ACQUIRE_TIMEOUT = 30.0
PING_TIMEOUT = 5.0
# How often an idle LISTEN connection checks that it is still alive.
LISTEN_PING_SECONDS = 30.0
# Transactions the server aborted for a deadlock or a serialisation failure are run again.
TX_ATTEMPTS = 5
# Status updates that arrive while a group of them is being written wait for the next group,
# up to this many updates in one transaction.
STATUS_GROUP_MAX = 5000
# Short OLTP statements only: JIT compilation would cost more than it saves.
SERVER_SETTINGS = {"jit": "off", "application_name": "pushgate"}

# Errors meaning "the database is not there (right now)": the caller answers 503 / retries.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.DatabaseDroppedError,
    asyncpg.InvalidCatalogNameError,                   # the database does not exist (any more)
    asyncpg.InvalidAuthorizationSpecificationError,    # wrong user or password
)
_RETRY_TX = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)


class _QuietPoolFloor(logging.Filter):
    """asyncpg's pool logs a traceback each time it fails to reconnect its idle connections
    (1 s, 2 s, 4 s … apart) while the server is away. That is the outage the worker already
    logs once (``store/outage.py``), not a bug: those records are dropped. Any other error
    of the pool's still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (record.getMessage().startswith("Failed to restore the pool connection")
                    and isinstance(exc, _UNAVAILABLE))


_POOL_FILTER = _QuietPoolFloor()
logging.getLogger("asyncpg.pool").addFilter(_POOL_FILTER)

# Columns update_channel may change, with the Python type each is stored as.
_CHANNEL_CHANGES: dict[str, Callable[[Any], Any]] = {
    "price_micro": int, "price_unit": str, "max_chars": int, "max_segments": int,
    "media_allowed": bool, "rate_per_second": float, "delay_ms": int, "jitter_ms": int,
    "paused": bool, "name": str, "config": str, "paused_reason": str,
}


def _has_webhook(rows: str) -> str:
    """SQL: whether the project of ``rows`` (an alias) has a webhook. The projects with one
    are read once per statement (ARRAY(…) is evaluated once), not probed per message by a
    join: that join cost 8 ms per 1,000 messages even with no webhook at all (EXPLAIN
    ANALYZE of the outcome write)."""
    return (f"{rows}.project_id = ANY (ARRAY(SELECT id FROM projects"
            " WHERE coalesce(webhook_url, '') <> ''))")


_MESSAGE_FIELDS = (
    "id, number, state, reference, error_code, error_message, updated_at, body, media,"
    " media_kind, credit_micro, channel_id, resends"
)


def _now() -> float:
    return time.time()


def _asyncpg_dsn(url: str) -> str:
    """asyncpg takes ``postgresql://`` / ``postgres://`` only: drop a ``+driver`` suffix."""
    return "postgresql://" + url.split("://", 1)[1]


def _rowcount(status: str) -> int:
    """The count in a command tag such as ``UPDATE 3``."""
    try:
        return int(status.rsplit(" ", 1)[1])
    except (IndexError, ValueError):
        return 0


class PostgresStore(Store):
    def __init__(self, url: str, min_size: int | None = None,
                 max_size: int | None = None) -> None:
        url, options = split_pool_options(url)
        self.dsn = _asyncpg_dsn(url)
        self.min_size = min_size or options.get("pool_min_size", DEFAULT_POOL_MIN)
        self.max_size = max_size or options.get("pool_max_size", DEFAULT_POOL_MAX)
        self.min_size = min(self.min_size, self.max_size)
        self._pool: asyncpg.Pool | None = None
        self._message_seq = "messages_id_seq"
        self._status_waiting: deque[tuple[list[StatusUpdate], asyncio.Future[int]]] = deque()
        self._status_writer: asyncio.Task[None] | None = None

    # --- life -----------------------------------------------------------------------------
    async def open(self) -> None:
        try:
            pool = await asyncpg.create_pool(
                self.dsn, min_size=self.min_size, max_size=self.max_size,
                timeout=CONNECT_TIMEOUT, server_settings=SERVER_SETTINGS)
        except (*_UNAVAILABLE, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from None
        try:
            async with pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                await conn.fetchval("SELECT 1 FROM projects LIMIT 1")
                seq = await conn.fetchval("SELECT pg_get_serial_sequence('messages', 'id')")
        except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError) as exc:
            await pool.close()
            raise StoreUnavailable(
                f"cannot use the database: {exc} (run `pushgate migrate` first?)") from None
        except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
            pool.terminate()
            raise StoreUnavailable(f"cannot use the database: {exc}") from None
        self._message_seq = seq or self._message_seq
        self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), 10)
        except (TimeoutError, *_UNAVAILABLE):
            pool.terminate()

    async def ping(self) -> None:
        async with self._conn(PING_TIMEOUT) as conn:
            await conn.fetchval("SELECT 1", timeout=PING_TIMEOUT)

    @contextlib.asynccontextmanager
    async def _conn(self, timeout: float = ACQUIRE_TIMEOUT) -> AsyncIterator[asyncpg.Connection]:
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("the store is not open")
        try:
            async with pool.acquire(timeout=timeout) as conn:
                yield conn
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL: {exc or type(exc).__name__}") from exc
        except asyncpg.InterfaceError as exc:
            # A closing or closed pool, or a connection lost under a statement or a
            # transaction ("… the underlying connection is closed").
            if self._pool is None or "pool" in str(exc) or "closed" in str(exc):
                raise StoreUnavailable(f"PostgreSQL: {exc}") from exc
            raise

    async def _tx(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``fn(conn, *args)`` in one transaction, run again if the server aborted it for a
        deadlock or serialisation failure."""
        for attempt in range(TX_ATTEMPTS):
            try:
                async with self._conn() as conn, conn.transaction():
                    return await fn(conn, *args)
            except _RETRY_TX as exc:
                if attempt + 1 == TX_ATTEMPTS:
                    raise StoreUnavailable(f"transaction kept failing: {exc}") from exc
                await asyncio.sleep(random.uniform(0, 0.005 * 2 ** attempt))
        raise AssertionError("unreachable")

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self._conn() as conn:
            return await conn.fetch(sql, *args)

    async def _fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        async with self._conn() as conn:
            return await conn.fetchrow(sql, *args)

    async def _fetchval(self, sql: str, *args: Any) -> Any:
        async with self._conn() as conn:
            return await conn.fetchval(sql, *args)

    # --- operators --------------------------------------------------------------------------
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

    async def list_tokens(self, project_id: int) -> list[dict[str, Any]]:
        rows = await self._fetch(
            "SELECT id, label, ip_allow, created_at, revoked_at FROM api_tokens"
            " WHERE project_id = $1 ORDER BY id", project_id)
        return [{"id": r[0], "label": r[1], "ip_allow": [ip for ip in r[2].split(",") if ip],
                 "created_at": r[3], "revoked_at": r[4]} for r in rows]

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
        unknown = set(changes) - set(_CHANNEL_CHANGES)
        if unknown:
            raise ValueError(f"cannot change {sorted(unknown)}")
        if "config" in changes:
            changes["config"] = json.dumps(changes["config"])
        values = {name: _CHANNEL_CHANGES[name](value) for name, value in changes.items()}
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

    # --- accept -----------------------------------------------------------------------------
    async def authenticate(self, token_hash: str) -> TokenInfo | None:
        row = await self._fetchrow(
            "SELECT t.id, t.project_id, t.revoked_at, t.ip_allow, p.active FROM api_tokens t"
            " JOIN projects p ON p.id = t.project_id WHERE t.token_hash = $1", token_hash)
        if row is None:
            return None
        return TokenInfo(token_id=row[0], project_id=row[1], revoked=row[2] is not None,
                         ip_allow=[ip for ip in row[3].split(",") if ip],
                         project_active=bool(row[4]))

    async def find_channel(self, project_id: int, application: int) -> ChannelSpec | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"SELECT {CHANNEL_COLUMNS} FROM channels WHERE project_id = $1"
                " AND application = $2 ORDER BY paused, id LIMIT 1", project_id, application)
        return channel_from_row(row) if row else None

    async def accept_push(
        self,
        project_id: int,
        channel: ChannelSpec,
        plan: PushPlan,
        now: float,
        expires_at: float | None,
    ) -> AcceptResult:
        return await self._tx(self._accept, project_id, channel, plan, now, expires_at)

    async def _accept(
        self,
        conn: asyncpg.Connection,
        project_id: int,
        channel: ChannelSpec,
        plan: PushPlan,
        now: float,
        expires_at: float | None,
    ) -> AcceptResult:
        total = plan.credit_total
        # Refuse early, without a lock, what the balance cannot cover now; the debit below
        # decides under the lock.
        balance = await conn.fetchval(
            "SELECT balance_micro FROM projects WHERE id = $1", project_id)
        if balance is None or balance < total:
            raise InsufficientCredit(total, int(balance or 0))

        media_id = None
        if plan.inline_media is not None:
            media = plan.inline_media
            media_id = await conn.fetchval(
                "INSERT INTO media (project_id, kind, content_type, data, created_at)"
                " VALUES ($1, $2, $3, $4, $5) RETURNING id",
                project_id, str(media.kind), media.content_type, media.data, now)
        count = len(plan.accepted)
        row = await conn.fetchrow(
            "WITH p AS (INSERT INTO pushes (project_id, channel_id, priority, entries, accepted,"
            " credit_micro, media_id, created_at, expiry_due)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $10) RETURNING id)"
            " SELECT (SELECT id FROM p),"
            " array(SELECT nextval($9::regclass) FROM generate_series(1, $5))",
            project_id, channel.id, plan.priority, plan.total_entries, count, total, media_id,
            now, self._message_seq, expires_at)
        push_id = int(row[0])
        # Drawn from the sequence in one statement; sorted, they follow the request's order,
        # which is also the queue's FIFO order within a priority.
        ids = sorted(row[1])

        if count:
            _i, numbers, bodies, medias, kinds, references, parts, segments, credits = zip(
                *plan.accepted, strict=True)
            if media_id is not None:
                inline_ref = f"media:{media_id}"
                medias = tuple(inline_ref if m == "inline:" else m for m in medias)
            await conn.execute(
                "INSERT INTO messages (id, push_id, project_id, channel_id, number, body, media,"
                " media_kind, reference, priority, state, parts, segments, credit_micro,"
                " attempts, resends, next_attempt_at, created_at, updated_at, expires_at)"
                " SELECT u.id, $10, $11, $12, u.number, u.body, u.media, u.kind, u.reference,"
                " $13, 'queued', u.parts, u.segments, u.credit, 0, 0, $14, $14, $14, $15"
                " FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],"
                " $6::text[], $7::int[], $8::int[], $9::bigint[])"
                " AS u(id, number, body, media, kind, reference, parts, segments, credit)",
                ids, numbers, bodies, medias, kinds, references, parts, segments, credits,
                push_id, project_id, channel.id, plan.priority, now, expires_at)
            if plan.extras is not None:
                # Only template pushes carry channel data: the plain hot path sends nothing
                # more.
                await conn.execute(
                    "UPDATE messages m SET extra = u.extra FROM unnest($1::bigint[],"
                    " $2::text[]) AS u(id, extra) WHERE m.id = u.id AND u.extra IS NOT NULL",
                    ids, plan.extras)

        # The debit last: the project row stays locked only until the commit. The ledger line
        # and the wake-up for dispatchers (delivered at the commit) go in the same statement.
        row = await conn.fetchrow(
            "WITH d AS (UPDATE projects SET balance_micro = balance_micro - $1"
            " WHERE id = $2 AND balance_micro >= $1 RETURNING balance_micro),"
            " l AS (INSERT INTO credit_ledger (project_id, delta_micro, reason, push_id, at)"
            " SELECT $2, -$1, 'push', $3, $4 FROM d WHERE $1 <> 0)"
            " SELECT balance_micro, pg_notify($5, $6) FROM d",
            total, project_id, push_id, now, NOTIFY_CHANNEL, str(channel.id))
        if row is None:
            balance = await conn.fetchval(
                "SELECT balance_micro FROM projects WHERE id = $1", project_id)
            raise InsufficientCredit(total, int(balance or 0))
        return AcceptResult(push_id=push_id, message_ids=ids, balance_micro=int(row[0]))

    # --- reports ----------------------------------------------------------------------------
    async def get_push(self, project_id: int, push_id: int) -> dict[str, Any] | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT id, channel_id, priority, entries, accepted, credit_micro, created_at"
                " FROM pushes WHERE id = $1 AND project_id = $2", push_id, project_id)
            if row is None:
                return None
            counts = {r[0]: r[1] for r in await conn.fetch(
                "SELECT state, count(*) FROM messages WHERE push_id = $1 GROUP BY state",
                push_id)}
        return {"push_id": row[0], "channel_id": row[1], "priority": row[2], "entries": row[3],
                "accepted": row[4], "credit_micro": row[5], "created_at": row[6],
                "counts": counts}

    async def iter_push_messages(
        self, project_id: int, push_id: int, chunk: int = 1000
    ) -> AsyncIterator[list[dict[str, Any]]]:
        last = 0
        while True:
            rows = await self._fetch(
                f"SELECT {_MESSAGE_FIELDS} FROM messages WHERE push_id = $1"
                " AND project_id = $2 AND id > $3 ORDER BY id LIMIT $4",
                push_id, project_id, last, chunk)
            if not rows:
                return
            last = rows[-1][0]
            yield [message_dict(r) for r in rows]
            if len(rows) < chunk:
                return

    async def get_message(self, project_id: int, message_id: int) -> dict[str, Any] | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"SELECT {MESSAGE_DETAIL_COLUMNS} FROM messages"
                " WHERE id = $1 AND project_id = $2", message_id, project_id)
            if row is None:
                return None
            events = await conn.fetch(
                "SELECT state, at, detail FROM message_events WHERE message_id = $1"
                " ORDER BY id", message_id)
        return message_detail(row, [tuple(e) for e in events])

    async def get_media(self, media_id: int) -> tuple[str, bytes] | None:
        row = await self._fetchrow(
            "SELECT content_type, data FROM media WHERE id = $1", media_id)
        return (row[0], bytes(row[1])) if row else None

    async def sandbox_inbox(self, project_id: int, limit: int) -> list[dict[str, Any]]:
        rows = await self._fetch(
            "SELECT m.id, m.number, m.state, m.reference, m.error_code, m.error_message,"
            " m.updated_at, m.body, m.media, m.media_kind, m.credit_micro, m.channel_id,"
            " m.resends FROM messages m JOIN channels c ON c.id = m.channel_id"
            " WHERE c.project_id = $1 AND c.kind = 'sandbox'"
            " AND m.state NOT IN ('queued', 'sending')"
            " ORDER BY m.updated_at DESC, m.id DESC LIMIT $2", project_id, limit)
        return [message_dict(r) for r in rows]

    # --- dispatch ---------------------------------------------------------------------------
    async def acquire_channel_leases(self, worker_id: str, now: float, ttl: float,
                                     skip_kinds: Sequence[str] = ()) -> list[int]:
        skip = list(skip_kinds)

        async def job(conn: asyncpg.Connection) -> list[int]:
            until = now + ttl
            await conn.execute(
                "INSERT INTO workers (worker_id, heartbeat_at, started_at) VALUES ($1, $2, $2)"
                " ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
                worker_id, now)
            await conn.execute("DELETE FROM workers WHERE heartbeat_at < $1", now - ttl)
            # Paused channels are not sent, and channels of skipped kinds (phones, which fetch
            # their own messages) have no sender: neither takes a share of the workers.
            await conn.execute(
                "DELETE FROM channel_leases l USING channels c"
                " WHERE c.id = l.channel_id AND (c.paused OR c.kind = ANY($1::text[]))", skip)
            await conn.execute("DELETE FROM channel_leases WHERE lease_until < $1", now)
            await conn.execute(
                "UPDATE channel_leases SET lease_until = $1 WHERE worker_id = $2",
                until, worker_id)
            live, active = await conn.fetchrow(
                "SELECT (SELECT count(*) FROM workers),"
                " (SELECT count(*) FROM channels WHERE NOT paused"
                " AND NOT kind = ANY($1::text[]))", skip)
            share = fair_share(active, live)
            mine = sorted(r[0] for r in await conn.fetch(
                "SELECT channel_id FROM channel_leases WHERE worker_id = $1", worker_id))
            if len(mine) > share:
                # Another worker joined: hand back the surplus so it can take it.
                await conn.execute(
                    "DELETE FROM channel_leases WHERE worker_id = $1"
                    " AND channel_id = ANY($2::int[])", worker_id, mine[share:])
            elif len(mine) < share:
                # Free channels only; a live lease of another worker is left alone. A race
                # with another worker taking the same channel ends in DO NOTHING.
                await conn.execute(
                    "INSERT INTO channel_leases (channel_id, worker_id, lease_until)"
                    " SELECT c.id, $1, $2 FROM channels c WHERE NOT c.paused"
                    " AND NOT c.kind = ANY($4::text[])"
                    " AND NOT EXISTS (SELECT 1 FROM channel_leases l WHERE l.channel_id = c.id)"
                    " ORDER BY c.id LIMIT $3 ON CONFLICT (channel_id) DO NOTHING",
                    worker_id, until, share - len(mine), skip)
            rows = await conn.fetch(
                "SELECT channel_id FROM channel_leases WHERE worker_id = $1 ORDER BY channel_id",
                worker_id)
            return [r[0] for r in rows]

        return await self._tx(job)

    async def release_channel_leases(self, worker_id: str) -> None:
        async def job(conn: asyncpg.Connection) -> None:
            await conn.execute("DELETE FROM channel_leases WHERE worker_id = $1", worker_id)
            await conn.execute("DELETE FROM workers WHERE worker_id = $1", worker_id)

        await self._tx(job)

    async def claim_messages(
        self, channel_id: int, worker_id: str, limit: int, now: float, lease_seconds: float,
        min_priority: int = 0,
    ) -> list[OutboundMessage]:
        async def job(conn: asyncpg.Connection) -> list[OutboundMessage]:
            # A message whose lease ran out while `sending` may have reached the provider:
            # claim it again (nothing is lost) and count it as a possible re-send (nothing is
            # doubled silently). Then fresh ones up to the limit. SKIP LOCKED: rows another
            # worker is claiming right now are passed over, never waited for or taken twice.
            # Both candidate lists are limited by the parameter itself and cut by the outer
            # LIMIT, which pulls (and locks) fresh rows only as far as it needs them. A limit
            # computed from the expired count made the planner guess a tenth of the table
            # and join by a sequential scan of all messages (180 ms per claim at 200,000).
            rows = await conn.fetch(
                # A message past its validity is never claimed, neither queued nor whose
                # lease ran out: the sweep (expire_due) expires and refunds it.
                "WITH expired AS (SELECT id FROM messages WHERE channel_id = $1"
                "  AND state = 'sending' AND priority >= $6 AND lease_until < $2"
                "  AND (expires_at IS NULL OR expires_at >= $2)"
                "  ORDER BY priority DESC, id LIMIT $3 FOR UPDATE SKIP LOCKED),"
                " fresh AS (SELECT id FROM messages WHERE channel_id = $1"
                "  AND state = 'queued' AND priority >= $6 AND next_attempt_at <= $2"
                "  AND (expires_at IS NULL OR expires_at >= $2)"
                "  ORDER BY priority DESC, id LIMIT $3 FOR UPDATE SKIP LOCKED),"
                " c AS (SELECT id, true AS resend FROM expired"
                "  UNION ALL SELECT id, false FROM fresh LIMIT $3),"
                # A message's first claim is kept in its columns; only a later one is an
                # event row (core/history.py). SET sees the row as it was: `m.claims = 0`
                # is the count before this claim.
                " claimed AS (UPDATE messages m SET state = 'sending', lease_until = $4,"
                "  leased_by = $5, attempts = m.attempts + 1,"
                "  resends = m.resends + CASE WHEN c.resend THEN 1 ELSE 0 END, updated_at = $2,"
                "  claims = m.claims + 1,"
                "  first_claim_at = CASE WHEN m.claims = 0 AND NOT c.resend THEN $2"
                "  ELSE m.first_claim_at END,"
                "  first_claim_by = CASE WHEN m.claims = 0 AND NOT c.resend THEN $5"
                "  ELSE m.first_claim_by END"
                "  FROM c WHERE m.id = c.id"
                "  RETURNING m.id, m.push_id, m.project_id, m.channel_id, m.number, m.body,"
                "  m.media, m.media_kind, m.parts, m.priority, m.attempts, c.resend, m.extra,"
                "  m.claims),"
                " events AS (INSERT INTO message_events (message_id, state, at, detail)"
                "  SELECT id, 'sending', $2, 'worker ' || $5 || ', attempt ' || attempts"
                "  || CASE WHEN resend THEN ': possible re-send, previous lease expired'"
                "  ELSE '' END FROM claimed WHERE resend OR claims > 1 ORDER BY resend, id)"
                " SELECT * FROM claimed ORDER BY priority DESC, id",
                channel_id, now, limit, now + lease_seconds, worker_id, min_priority)
            return [OutboundMessage(
                id=r[0], push_id=r[1], project_id=r[2], channel_id=r[3], number=r[4],
                text=r[5], media_url=r[6], media_kind=r[7], parts=r[8], priority=r[9],
                attempts=r[10], possible_resend=r[11],
                extra=json.loads(r[12]) if r[12] else None) for r in rows]

        return await self._tx(job)

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

    async def release_messages(self, worker_id: str, message_ids: Sequence[int]) -> None:
        async def job(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "WITH r AS (UPDATE messages SET state = 'queued', lease_until = NULL,"
                " leased_by = NULL, attempts = greatest(attempts - 1, 0)"
                " WHERE id = ANY($1::bigint[]) AND state = 'sending' AND leased_by = $2"
                " RETURNING id)"
                " INSERT INTO message_events (message_id, state, at, detail)"
                " SELECT id, 'queued', $3, 'released unsent by worker ' || $2 FROM r ORDER BY id",
                list(message_ids), worker_id, time.time())

        if message_ids:
            await self._tx(job)

    async def apply_status_updates(self, updates: Sequence[StatusUpdate]) -> int:
        """Group commit: calls that arrive while a group is being written go together in the
        next transaction, through one set of statements. Each waits for that commit and is
        told what its own updates changed.

        Provider callbacks come one small call each. With a transaction per call they queued
        behind the channel's receipt lock: 340 callbacks/s per channel, p99 288 ms with 64 in
        flight, where a WhatsApp number at 80 messages/s sends up to 240. Grouped: 5,651/s,
        p99 19 ms (bench/status_updates.py, docs/benchmarks.md)."""
        if not updates:
            return 0
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._status_waiting.append((list(updates), future))
        writer = self._status_writer
        if writer is None or writer.done() or writer.get_loop() is not loop:
            self._status_writer = loop.create_task(self._write_status_groups())
        return await future

    async def _write_status_groups(self) -> None:
        waiting = self._status_waiting
        group: list[tuple[list[StatusUpdate], asyncio.Future[int]]] = []
        try:
            while waiting:
                group = [waiting.popleft()]
                size = len(group[0][0])
                while waiting and size + len(waiting[0][0]) <= STATUS_GROUP_MAX:
                    size += len(waiting[0][0])
                    group.append(waiting.popleft())
                await self._write_status_group(group)
        finally:
            # Cancelled with the loop: nobody may wait forever (settling is a no-op for the
            # callers already answered).
            for _, future in group:
                _settle(future, StoreUnavailable("the store is closing"))
            while waiting:
                _settle(waiting.popleft()[1], StoreUnavailable("the store is closing"))

    async def _write_status_group(
        self, group: list[tuple[list[StatusUpdate], asyncio.Future[int]]]
    ) -> None:
        try:
            counts = await self._tx(self._apply_status_group, [u for u, _ in group])
        except StoreUnavailable as exc:
            for _, future in group:
                _settle(future, exc)
            return
        except Exception as exc:
            if len(group) == 1:
                _settle(group[0][1], exc)
                return
            # One caller's updates broke the group: each on its own, so the others still land.
            for updates, future in group:
                try:
                    [count] = await self._tx(self._apply_status_group, [updates])
                except Exception as own:
                    _settle(future, own)
                else:
                    _settle(future, count)
            return
        for (_, future), count in zip(group, counts, strict=True):
            _settle(future, count)

    async def _apply_status_group(
        self, conn: asyncpg.Connection, calls: list[list[StatusUpdate]]
    ) -> list[int]:
        """Several callers' updates applied as one list, in arrival order (the same result as
        one after the other); returns how many transitions each caller's updates made."""
        tagged = [replace(u, group=i) for i, updates in enumerate(calls) for u in updates]
        counts = [0] * len(calls)
        for _mid, update in await self._apply_status(conn, tagged):
            counts[update.group] += 1
        return counts

    async def _apply_early_updates(
        self, conn: asyncpg.Connection, keys: list[tuple[int, str]]
    ) -> None:
        """Status updates that arrived before these provider ids were recorded: apply now."""
        if not keys:
            return
        rows = await conn.fetch(
            "DELETE FROM early_updates e USING unnest($1::int[], $2::text[]) AS k(c, p)"
            " WHERE e.channel_id = k.c AND e.provider_id = k.p"
            " RETURNING e.id, e.channel_id, e.provider_id, e.state, e.at, e.error_code,"
            " e.error_message", *_columns(keys, 2))
        if rows:
            rows = sorted(rows, key=lambda r: r[0])
            await self._apply_status(conn, [
                StatusUpdate(state=State(r[3]), at=r[4], channel_id=r[1], provider_id=r[2],
                             error_code=r[5], error_message=r[6]) for r in rows],
                keep_early=False)

    async def _apply_status(
        self, conn: asyncpg.Connection, updates: list[StatusUpdate], keep_early: bool = True
    ) -> list[tuple[int, StatusUpdate]]:
        """Returns the moves made: (message id, the update that moved it)."""
        by_provider_channels = sorted({u.channel_id for u in updates if u.message_id is None
                                       and u.provider_id is not None
                                       and u.channel_id is not None})
        if by_provider_channels:   # see _record_outcomes
            await conn.execute("SELECT pg_advisory_xact_lock($1, c) FROM unnest($2::int[]) c",
                               RECEIPT_LOCK, by_provider_channels)
        # Parts of multi-part sends first: their updates become their message's.
        part_keys = sorted({(u.channel_id or 0, u.provider_id) for u in updates
                            if u.message_id is None and u.provider_id is not None})
        part_events: list[Any] = []
        if part_keys:
            ref_of = {(r[0], r[1]): (r[2], r[3]) for r in await conn.fetch(
                "SELECT r.channel_id, r.provider_id, r.message_id, r.part FROM provider_refs r"
                " JOIN unnest($1::int[], $2::text[]) AS k(c, p)"
                " ON r.channel_id = k.c AND r.provider_id = k.p", *_columns(part_keys, 2))}
            if ref_of:
                part_states: dict[int, dict[int, State]] = {}
                for mid, part, state in await conn.fetch(
                        "SELECT message_id, part, state FROM provider_refs"
                        " WHERE message_id = ANY($1::bigint[]) ORDER BY message_id, part"
                        " FOR UPDATE", sorted({v[0] for v in ref_of.values()})):
                    merged = part_states.setdefault(mid, {})
                    current = merged.get(part)
                    if current is None or advances(current, State(state)):
                        merged[part] = State(state)
                updates, part_changes, part_events = resolve_part_updates(
                    updates, ref_of, part_states)
                if part_changes:
                    await conn.execute(
                        "UPDATE provider_refs r SET state = u.state FROM unnest($1::bigint[],"
                        " $2::int[], $3::text[]) AS u(mid, part, state)"
                        " WHERE r.message_id = u.mid AND r.part = u.part",
                        *_columns([(m, p, st.value) for m, p, st in part_changes], 3))
        by_id = {u.message_id for u in updates if u.message_id is not None}
        by_provider = [(u.channel_id, u.provider_id) for u in updates
                       if u.message_id is None and u.provider_id is not None]
        provider_map: dict[tuple[int | None, str], int] = {}
        if by_provider:
            for r in await conn.fetch(
                    "SELECT DISTINCT ON (m.channel_id, m.provider_id) m.id, m.channel_id,"
                    " m.provider_id FROM messages m JOIN unnest($1::int[], $2::text[])"
                    " AS v(channel_id, provider_id) ON m.channel_id = v.channel_id"
                    " AND m.provider_id = v.provider_id"
                    " ORDER BY m.channel_id, m.provider_id, m.id", *_columns(by_provider, 2)):
                provider_map[(r[1], r[2])] = r[0]
        early = [u for u in updates if u.message_id is None and u.provider_id is not None
                 and u.channel_id is not None
                 and (u.channel_id, u.provider_id) not in provider_map]
        if early and keep_early:
            # A receipt that overtook its send's outcome: kept until the id is recorded.
            await conn.executemany(
                "INSERT INTO early_updates (channel_id, provider_id, state, at, error_code,"
                " error_message, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                [(u.channel_id, u.provider_id, u.state.value, u.at, u.error_code,
                  u.error_message, _now()) for u in early])
        rows: dict[int, list[Any]] = {}
        wanted = by_id | set(provider_map.values())
        if wanted:
            for r in await conn.fetch(
                    f"SELECT m.id, m.project_id, m.state, {_has_webhook('m')}, m.credit_micro"
                    " FROM messages m"
                    " WHERE m.id = ANY($1::bigint[]) ORDER BY m.id FOR UPDATE OF m",
                    sorted(wanted)):
                rows[r[0]] = list(r)
        states = {mid: State(row[2]) for mid, row in rows.items()}
        moves, events = walk_status_updates(
            updates, states, lambda u: u.message_id if u.message_id is not None
            else provider_map.get((u.channel_id, u.provider_id or "")))
        events = part_events + events
        refunds: dict[int, int] = defaultdict(int)
        for mid, u in moves:
            if u.state is State.REFUNDED:
                refunds[rows[mid][1]] += rows[mid][4]
        await _refund(conn, refunds, _now(), "refund: provider reported failure")
        # Per message, the net effect of its moves in order (the SQLite store applies them
        # one after the other; one UPDATE … FROM must see each message once).
        changes: dict[int, list[Any]] = {}
        outbox: list[tuple[Any, ...]] = []
        for mid, u in moves:
            # [state, code, message, at, keep the stored error when none is given]
            net = changes.setdefault(mid, [None, None, None, None, True])
            net[0] = u.state.value
            if u.state in ERROR_STATES:
                # A failure keeps the error it was reported with if it brings none
                # (refunded after failed).
                if u.error_code is not None:
                    net[1] = u.error_code
                if u.error_message is not None:
                    net[2] = u.error_message
            else:
                # A message moving on (delivered, read) sheds an earlier attempt's error.
                net[1], net[2], net[4] = u.error_code, u.error_message, False
            net[3] = u.at
            if rows[mid][3]:
                outbox.append((rows[mid][1], mid, u.state.value, u.at, u.error_code,
                               u.error_message, u.at))
        if changes:
            # The state changes and their events in one statement.
            await conn.execute(
                "WITH e AS (INSERT INTO message_events (message_id, state, at, detail)"
                " SELECT * FROM unnest($7::bigint[], $8::text[], $9::float8[], $10::text[]))"
                " UPDATE messages m SET state = u.state,"
                " error_code = coalesce(u.code, CASE WHEN u.keep THEN m.error_code END),"
                " error_message = coalesce(u.msg, CASE WHEN u.keep THEN m.error_message END),"
                " updated_at = u.at, lease_until = NULL, leased_by = NULL"
                " FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::float8[],"
                " $6::bool[]) AS u(id, state, code, msg, at, keep) WHERE m.id = u.id",
                *_columns([(mid, *net) for mid, net in changes.items()], 6),
                *_columns(events, 4))
        else:
            await _add_events(conn, events)
        await _add_outbox(conn, outbox)
        return moves

    async def sent_since(self, channel_id: int, since: float) -> int:
        return int(await self._fetchval(
            "SELECT count(*) FROM messages WHERE channel_id = $1 AND submitted_at >= $2",
            channel_id, since))

    async def submitted_before(self, channel_id: int, before: float, limit: int) -> list[int]:
        rows = await self._fetch(
            "SELECT id FROM messages WHERE channel_id = $1 AND state = 'submitted'"
            " AND updated_at <= $2 ORDER BY priority DESC, id LIMIT $3",
            channel_id, before, limit)
        return [r[0] for r in rows]

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

    async def has_ready_messages(self, channel_id: int, now: float,
                                 min_priority: int = 0) -> bool:
        return bool(await self._fetchval(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE channel_id = $1 AND state = 'queued'"
            " AND priority >= $3 AND next_attempt_at <= $2"
            " AND (expires_at IS NULL OR expires_at >= $2)) OR EXISTS (SELECT 1 FROM messages"
            " WHERE channel_id = $1 AND state = 'sending' AND priority >= $3"
            " AND lease_until < $2 AND (expires_at IS NULL OR expires_at >= $2))",
            channel_id, now, min_priority))

    async def listen(self, on_channel: Callable[[int], None],
                     outage: Outage | None = None) -> None:
        """Until cancelled: a dedicated connection LISTENs on ``pushgate_messages`` and calls
        ``on_channel`` with each channel id a push NOTIFYs; reconnects with back-off if the
        connection drops (meanwhile dispatchers fall back to their poll). The loss and the
        reconnection are reported to ``outage`` when given (once per outage for the whole
        process), else logged."""

        def handler(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            try:
                channel_id = int(payload)
            except ValueError:
                return
            on_channel(channel_id)

        def failed(exc: BaseException, began: float) -> None:
            if outage is not None:
                outage.failed(exc, began)
            else:
                log.warning("LISTEN connection lost (%s); reconnecting", describe(exc))

        backoff = Backoff()
        while True:
            conn: asyncpg.Connection | None = None
            began = time.monotonic()
            try:
                conn = await asyncpg.connect(self.dsn, timeout=CONNECT_TIMEOUT,
                                             server_settings=SERVER_SETTINGS)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(NOTIFY_CHANNEL, handler)
                if outage is not None:
                    outage.reached(began)
                backoff.reset()
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), LISTEN_PING_SECONDS)
                    if not lost.is_set():
                        began = time.monotonic()
                        await conn.fetchval("SELECT 1", timeout=PING_TIMEOUT)
                failed(StoreUnavailable("the LISTEN connection was closed"), time.monotonic())
            except (*_UNAVAILABLE, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                failed(exc, began)
            finally:
                if conn is not None and not conn.is_closed():
                    try:
                        await asyncio.wait_for(conn.close(), 2)
                    except BaseException:
                        conn.terminate()
                        raise
            await asyncio.sleep(backoff.next())

    # --- webhooks ---------------------------------------------------------------------------
    async def claim_outbox(
        self, worker_id: str, limit: int, now: float, lease_seconds: float
    ) -> list[OutboxBatch]:
        async def job(conn: asyncpg.Connection) -> list[OutboxBatch]:
            # Pushing next_attempt_at past the lease is the lease: a crashed deliverer's items
            # come back when it passes, and a successful one deletes them.
            rows = await conn.fetch(
                "WITH c AS (SELECT id FROM outbox WHERE NOT dead AND next_attempt_at <= $1"
                " ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED),"
                " u AS (UPDATE outbox o SET next_attempt_at = $3 FROM c WHERE o.id = c.id"
                " RETURNING o.id, o.project_id, o.attempts, o.state, o.at, o.error_code,"
                " o.error_message, o.message_id)"
                " SELECT u.id, u.project_id, u.attempts, u.state, u.at, u.error_code,"
                " u.error_message, m.push_id, m.id, m.number, m.reference, m.body, m.media,"
                " m.media_kind, m.channel_id, p.webhook_url, p.webhook_secret FROM u"
                " JOIN messages m ON m.id = u.message_id JOIN projects p ON p.id = u.project_id"
                " ORDER BY u.id", now, limit, now + lease_seconds)
            batches: dict[int, OutboxBatch] = {}
            orphaned = []
            for r in rows:
                url = r[15]
                if not url:
                    orphaned.append(r[0])   # the project removed its webhook since
                    continue
                batch = batches.get(r[1])
                if batch is None:
                    batch = batches[r[1]] = OutboxBatch(project_id=r[1], url=url,
                                                        secret=r[16] or "")
                batch.items.append(OutboxItem(id=r[0], project_id=r[1], attempts=r[2],
                                              payload=report_payload(r)))
            if orphaned:
                await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", orphaned)
            return list(batches.values())

        return await self._tx(job)

    async def complete_outbox(self, ids: Sequence[int]) -> None:
        async def job(conn: asyncpg.Connection) -> None:
            await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", list(ids))

        if ids:
            await self._tx(job)

    async def retry_outbox(
        self, ids: Sequence[int], now: float, schedule: Sequence[float]
    ) -> None:
        async def job(conn: asyncpg.Connection) -> None:
            # `attempts` on the right is the value before this update; the schedule array is
            # 1-based: try n waits schedule[n].
            await conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, dead = attempts + 1 > $3,"
                " next_attempt_at = CASE WHEN attempts + 1 > $3 THEN $2"
                " ELSE $2 + ($4::float8[])[attempts + 1] END WHERE id = ANY($1::bigint[])",
                list(ids), now, len(schedule), [float(s) for s in schedule])

        if ids:
            await self._tx(job)

    # --- inbound ----------------------------------------------------------------------------
    async def record_inbound(self, messages: Sequence[InboundMessage], now: float) -> int:
        async def job(conn: asyncpg.Connection) -> int:
            rows = await conn.fetch(
                "INSERT INTO inbound_messages (project_id, channel_id, number, body, type,"
                " provider_id, media_url, name, raw, at, forward_at)"
                " SELECT c.project_id, c.id, u.number, u.body, u.type, u.provider_id,"
                " u.media_url, u.name, u.raw, u.at,"
                " CASE WHEN coalesce(p.incoming_webhook_url, '') <> '' THEN $10::float8 END"
                " FROM unnest($1::int[], $2::text[], $3::text[], $4::int[], $5::text[],"
                " $6::text[], $7::text[], $8::text[], $9::float8[])"
                " AS u(channel_id, number, body, type, provider_id, media_url, name, raw, at)"
                " JOIN channels c ON c.id = u.channel_id JOIN projects p ON p.id = c.project_id"
                " ON CONFLICT (channel_id, provider_id) DO NOTHING RETURNING id",
                *_columns([(m.channel_id, m.number, m.text, m.type, m.provider_id, m.media_url,
                            m.name, json.dumps(m.raw, default=str), m.at) for m in messages], 9),
                now)
            return len(rows)

        return await self._tx(job) if messages else 0

    async def add_inbound_parts(self, parts: Sequence[InboundPart]) -> list[InboundPart]:
        async def job(conn: asyncpg.Connection) -> list[InboundPart]:
            # Parts of one message arriving at once (two binds, a channel changing hands)
            # wait for each other, so one of them sees the message whole.
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1, c) FROM unnest($2::int[]) c ORDER BY c",
                PARTS_LOCK, sorted({p.channel_id for p in parts}))
            await conn.execute(
                "INSERT INTO inbound_parts (channel_id, number, destination, reference, total,"
                " seq, data_coding, data, at) SELECT * FROM unnest($1::int[], $2::text[],"
                " $3::text[], $4::int[], $5::int[], $6::int[], $7::int[], $8::bytea[],"
                " $9::float8[]) ON CONFLICT DO NOTHING",
                *_columns([(p.channel_id, p.number, p.destination, p.reference, p.total, p.seq,
                            p.data_coding, p.data, p.at) for p in parts], 9))
            keys = list(dict.fromkeys(p.key for p in parts))
            rows = await conn.fetch(
                "SELECT p.channel_id, p.number, p.destination, p.reference, p.total, p.seq,"
                " p.data_coding, p.data, p.at FROM inbound_parts p JOIN unnest($1::int[],"
                " $2::text[], $3::text[], $4::int[], $5::int[])"
                " AS k(channel_id, number, destination, reference, total)"
                " USING (channel_id, number, destination, reference, total)"
                " ORDER BY p.channel_id, p.number, p.destination, p.reference, p.total, p.seq",
                *_columns(keys, 5))
            return [_inbound_part(r) for r in rows]

        return await self._tx(job) if parts else []

    async def due_inbound_parts(self, channel_id: int, before: float,
                                limit: int) -> list[InboundPart]:
        rows = await self._fetch(
            "SELECT p.channel_id, p.number, p.destination, p.reference, p.total, p.seq,"
            " p.data_coding, p.data, p.at FROM inbound_parts p JOIN"
            " (SELECT number, destination, reference, total FROM inbound_parts"
            "  WHERE channel_id = $1 GROUP BY number, destination, reference, total"
            "  HAVING min(at) < $2 ORDER BY min(at) LIMIT $3) d"
            " USING (number, destination, reference, total)"
            " WHERE p.channel_id = $1 ORDER BY p.number, p.destination, p.reference,"
            " p.total, p.seq", channel_id, before, limit)
        return [_inbound_part(r) for r in rows]

    async def drop_inbound_parts(self, parts: Sequence[InboundPart]) -> None:
        async def job(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "DELETE FROM inbound_parts p USING unnest($1::int[], $2::text[], $3::text[],"
                " $4::int[], $5::int[], $6::int[])"
                " AS k(channel_id, number, destination, reference, total, seq)"
                " WHERE (p.channel_id, p.number, p.destination, p.reference, p.total, p.seq)"
                " = (k.channel_id, k.number, k.destination, k.reference, k.total, k.seq)",
                *_columns([(*p.key, p.seq) for p in parts], 6))

        if parts:
            await self._tx(job)

    async def claim_inbound(
        self, limit: int, now: float, lease_seconds: float
    ) -> list[InboundForward]:
        async def job(conn: asyncpg.Connection) -> list[InboundForward]:
            rows = await conn.fetch(
                "WITH c AS (UPDATE inbound_messages SET forward_at = $1 WHERE id IN"
                " (SELECT id FROM inbound_messages WHERE forward_at <= $2"
                " ORDER BY forward_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING *)"
                " SELECT i.id, i.project_id, i.channel_id, i.number, i.body, i.type,"
                " i.provider_id, i.media_url, i.name, ch.application, p.incoming_webhook_url,"
                " p.webhook_secret, i.forward_attempts, i.raw FROM c i"
                " JOIN channels ch ON ch.id = i.channel_id JOIN projects p ON p.id = i.project_id"
                " ORDER BY i.id", now + lease_seconds, now, limit)
            return [InboundForward(r[0], r[1], r[10] or "", r[11] or "", r[12],
                                   inbound_payload(r)) for r in rows]

        return await self._tx(job)

    async def complete_inbound(self, ids: Sequence[int]) -> None:
        async def job(conn: asyncpg.Connection) -> None:
            await conn.execute("UPDATE inbound_messages SET forward_at = NULL"
                               " WHERE id = ANY($1::bigint[])", list(ids))

        if ids:
            await self._tx(job)

    async def retry_inbound(
        self, ids: Sequence[int], now: float, schedule: Sequence[float]
    ) -> None:
        async def job(conn: asyncpg.Connection) -> None:
            rows = await conn.fetch(
                "SELECT id, forward_attempts FROM inbound_messages WHERE id = ANY($1::bigint[])"
                " ORDER BY id FOR UPDATE", list(ids))
            await conn.executemany(
                "UPDATE inbound_messages SET forward_attempts = $1, forward_at = $2"
                " WHERE id = $3",
                [(tries, None if tries > len(schedule) else now + schedule[tries - 1], mid)
                 for mid, tries in ((r[0], r[1] + 1) for r in rows)])

        if ids:
            await self._tx(job)

    async def outbox_stats(self) -> dict[str, int]:
        row = await self._fetchrow(
            "SELECT count(*) FILTER (WHERE NOT dead), count(*) FILTER (WHERE dead) FROM outbox")
        assert row is not None
        return {"pending": int(row[0]), "dead": int(row[1])}

    # --- devices ----------------------------------------------------------------------------
    async def register_device(self, device: Device, token_hash: str) -> None:
        async def job(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "INSERT INTO devices (id, channel_id, project_id, name, token_hash, push_token,"
                " user_agent, health, created_at, last_seen_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                device.id, device.channel_id, device.project_id, device.name, token_hash,
                device.push_token, device.user_agent, json.dumps(device.health or {}),
                device.created_at, device.last_seen_at)

        await self._tx(job)

    async def device_by_token(self, token_hash: str) -> Device | None:
        row = await self._fetchrow(
            f"SELECT {DEVICE_COLUMNS} FROM devices WHERE token_hash = $1", token_hash)
        return _device_from_row(row) if row else None

    async def get_device(self, device_id: str) -> Device | None:
        row = await self._fetchrow(f"SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1",
                                   device_id)
        return _device_from_row(row) if row else None

    async def list_devices(self, channel_id: int | None = None) -> list[Device]:
        async with self._conn() as conn:
            if channel_id is None:
                rows = await conn.fetch(
                    f"SELECT {DEVICE_COLUMNS} FROM devices ORDER BY created_at, id")
            else:
                rows = await conn.fetch(
                    f"SELECT {DEVICE_COLUMNS} FROM devices WHERE channel_id = $1"
                    " ORDER BY created_at, id", channel_id)
            held = {r[0]: r[1] for r in await conn.fetch(
                "SELECT leased_by, count(*) FROM messages WHERE channel_id = ANY($1::int[])"
                " AND state = 'sending' AND lease_until >= $2 GROUP BY leased_by",
                sorted({r[1] for r in rows}), _now())}
        return [_device_from_row(r, held.get(device_worker(r[0]), 0)) for r in rows]

    async def touch_device(
        self,
        device_id: str,
        now: float,
        *,
        user_agent: str | None = None,
        push_token: str | None = None,
        health: dict[str, Any] | None = None,
    ) -> None:
        async def job(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "UPDATE devices SET last_seen_at = greatest(coalesce(last_seen_at, 0), $2),"
                " user_agent = coalesce($3, user_agent), push_token = coalesce($4, push_token),"
                " health = CASE WHEN $5::text IS NULL THEN health"
                " ELSE (health::jsonb || $5::jsonb)::text END WHERE id = $1",
                device_id, now, user_agent, push_token, json.dumps(health) if health else None)

        await self._tx(job)

    async def revoke_devices(
        self, now: float, *, device_id: str | None = None, channel_id: int | None = None
    ) -> int:
        if device_id is None and channel_id is None:
            raise ValueError("revoke_devices needs a device_id or a channel_id")

        async def job(conn: asyncpg.Connection) -> int:
            if device_id is not None:
                status = await conn.execute(
                    "UPDATE devices SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                    now, device_id)
            else:
                status = await conn.execute(
                    "UPDATE devices SET revoked_at = $1 WHERE channel_id = $2"
                    " AND revoked_at IS NULL", now, channel_id)
            return _rowcount(status)

        return await self._tx(job)

    async def claim_for_device(
        self, device_id: str, quota: DeviceQuota, now: float
    ) -> DeviceClaim:
        return await self._tx(_claim_for_device, device_id, quota, now)

    async def note_device_reports(
        self,
        device_id: str,
        reports: Sequence[tuple[int, str, float]],
        now: float,
        lease_seconds: float,
    ) -> dict[int, ReportedMessage]:
        return await self._tx(_note_device_reports, device_id, list(reports), now,
                              lease_seconds)

    async def pause_device(self, device_id: str, until: float) -> None:
        async def job(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "UPDATE devices SET paused_until = greatest(paused_until, $2) WHERE id = $1",
                device_id, until)

        await self._tx(job)

    async def request_reconnect(self, channel_id: int, now: float) -> int:
        async def job(conn: asyncpg.Connection) -> int:
            return _rowcount(await conn.execute(
                "UPDATE devices SET reconnect_at = $2 WHERE channel_id = $1"
                " AND revoked_at IS NULL", channel_id, now))

        return await self._tx(job)

    async def cancel_channel_queue(
        self, channel_id: int, now: float, reason: str, include_in_flight: bool = False
    ) -> tuple[int, int]:
        return await self._tx(_cancel_queue, channel_id, now, reason, include_in_flight)

    async def channel_queue_counts(self, channel_id: int) -> dict[str, int]:
        rows = await self._fetch(
            "SELECT state, count(*) FROM messages WHERE channel_id = $1"
            " AND state IN ('queued', 'sending') GROUP BY state", channel_id)
        counts = {r[0]: int(r[1]) for r in rows}
        return {"queued": counts.get("queued", 0), "sending": counts.get("sending", 0)}


# --- helpers (inside a caller's transaction) ---------------------------------------------------

def _settle(future: asyncio.Future[int], outcome: int | BaseException) -> None:
    """Answer a waiting caller, unless it stopped waiting (cancelled)."""
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


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


# --- devices ------------------------------------------------------------------------------------
def _device_from_row(row: Sequence[Any], in_flight: int = 0) -> Device:
    return Device(id=row[0], channel_id=row[1], project_id=row[2], name=row[3],
                  created_at=row[4], last_seen_at=row[5], revoked_at=row[6], push_token=row[7],
                  user_agent=row[8] or "", health=json.loads(row[9] or "{}") or None,
                  ready_at=row[10], paused_until=row[11], reconnect_at=row[12],
                  in_flight=in_flight)


async def _window_free_at(conn: asyncpg.Connection, device_id: str, quota: DeviceQuota,
                          handed: list[int], now: float) -> float:
    """When every full limit window has room again (``now`` if none is full)."""
    free_at = now
    for (seconds, limit), count in zip(quota.windows(), handed, strict=True):
        if count >= limit:
            oldest = await conn.fetchval(
                "SELECT handed_at FROM device_messages WHERE device_id = $1"
                " AND handed_at >= $2 ORDER BY handed_at LIMIT 1 OFFSET $3",
                device_id, now - seconds, count - limit)
            if oldest is not None:
                free_at = max(free_at, oldest + seconds)
    return free_at


async def _claim_for_device(
    conn: asyncpg.Connection, device_id: str, quota: DeviceQuota, now: float
) -> DeviceClaim:
    # The device row lock serialises one device's claims (its limits are counted here).
    device = await conn.fetchrow(
        "SELECT channel_id, revoked_at, ready_at, paused_until FROM devices WHERE id = $1"
        " FOR UPDATE", device_id)
    if device is None or device[1] is not None:
        return DeviceClaim([], 0, now)
    channel_id, _revoked, ready_at, paused_until = device
    worker = device_worker(device_id)
    await conn.execute("UPDATE devices SET last_seen_at = $2 WHERE id = $1", device_id, now)
    await conn.execute("DELETE FROM device_messages WHERE device_id = $1 AND handed_at < $2",
                       device_id, now - DEVICE_HISTORY_SECONDS)
    # Handed out before and not acknowledged: the app may have missed the answer.
    pending = [DeviceMessage(*r) for r in await conn.fetch(
        "SELECT m.id, m.number, m.body, m.priority, m.created_at, m.expires_at"
        " FROM device_messages h JOIN messages m ON m.id = h.message_id"
        " WHERE h.device_id = $1 AND h.reported_state IS NULL AND m.state = 'sending'"
        " AND m.leased_by = $2 AND m.lease_until >= $3", device_id, worker, now)]
    claim = DeviceClaim(pending, 0, max(ready_at, paused_until))
    stopped = await conn.fetchval("SELECT paused FROM channels WHERE id = $1", channel_id)
    if stopped is None or stopped or now < claim.ready_at:
        return _sorted_claim(claim)
    in_flight = await conn.fetchval(
        "SELECT count(*) FROM messages WHERE channel_id = $1 AND state = 'sending'"
        " AND leased_by = $2 AND lease_until >= $3", channel_id, worker, now)
    handed = [int(await conn.fetchval(
        "SELECT count(*) FROM device_messages WHERE device_id = $1 AND handed_at >= $2",
        device_id, now - seconds)) for seconds, _limit in quota.windows()]
    allowance = quota.allowance(int(in_flight), handed)
    if allowance == 0:
        claim.ready_at = await _window_free_at(conn, device_id, quota, handed, now)
        await conn.execute("UPDATE devices SET ready_at = $2 WHERE id = $1", device_id,
                           claim.ready_at)
        return _sorted_claim(claim)

    # Leases that ran out first (their phone went silent; possible re-sends), then queued
    # messages, passing over a recipient another online phone wrote to lately, so one person
    # keeps hearing from one number. SKIP LOCKED: another device's claim is never waited for.
    # Neither past its validity: the sweep expires those, a phone never gets a stale one.
    rows = await conn.fetch(
        "WITH expired AS (SELECT id FROM messages WHERE channel_id = $1"
        "  AND state = 'sending' AND lease_until < $2"
        "  AND (expires_at IS NULL OR expires_at >= $2)"
        "  ORDER BY priority DESC, id LIMIT $3 FOR UPDATE SKIP LOCKED),"
        " fresh AS (SELECT m.id FROM messages m WHERE m.channel_id = $1"
        "  AND m.state = 'queued' AND m.next_attempt_at <= $2"
        "  AND (m.expires_at IS NULL OR m.expires_at >= $2)"
        "  AND NOT (m.created_at > $6 AND EXISTS (SELECT 1 FROM device_recipients r"
        "   JOIN devices d ON d.id = r.device_id WHERE r.channel_id = m.channel_id"
        "   AND r.number = m.number AND r.device_id <> $7 AND d.revoked_at IS NULL"
        "   AND d.last_seen_at >= $8 AND d.paused_until <= $2))"
        "  ORDER BY m.priority DESC, m.id"
        "  LIMIT greatest(0, $3 - (SELECT count(*) FROM expired)) FOR UPDATE OF m SKIP LOCKED)"
        " UPDATE messages m SET state = 'sending', lease_until = $4, leased_by = $5,"
        "  attempts = m.attempts + 1,"
        "  resends = m.resends + CASE WHEN c.resend THEN 1 ELSE 0 END, updated_at = $2"
        "  FROM (SELECT id, true AS resend FROM expired"
        "        UNION ALL SELECT id, false FROM fresh) c WHERE m.id = c.id"
        " RETURNING m.id, m.number, m.body, m.priority, m.created_at, m.expires_at,"
        "  m.attempts, c.resend",
        channel_id, now, allowance, now + quota.lease_seconds, worker,
        now - quota.sticky_seconds, device_id, now - quota.offline_after)
    if rows:
        await _add_events(conn, [
            (r[0], "sending", now, f"device {device_id}, attempt {r[6]}"
             + (": possible re-send, previous lease expired" if r[7] else ""))
            for r in sorted(rows, key=lambda r: (r[7], r[0]))])
        ids = sorted(r[0] for r in rows)
        await conn.execute(
            "INSERT INTO device_messages (message_id, device_id, channel_id, handed_at)"
            " SELECT id, $2, $3, $4 FROM unnest($1::bigint[]) AS id"
            " ON CONFLICT (message_id, device_id) DO UPDATE SET"
            " handed_at = excluded.handed_at, reported_state = NULL, reported_at = NULL",
            ids, device_id, channel_id, now)
        # One row per number (a number may come twice in a claim), in one order: concurrent
        # claims of two devices lock recipients alike and cannot deadlock on them.
        await conn.execute(
            "INSERT INTO device_recipients (channel_id, number, device_id, at)"
            " SELECT $2, number, $3, $4 FROM unnest($1::text[]) AS number"
            " ON CONFLICT (channel_id, number) DO UPDATE SET device_id = excluded.device_id,"
            " at = excluded.at", sorted({r[1] for r in rows}), channel_id, device_id, now)
        claim.ready_at = now + sum(quota.delays[:len(rows)])
        await conn.execute("UPDATE devices SET ready_at = $2 WHERE id = $1", device_id,
                           claim.ready_at)
    claim.new = len(rows)
    claim.messages += [DeviceMessage(*r[:6], possible_resend=r[7]) for r in rows]
    return _sorted_claim(claim)


def _sorted_claim(claim: DeviceClaim) -> DeviceClaim:
    claim.messages.sort(key=lambda m: (-m.priority, m.id))
    return claim


async def _note_device_reports(
    conn: asyncpg.Connection,
    device_id: str,
    reports: list[tuple[int, str, float]],
    now: float,
    lease_seconds: float,
) -> dict[int, ReportedMessage]:
    worker = device_worker(device_id)
    last = {mid: (state, at) for mid, state, at in reports}   # the last report per message
    known = {r[0]: ReportedMessage(r[1], r[1] == "sending" and r[2] == worker)
             for r in await conn.fetch(
                 "SELECT m.id, m.state, m.leased_by FROM device_messages h"
                 " JOIN messages m ON m.id = h.message_id WHERE h.device_id = $1"
                 " AND h.message_id = ANY($2::bigint[])", device_id, sorted(last))}
    rows = [(mid, state, at) for mid, (state, at) in sorted(last.items()) if mid in known]
    if rows:
        await conn.execute(
            "UPDATE device_messages h SET reported_state = u.state, reported_at = u.at"
            " FROM unnest($2::bigint[], $3::text[], $4::float8[]) AS u(id, state, at)"
            " WHERE h.message_id = u.id AND h.device_id = $1", device_id, *_columns(rows, 3))
    # The phone has it queued: it keeps the message while it waits out its own delays.
    queued_on_phone = sorted(mid for mid, state, _at in reports
                             if state in ("Pending", "Processed") and mid in known
                             and known[mid].held)
    if queued_on_phone:
        await conn.execute(
            "UPDATE messages SET lease_until = greatest(lease_until, $2)"
            " WHERE id = ANY($1::bigint[]) AND state = 'sending' AND leased_by = $3",
            queued_on_phone, now + lease_seconds, worker)
    await conn.execute(
        "UPDATE devices SET last_seen_at = greatest(coalesce(last_seen_at, 0), $2)"
        " WHERE id = $1", device_id, now)
    return known


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


def _inbound_part(row: Sequence[Any]) -> InboundPart:
    return InboundPart(row[0], row[1], row[2], row[3], row[4], row[5], row[6], bytes(row[7]),
                       row[8])
