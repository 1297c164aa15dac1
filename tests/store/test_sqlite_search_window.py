"""SQLite's dashboard search (``find_messages``) reads one window of message ids a call
through the primary key (its indexes by number and reference went with revision 0020): a
page says where to go on when the window ended before the oldest message, and going on finds
every match, newest first."""

from __future__ import annotations

import time
from typing import Any

import pytest
from tests.store.contract.test_store_queue import queue

from pushgate.store.base import Store
from pushgate.store.sqlite import reports


@pytest.mark.sqlite_only
async def test_a_search_goes_on_window_by_window_to_the_oldest_message(
        store: Store, make: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reports, "SEARCH_WINDOW", 4)
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    t0 = time.time()
    # Five pushes of three: "919876540001" is each push's second message.
    pushes = [await queue(store, channel, 3, t0 + n, tag=f"p{n}") for n in range(5)]
    wanted = [p.message_ids[1] for p in reversed(pushes)]
    newest = pushes[-1].message_ids[-1]

    page = await store.find_messages(project.id, number="919876540001", limit=10)
    # The first window is the 4 newest ids: one match in it, older ones left.
    assert [f.message.id for f in page.found] == [wanted[0]]
    assert page.older == newest + 1 - 4
    seen = [f.message.id for f in page.found]
    windows = 1
    while page.older is not None:
        page = await store.find_messages(project.id, number="919876540001",
                                         before=page.older, limit=10)
        seen += [f.message.id for f in page.found]
        windows += 1
    assert seen == wanted
    assert windows == 4   # 15 ids, 4 a window

    # A window with more matches than the page: the page's last id goes on.
    monkeypatch.setattr(reports, "SEARCH_WINDOW", 100)
    first = await store.find_messages(project.id, number="919876540001", limit=2)
    assert [f.message.id for f in first.found] == wanted[:2]
    assert first.older == wanted[1]
    assert (await store.find_messages(project.id, number="919876540009")).found == []


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
