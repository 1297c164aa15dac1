"""Choosing the store implementation for a database URL (kept out of ``base.py`` so the
interface does not import its own implementations)."""

from __future__ import annotations

from pushgate.store.base import Store
from pushgate.store.errors import StoreUnavailable


def store_for_url(url: str) -> Store:
    """The store implementation for a ``PUSHGATE_DATABASE_URL``."""
    if url.startswith("sqlite"):
        from pushgate.store.sqlite import SQLiteStore

        return SQLiteStore(url)
    if url.startswith(("postgresql", "postgres")):
        from pushgate.store.postgres import PostgresStore

        return PostgresStore(url)
    raise StoreUnavailable(f"unsupported database URL scheme: {url.split(':', 1)[0]!r}")
