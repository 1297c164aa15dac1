"""SQLite's dashboard search (``find_messages``) reads its window of message ids through the
primary key (the window itself: ``contract/test_store_dashboard_reads.py``)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from tests.store.contract.test_store_queue import queue

from pushgate.store.base import Store


@pytest.mark.sqlite_only
async def test_the_search_reads_through_the_primary_key(store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    await queue(store, await make.channel(project.id), 3, time.time(), references=True)
    seen: list[str] = []
    store._read().set_trace_callback(seen.append)   # type: ignore[attr-defined]
    try:
        await store.find_messages(project.id, reference="ref-m-1")
        search = next(s for s in seen if "m.reference" in s)
        plan = " ".join(str(row[-1]) for row in store._read().execute(   # type: ignore[attr-defined]
            f"EXPLAIN QUERY PLAN {search}"))
    finally:
        store._read().set_trace_callback(None)   # type: ignore[attr-defined]
    assert "USING INTEGER PRIMARY KEY" in plan, plan
