"""The dashboard's reads (``list_pushes``, ``push_messages``, ``project_counts_since``): pages
of a project's pushes and of a push's messages, and a project's messages counted by state since
a time. Runs on every backend."""

from __future__ import annotations

import time
from typing import Any

from tests.store.contract.test_store_queue import queue

from pushgate.core.models import SendResult
from pushgate.core.policy import RetryPolicy
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
