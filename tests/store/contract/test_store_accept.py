"""Concurrent accepts: every push gets its own ids, the balance is exact, and a push that cannot
be afforded fails alone (on SQLite these pushes share one writer transaction: group commit)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pushgate.core.pricing import parse_credits
from pushgate.core.push import PushPlan
from pushgate.store.base import Store
from pushgate.store.errors import InsufficientCredit

PRICE = parse_credits("0.005")


def make_plan(count: int, price: int = PRICE, tag: str = "") -> PushPlan:
    rows = [(i, f"91987654{i:04d}", f"{tag} {i}", None, None, None, 1, 0, price)
            for i in range(count)]
    return PushPlan(priority=0, accepted=rows, refused=[], credit_total=price * count,
                    inline_media=None, total_entries=count)


async def balance(store: Store, project_id: int) -> int:
    project = await store.get_project(project_id)
    assert project is not None
    return project.balance_micro


async def check_affordable_stored(store: Store, project_id: int, results: list[Any]) -> None:
    for n, r in enumerate(results):
        assert not isinstance(r, BaseException), r
        push = await store.get_push(project_id, r.push_id)
        assert push is not None
        assert (push.accepted, push.counts) == (10, {"queued": 10})
        message = await store.get_message(project_id, r.message_ids[0])
        assert message is not None and message.body == f"a{n} 0"
    # Only the affordable pushes exist.
    assert len({r.push_id for r in results}) == 5



async def test_concurrent_accepts_get_distinct_ordered_ids(
    store: Store, make: Any, db_url: str
) -> None:
    project, _, _ = await make.project(credits="100")
    channel = await make.channel(project.id)
    pushes, per_push = 40, 25
    t0 = time.time()
    results = await asyncio.gather(*(
        store.accept_push(project.id, channel, make_plan(per_push, tag=f"p{n}"), t0, None)
        for n in range(pushes)))
    all_ids = [mid for r in results for mid in r.message_ids]
    assert len(set(all_ids)) == pushes * per_push
    assert len({r.push_id for r in results}) == pushes
    for r in results:
        assert len(r.message_ids) == per_push
        assert r.message_ids == sorted(r.message_ids)
        if db_url.startswith("sqlite"):
            # One writer hands out each push's ids as one block.
            assert r.message_ids == list(range(r.message_ids[0], r.message_ids[0] + per_push))
    assert await balance(store, project.id) == parse_credits("100") - pushes * per_push * PRICE
    # Each push's rows carry its own texts, in order.
    for n, r in enumerate(results):
        message = await store.get_message(project.id, r.message_ids[-1])
        assert message is not None
        assert (message.body, message.push_id, message.state) == (
            f"p{n} {per_push - 1}", r.push_id, "queued")


async def test_over_budget_push_fails_alone(store: Store, make: Any) -> None:
    # 5 pushes of 10 messages fit in 0.25 credit exactly; a push of 100 does not.
    project, _, _ = await make.project(credits="0.25")
    channel = await make.channel(project.id)
    t0 = time.time()
    plans = [make_plan(10, tag=f"a{n}") for n in range(5)]
    plans.insert(2, make_plan(100, tag="big"))
    results = await asyncio.gather(
        *(store.accept_push(project.id, channel, p, t0, None) for p in plans),
        return_exceptions=True)
    refused = results.pop(2)
    assert isinstance(refused, InsufficientCredit)
    assert refused.needed_micro == 100 * PRICE
    await check_affordable_stored(store, project.id, results)
    assert await balance(store, project.id) == 0
