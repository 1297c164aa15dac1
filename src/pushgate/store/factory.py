"""Choosing the store implementation for a database URL (kept out of ``base.py`` so the
interface does not import its own implementations)."""

from __future__ import annotations

import importlib.util

from pushgate.store.base import Store
from pushgate.store.errors import StoreUnavailable

# The drivers the `postgres` extra installs: asyncpg for the store, psycopg for the migrations.
POSTGRES_DRIVERS = ("asyncpg", "psycopg")
POSTGRES_EXTRA = "pip install 'pushgate[postgres]'"


def is_postgres(url: str) -> bool:
    return url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


def require_postgres_drivers(url: str) -> None:
    """For a PostgreSQL URL, ``StoreUnavailable`` naming the extra when its drivers are not
    installed (the base install runs SQLite only); nothing for other URLs."""
    if not is_postgres(url):
        return
    missing = [name for name in POSTGRES_DRIVERS if not _importable(name)]
    if missing:
        raise StoreUnavailable(
            f"a PostgreSQL database URL needs the PostgreSQL drivers ({', '.join(missing)} "
            f"not installed): {POSTGRES_EXTRA}")


def _importable(name: str) -> bool:
    try:
        # find_spec raises ValueError for a module blocked with sys.modules[name] = None.
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def store_for_url(url: str) -> Store:
    """The store implementation for a ``PUSHGATE_DATABASE_URL``."""
    if url.startswith("sqlite"):
        from pushgate.store.sqlite import SQLiteStore

        return SQLiteStore(url)
    if is_postgres(url):
        require_postgres_drivers(url)
        from pushgate.store.postgres import PostgresStore

        return PostgresStore(url)
    raise StoreUnavailable(f"unsupported database URL scheme: {url.split(':', 1)[0]!r}")
