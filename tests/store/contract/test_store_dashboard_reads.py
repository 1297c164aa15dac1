"""The dashboard's reads (``list_pushes``, ``push_messages``, ``project_counts_since``): pages
of a project's pushes and of a push's messages, and a project's messages counted by state since
a time; the message search, window by window. Runs on every backend."""

from __future__ import annotations

import time
from typing import Any

import pytest
from tests.store.contract.test_store_queue import queue

from pushgate.core.models import SendResult
from pushgate.core.policy import RetryPolicy
from pushgate.core.records import FoundPage
from pushgate.store import rows
from pushgate.store.base import Store


async def test_pushes_listed_newest_first_page_by_page(store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    stranger, _, _ = await make.project()
    channel = await make.channel(project.id)
    other_channel = await make.channel(stranger.id)
    t0 = time.time()
    pushes = [await queue(store, channel, n, t0, tag=f"p{n}") for n in (1, 2, 3)]
    await queue(store, other_channel, 4, t0, tag="stranger")
    ids = [p.push_id for p in pushes]

    first = await store.list_pushes(project.id, None, 2)
    assert [p.id for p in first] == [ids[2], ids[1]]
    assert [p.counts for p in first] == [{"queued": 3}, {"queued": 2}]
    rest = await store.list_pushes(project.id, first[-1].id, 2)
    assert [p.id for p in rest] == [ids[0]]
    assert rest[0].accepted == 1 and rest[0].channel_id == channel.id
    assert await store.list_pushes(project.id, ids[0], 2) == []
    assert [p.accepted for p in await store.list_pushes(stranger.id, None, 10)] == [4]


async def test_push_messages_paged_in_id_order(store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    stranger, _, _ = await make.project()
    channel = await make.channel(project.id)
    pushed = await queue(store, channel, 5, time.time())
    page = await store.push_messages(project.id, pushed.push_id, 0, 2)
    assert [m.id for m in page] == pushed.message_ids[:2]
    page = await store.push_messages(project.id, pushed.push_id, page[-1].id, 2)
    assert [m.id for m in page] == pushed.message_ids[2:4]
    page = await store.push_messages(project.id, pushed.push_id, page[-1].id, 2)
    assert [m.id for m in page] == pushed.message_ids[4:]
    assert page[0].number == "919876540004" and page[0].state == "queued"
    assert await store.push_messages(stranger.id, pushed.push_id, 0, 10) == []


async def test_project_counts_since(store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    stranger, _, _ = await make.project()
    channel = await make.channel(project.id)
    t0 = time.time()
    await queue(store, channel, 2, t0 - 86_400, tag="yesterday")
    today = await queue(store, channel, 3, t0, tag="today")
    await queue(store, await make.channel(stranger.id), 4, t0)
    claimed = await store.claim_messages(channel.id, "w", 10, t0 + 1, 30.0)
    sent = [m for m in claimed if m.id in today.message_ids][:1]
    await store.record_outcomes("w", [SendResult.sent(sent[0].id, "p-1")], t0 + 2,
                                RetryPolicy())
    counts = await store.project_counts_since(project.id, t0 - 60)
    assert counts == {"submitted": 1, "sending": 2}
    assert await store.project_counts_since(project.id, t0 + 10) == {}


async def test_find_messages_by_number_and_reference(store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    stranger, _, _ = await make.project()
    channel = await make.channel(project.id)
    t0 = time.time()
    first = await queue(store, channel, 3, t0, tag="a", references=True)
    second = await queue(store, channel, 2, t0 + 1, tag="b", references=True)
    await queue(store, await make.channel(stranger.id), 3, t0, tag="a", references=True)

    # "919876540001" got one message of each push: newest first, each with its push.
    found = (await store.find_messages(project.id, number="919876540001")).found
    assert [(f.push_id, f.message.id) for f in found] == [
        (second.push_id, second.message_ids[1]), (first.push_id, first.message_ids[1])]
    assert found[0].message.reference == "ref-b-1" and found[0].created_at >= t0
    page = await store.find_messages(project.id, number="919876540001", limit=1)
    assert [f.message.id for f in page.found] == [second.message_ids[1]]
    assert page.older == second.message_ids[1]
    rest = await store.find_messages(project.id, number="919876540001",
                                     before=page.older, limit=1)
    assert [f.message.id for f in rest.found] == [first.message_ids[1]]
    assert rest.older is None
    last = await store.find_messages(project.id, number="919876540001",
                                     before=rest.found[-1].message.id)
    assert last.found == [] and last.older is None

    found = (await store.find_messages(project.id, reference="ref-a-2")).found
    assert [(f.push_id, f.message.id) for f in found] == [(first.push_id, first.message_ids[2])]
    assert found[0].message.number == "919876540002"
    # Exact matches only, and never another project's messages.
    assert (await store.find_messages(project.id, reference="ref-a")).found == []
    assert (await store.find_messages(project.id, number="91987654000")).found == []
    assert len((await store.find_messages(stranger.id, reference="ref-a-2")).found) == 1
    assert await store.find_messages(project.id) == FoundPage([], None)


async def test_credit_history_newest_first_page_by_page(store: Store, make: Any) -> None:
    project, _, _ = await make.project()
    stranger, _, _ = await make.project()
    channel = await make.channel(project.id)
    before = await store.credit_history(project.id, None, 100)
    pushed = await queue(store, channel, 2, time.time())
    await store.add_credits(project.id, 5_000_000, "top-up")
    await store.add_credits(stranger.id, 7_000_000, "stranger's")

    history = await store.credit_history(project.id, None, 100)
    assert len(history) == len(before) + 2
    top_up, charge = history[0], history[1]
    assert (top_up.delta_micro, top_up.reason, top_up.push_id) == (5_000_000, "top-up", None)
    assert charge.push_id == pushed.push_id and charge.delta_micro < 0
    assert history[2:] == before
    assert top_up.id > charge.id and top_up.at >= charge.at
    page = await store.credit_history(project.id, None, 1)
    assert page == [top_up]
    assert (await store.credit_history(project.id, top_up.id, 1)) == [charge]
    assert all(e.reason != "stranger's" for e in history)


async def test_a_search_goes_on_window_by_window_to_the_oldest_message(
        store: Store, make: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rows, "SEARCH_WINDOW", 4)
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
    # 15 ids, 4 a window (more if the table holds older messages of other projects).
    assert windows >= 4

    # A window with more matches than the page: the page's last id goes on.
    monkeypatch.setattr(rows, "SEARCH_WINDOW", 100)
    first = await store.find_messages(project.id, number="919876540001", limit=2)
    assert [f.message.id for f in first.found] == wanted[:2]
    assert first.older == wanted[1]
    assert (await store.find_messages(project.id, number="919876540009")).found == []
