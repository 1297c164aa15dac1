"""Fixtures of the store tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pushgate.store.base import Store
from pushgate.store.factory import store_for_url


@pytest.fixture
async def second_store(db_url: str) -> AsyncIterator[Store]:
    """Another process's view of the same database: its own pool, or its own SQLite writer."""
    other = store_for_url(db_url)
    await other.open()
    yield other
    await other.close()
