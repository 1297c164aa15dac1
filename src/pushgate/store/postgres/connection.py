"""The PostgreSQL store's connections: the asyncpg pool, transactions retried on deadlock or
serialization failure, and which errors mean the database is away (``StoreUnavailable``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from pushgate.core.models import StatusUpdate
from pushgate.store.errors import StoreUnavailable
from pushgate.store.migrate import split_pool_options

T = TypeVar("T")

log = logging.getLogger("pushgate.store")
DEFAULT_POOL_MIN = 2
DEFAULT_POOL_MAX = 10
CONNECT_TIMEOUT = 10.0
ACQUIRE_TIMEOUT = 30.0
PING_TIMEOUT = 5.0
# Transactions the server aborted for a deadlock or a serialisation failure are run again.
TX_ATTEMPTS = 5
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


class PostgresBase:
    """Opening and closing the pool, connections and transactions."""
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
        except _UNAVAILABLE:   # TimeoutError among them
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
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            return rows

    async def _fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        async with self._conn() as conn:
            return await conn.fetchrow(sql, *args)

    async def _fetchval(self, sql: str, *args: Any) -> Any:
        async with self._conn() as conn:
            return await conn.fetchval(sql, *args)


def _asyncpg_dsn(url: str) -> str:
    """asyncpg takes ``postgresql://`` / ``postgres://`` only: drop a ``+driver`` suffix."""
    return "postgresql://" + url.split("://", 1)[1]
