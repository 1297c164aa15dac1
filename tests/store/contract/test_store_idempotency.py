"""Idempotency keys on ``accept_push``: a key accepted once answers with its push again,
charging and writing nothing; keys are per project; a refused push leaves its key free; two
concurrent accepts of one key make one push."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from tests.store.contract.test_store_accept import PRICE, balance, make_plan

from pushgate.core.pricing import parse_credits
from pushgate.store.base import Store
from pushgate.store.errors import InsufficientCredit


async def test_same_key_answers_the_first_push_and_charges_once(
        store: Store, make: Any, query: Any) -> None:
    project, _, _ = await make.project(credits="10")
    channel = await make.channel(project.id)
    now = time.time()
    first = await store.accept_push(project.id, channel, make_plan(3), now, None,
                                    idempotency_key="k1")
    assert not first.replayed
    after_first = await balance(store, project.id)
    assert after_first == parse_credits("10") - 3 * PRICE
    again = await store.accept_push(project.id, channel, make_plan(3), now + 1, None,
                                    idempotency_key="k1")
    assert again.replayed
    assert (again.push_id, again.message_ids) == (first.push_id, first.message_ids)
    assert again.balance_micro == after_first == await balance(store, project.id)
    assert query("SELECT count(*) FROM pushes WHERE project_id = ?", project.id) == [(1,)]
    assert query("SELECT count(*) FROM messages WHERE project_id = ?", project.id) == [(3,)]
    assert query("SELECT count(*) FROM credit_ledger WHERE project_id = ? AND reason = 'push'",
                 project.id) == [(1,)]
    # Another key is another push; no key at all is always a new push.
    other = await store.accept_push(project.id, channel, make_plan(3), now, None,
                                    idempotency_key="k2")
    plain = await store.accept_push(project.id, channel, make_plan(3), now, None)
    assert len({first.push_id, other.push_id, plain.push_id}) == 3
    assert not other.replayed and not plain.replayed


async def test_keys_are_per_project(store: Store, make: Any) -> None:
    a, _, _ = await make.project()
    b, _, _ = await make.project()
    channel_a, channel_b = await make.channel(a.id), await make.channel(b.id)
    now = time.time()
    pa = await store.accept_push(a.id, channel_a, make_plan(2), now, None,
                                 idempotency_key="same")
    pb = await store.accept_push(b.id, channel_b, make_plan(2), now, None,
                                 idempotency_key="same")
    assert pa.push_id != pb.push_id and not pb.replayed


async def test_refused_push_leaves_its_key_free(store: Store, make: Any) -> None:
    project, _, _ = await make.project(credits="0.01")
    channel = await make.channel(project.id)
    now = time.time()
    with pytest.raises(InsufficientCredit):
        await store.accept_push(project.id, channel, make_plan(10), now, None,
                                idempotency_key="later")
    await store.add_credits(project.id, parse_credits("1"), "top-up")
    result = await store.accept_push(project.id, channel, make_plan(10), now, None,
                                     idempotency_key="later")
    assert not result.replayed and len(result.message_ids) == 10


async def test_concurrent_accepts_of_one_key_make_one_push(
        store: Store, make: Any, query: Any) -> None:
    project, _, _ = await make.project(credits="10")
    channel = await make.channel(project.id)
    now = time.time()
    results = await asyncio.gather(*(
        store.accept_push(project.id, channel, make_plan(5), now, None, idempotency_key="race")
        for _ in range(6)))
    assert len({r.push_id for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    assert all(r.message_ids == results[0].message_ids for r in results)
    assert await balance(store, project.id) == parse_credits("10") - 5 * PRICE
    assert query("SELECT count(*) FROM messages WHERE project_id = ?", project.id) == [(5,)]


async def test_a_key_reused_with_other_messages_is_refused(
        store: Store, make: Any, query: Any) -> None:
    from pushgate.core.push import plan_digest
    from pushgate.store.errors import IdempotencyKeyReused

    project, _, _ = await make.project(credits="10")
    channel = await make.channel(project.id)
    now = time.time()
    plan = make_plan(3, tag="a")
    first = await store.accept_push(project.id, channel, plan, now, None,
                                    idempotency_key="k", idempotency_digest=plan_digest(plan, None))
    after = await balance(store, project.id)
    same = await store.accept_push(project.id, channel, make_plan(3, tag="a"), now, None,
                                   idempotency_key="k",
                                   idempotency_digest=plan_digest(make_plan(3, tag="a"), None))
    assert same.replayed and same.push_id == first.push_id
    # Same size, other texts; same texts, another send_at: refused, nothing written.
    for other in (plan_digest(make_plan(3, tag="b"), None), plan_digest(plan, now + 60)):
        with pytest.raises(IdempotencyKeyReused) as refused:
            await store.accept_push(project.id, channel, make_plan(3, tag="b"), now, None,
                                    idempotency_key="k", idempotency_digest=other)
        assert refused.value.push_id == first.push_id
    assert await balance(store, project.id) == after
    assert query("SELECT count(*) FROM messages WHERE project_id = ?", project.id) == [(3,)]
    # A key recorded without a digest (before digests were kept) replays unchecked.
    await store.accept_push(project.id, channel, plan, now, None, idempotency_key="old")
    legacy = await store.accept_push(project.id, channel, make_plan(3, tag="b"), now, None,
                                     idempotency_key="old",
                                     idempotency_digest=plan_digest(make_plan(3, tag="b"), None))
    assert legacy.replayed
