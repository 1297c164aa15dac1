"""Fixtures of the store tests."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator

import pytest

from pushgate.store.base import Store
from pushgate.store.factory import store_for_url
from pushgate.store.sqlite import connection as sqlite_connection
from pushgate.store.sqlite import queue as sqlite_queue


@pytest.fixture
async def second_store(db_url: str) -> AsyncIterator[Store]:
    """Another process's view of the same database: its own pool, or its own SQLite writer."""
    other = store_for_url(db_url)
    await other.open()
    yield other
    await other.close()


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every SQL statement the SQLite connections opened from now on run, in order."""
    seen: list[str] = []
    connect = sqlite_connection._connect

    def traced(path: str) -> sqlite3.Connection:
        conn = connect(path)
        conn.set_trace_callback(seen.append)
        return conn

    # Every module that opens connections: the writer and reader, and ``listen``'s poller.
    monkeypatch.setattr(sqlite_connection, "_connect", traced)
    monkeypatch.setattr(sqlite_queue, "_connect", traced)
    return seen
