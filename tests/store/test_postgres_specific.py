"""What only the PostgreSQL store has to prove: several pools (API nodes, workers) on one database
never overdraw a balance or claim a message twice, NOTIFY wakes idle dispatchers, and
`pushgate migrate` can run from several nodes at once.

The generic store behaviour runs on both backends elsewhere (the ``db_url`` parametrization).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pushgate.core.channels import ChannelSpec
from pushgate.core.push import PushPlan
from pushgate.dispatch.worker import Dispatcher
from pushgate.store.base import Store
from pushgate.store.errors import InsufficientCredit, StoreUnavailable
from pushgate.store.factory import store_for_url
from pushgate.store.postgres import PostgresStore

pytestmark = pytest.mark.postgres_only

DEADLINE = 10.0


def pg_database_url(dsn: str, database: str) -> str:
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(dsn)._replace(path=f"/{database}"))


def _plan(count: int, price_micro: int, priority: int = 0, tag: str = "") -> PushPlan:
    rows = [(i, f"9198765{i:05d}", f"{tag} message {i}", None, None, None, 1, 1, price_micro)
            for i in range(count)]
    return PushPlan(priority=priority, accepted=rows, refused=[],
                    credit_total=price_micro * count, inline_media=None, total_entries=count)


@pytest.fixture
async def second_store(db_url: str) -> AsyncIterator[Store]:
    """Another process's view of the same database: its own pool."""
    other = store_for_url(db_url)
    await other.open()
    yield other
    await other.close()


async def _wait_for(predicate: Any, what: str, deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if await predicate():
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"gave up after {deadline}s waiting for {what}")


def test_store_for_url_picks_postgres() -> None:
    for url in ("postgresql://u@127.0.0.1/db", "postgres://u@127.0.0.1/db",
                "postgresql+asyncpg://u@127.0.0.1/db"):
        store = store_for_url(url)
        assert isinstance(store, PostgresStore)
        assert store.dsn == "postgresql://u@127.0.0.1/db"
    sized = PostgresStore("postgresql://u@127.0.0.1/db?pool_min_size=1&pool_max_size=3")
    assert (sized.min_size, sized.max_size, sized.dsn) == (1, 3, "postgresql://u@127.0.0.1/db")


async def test_concurrent_accepts_from_two_pools_never_overdraw(
    store: Store, second_store: Store, make: Any, query: Any
) -> None:
    per_push, price, pushes = 40, 1_000, 30
    cost = per_push * price
    affordable = 11
    project, _token, _secret = await make.project(credits=str(affordable * cost / 1_000_000))
    channel = await make.channel(project.id, price="0.001")

    async def push(i: int) -> Any:
        target = store if i % 2 else second_store
        try:
            return await target.accept_push(project.id, channel, _plan(per_push, price, tag=str(i)),
                                            time.time(), None)
        except InsufficientCredit as exc:
            return exc

    outcomes = await asyncio.gather(*(push(i) for i in range(pushes)))
    accepted = [o for o in outcomes if not isinstance(o, InsufficientCredit)]
    refused = [o for o in outcomes if isinstance(o, InsufficientCredit)]
    assert len(accepted) == affordable
    assert len(refused) == pushes - affordable
    assert all(r.balance_micro < cost for r in refused)
    assert sorted(a.balance_micro for a in accepted) == [cost * k for k in range(affordable)]
    final = await store.get_project(project.id)
    assert final is not None and final.balance_micro == 0
    # Each accepted push's ids are its own, in request order; nothing of a refused push stayed.
    all_ids = [mid for a in accepted for mid in a.message_ids]
    assert len(set(all_ids)) == len(all_ids) == affordable * per_push
    assert all(a.message_ids == sorted(a.message_ids) for a in accepted)
    total = 0
    for a in accepted:
        push_row = await second_store.get_push(project.id, a.push_id)
        assert push_row is not None and push_row["counts"] == {"queued": per_push}
        total += push_row["accepted"]
    assert total == affordable * per_push
    assert query("SELECT count(*) FROM messages") == [(affordable * per_push,)]
    assert query("SELECT count(*) FROM pushes") == [(affordable,)]
    # The initial credit, less every debit.
    assert query("SELECT sum(delta_micro) FROM credit_ledger") == [(0,)]


async def test_skip_locked_claims_from_two_workers_never_overlap(
    store: Store, second_store: Store, make: Any, query: Any
) -> None:
    project, _token, _secret = await make.project(credits="1000")
    channel = await make.channel(project.id, price="0.001")
    queued: list[int] = []
    for i in range(6):
        result = await store.accept_push(project.id, channel, _plan(250, 1_000, tag=str(i)),
                                         time.time(), None)
        queued += result.message_ids

    async def drain(target: Store, worker: str) -> list[list[int]]:
        batches = []
        while True:
            claimed = await target.claim_messages(channel.id, worker, 37, time.time(), 60)
            if not claimed:
                return batches
            batches.append([m.id for m in claimed])
            await asyncio.sleep(0)

    # Two workers per pool, four claimers racing on one channel's queue.
    results = await asyncio.gather(drain(store, "w1"), drain(second_store, "w2"),
                                   drain(store, "w3"), drain(second_store, "w4"))
    per_worker = [[mid for batch in batches for mid in batch] for batches in results]
    everything = [mid for ids in per_worker for mid in ids]
    assert len(everything) == len(set(everything)), "a message was claimed twice"
    assert sorted(everything) == sorted(queued)
    rows = query("SELECT leased_by, count(*), max(attempts), max(resends) FROM messages"
                 " WHERE state = 'sending' GROUP BY leased_by")
    held = {worker: (count, attempts, resends) for worker, count, attempts, resends in rows}
    for worker, ids in zip(("w1", "w2", "w3", "w4"), per_worker, strict=True):
        if ids:
            assert held[worker] == (len(ids), 1, 0)
    # Within each batch, priority then FIFO.
    for batches in results:
        for batch in batches:
            assert batch == sorted(batch)


async def test_concurrent_lease_acquisition_never_shares_a_channel(
    store: Store, second_store: Store, make: Any
) -> None:
    project, _token, _secret = await make.project()
    channels = [await make.channel(project.id, application=100 + i) for i in range(12)]
    now = time.time()
    held_a, held_b = await asyncio.gather(store.acquire_channel_leases("A", now, 15),
                                          second_store.acquire_channel_leases("B", now, 15))
    assert not set(held_a) & set(held_b)
    assert sorted(held_a + held_b) == sorted(c.id for c in channels)
    # A dies; once its leases expire B takes its channels, and A's renewals get nothing back.
    later = now + 16
    taken = await second_store.acquire_channel_leases("B", later, 15)
    assert sorted(taken) == sorted(c.id for c in channels)
    assert await store.acquire_channel_leases("A", later + 1, 15) == []


async def test_notify_wakes_a_listener_in_another_pool(
    store: Store, second_store: Store, make: Any
) -> None:
    project, _token, _secret = await make.project()
    channel = await make.channel(project.id)
    heard: list[int] = []
    got = asyncio.Event()

    def on_channel(channel_id: int) -> None:
        heard.append(channel_id)
        got.set()

    listener = asyncio.create_task(second_store.listen(on_channel))
    try:
        # The LISTEN connection comes up in the background: push until one is heard.
        end = time.monotonic() + DEADLINE
        while not got.is_set():
            assert time.monotonic() < end, "no notification reached the listener"
            await store.accept_push(project.id, channel, _plan(1, 1_000), time.time(), None)
            try:
                await asyncio.wait_for(got.wait(), 0.5)
            except TimeoutError:
                continue
        assert set(heard) == {channel.id}
        assert not listener.done()
    finally:
        listener.cancel()
        with pytest.raises(asyncio.CancelledError):
            await listener


async def test_idle_dispatcher_wakes_on_a_push_from_another_node(
    store: Store, second_store: Store, make: Any
) -> None:
    """The dispatcher polls only every 60 s here, so only the NOTIFY can wake it in time."""
    project, _token, _secret = await make.project()
    channel = await make.channel(project.id)
    dispatcher = Dispatcher(second_store, worker_id="idle", idle_poll=60.0,
                            channel_lease_seconds=60.0)
    run = asyncio.create_task(dispatcher.run())
    try:
        await _wait_for(lambda: _has_runner(dispatcher, channel), "the channel's runner")
        pushed: list[int] = []
        end = time.monotonic() + DEADLINE
        while True:
            assert time.monotonic() < end, "the idle dispatcher never woke up"
            result = await store.accept_push(project.id, channel, _plan(3, 1_000), time.time(),
                                             None)
            pushed += result.message_ids
            if await _any_sent(store, project.id, pushed):
                break
        await _wait_for(lambda: _all_sent(store, project.id, pushed), "every message sent")
    finally:
        dispatcher.stop()
        await run


async def _has_runner(dispatcher: Dispatcher, channel: ChannelSpec) -> bool:
    return channel.id in dispatcher.runners


async def _any_sent(store: Store, project_id: int, ids: list[int]) -> bool:
    # Give the wake-up half a second per push, far below the 60 s poll.
    for _ in range(25):
        for mid in ids:
            message = await store.get_message(project_id, mid)
            if message is not None and message["state"] != "queued":
                return True
        await asyncio.sleep(0.02)
    return False


async def _all_sent(store: Store, project_id: int, ids: list[int]) -> bool:
    for mid in ids:
        message = await store.get_message(project_id, mid)
        if message is None or message["state"] in ("queued", "sending"):
            return False
    return True


def _head_revision() -> str:
    from alembic.script import ScriptDirectory

    from pushgate.store.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config("sqlite:///unused.db")).get_current_head()
    assert head is not None
    return head


def test_migrate_from_several_nodes_at_once(pg_admin_dsn: str, tmp_path: Path) -> None:
    name = f"pushgate_migrate_{secrets.token_hex(5)}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = pg_database_url(pg_admin_dsn, name)
        env = {**os.environ, "PUSHGATE_DATABASE_URL": url}
        command = [sys.executable, "-c", "from pushgate.cli import app; app()", "migrate"]
        nodes = [subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for _ in range(4)]
        outputs = [node.communicate(timeout=120)[0] for node in nodes]
        assert [node.returncode for node in nodes] == [0] * 4, outputs
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [
                (_head_revision(),)]
            assert conn.execute("SELECT count(*) FROM messages").fetchone() == (0,)
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_ping_reports_a_lost_or_unreachable_database(
    store: Store, db_url: str, pg_admin_dsn: str
) -> None:
    await store.ping()
    with pytest.raises(StoreUnavailable):
        await PostgresStore("postgresql://postgres@127.0.0.1:9/nowhere").open()
    database = urllib.parse.urlsplit(db_url).path.lstrip("/")
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
    with pytest.raises(StoreUnavailable):
        await store.ping()


async def test_listener_reconnects_after_its_connection_is_killed(
    store: Store, second_store: Store, make: Any, query: Any
) -> None:
    project, _token, _secret = await make.project()
    channel = await make.channel(project.id)
    got = asyncio.Event()
    listener = asyncio.create_task(second_store.listen(lambda _channel_id: got.set()))

    async def heard_after_pushes() -> None:
        got.clear()
        end = time.monotonic() + DEADLINE
        while not got.is_set():
            assert time.monotonic() < end, "no notification reached the listener"
            await store.accept_push(project.id, channel, _plan(1, 1_000), time.time(), None)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(got.wait(), 0.3)

    try:
        await heard_after_pushes()
        killed = query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                       " WHERE datname = current_database() AND query LIKE 'LISTEN %'")
        assert killed == [(True,)]
        await heard_after_pushes()
        assert not listener.done()
    finally:
        listener.cancel()
        with pytest.raises(asyncio.CancelledError):
            await listener


async def test_concurrent_status_updates_share_transactions_and_a_bad_call_fails_alone(
    store: Store, make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Callbacks that arrive while a group is written wait for the next group: far fewer
    transactions than calls. A call whose updates break the group's write fails alone;
    every other call of that group is still written and answered."""
    from pushgate.core.lifecycle import State
    from pushgate.core.models import SendResult, StatusUpdate
    from pushgate.core.policy import RetryPolicy

    assert isinstance(store, PostgresStore)
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    now = time.time()
    count = 200
    spec = await store.get_channel(channel.id)
    assert spec is not None
    await store.accept_push(project.id, spec, _plan(count, 0), now, None)
    claimed = await store.claim_messages(channel.id, "w", count, now, 60)
    await store.record_outcomes("w", [SendResult(m.id, ok=True, provider_id=f"p{m.id}")
                                      for m in claimed], now, RetryPolicy())

    transactions = 0
    real_tx = store._tx
    real_apply = store._apply_status

    async def counting_tx(fn: Any, *args: Any) -> Any:
        nonlocal transactions
        transactions += 1
        return await real_tx(fn, *args)

    async def apply(conn: Any, updates: list[StatusUpdate], keep_early: bool = True) -> Any:
        if any(u.provider_id == "poison" for u in updates):
            raise ValueError("a malformed update")
        return await real_apply(conn, updates, keep_early)

    monkeypatch.setattr(store, "_tx", counting_tx)
    monkeypatch.setattr(store, "_apply_status", apply)
    def calls(messages: list[Any]) -> list[list[StatusUpdate]]:
        return [[StatusUpdate(State.DELIVERED, now + 1, channel_id=channel.id,
                              provider_id=f"p{m.id}")] for m in messages]

    first, rest = claimed[:100], claimed[100:]
    outcomes = await asyncio.gather(*(store.apply_status_updates(c) for c in calls(first)))
    assert outcomes == [1] * len(first)
    # 100 calls at once: a handful of transactions (the first call's, then groups).
    assert 1 <= transactions <= 5

    poisoned = calls(rest)
    poisoned.insert(50, [StatusUpdate(State.DELIVERED, now + 1, channel_id=channel.id,
                                      provider_id="poison")])
    outcomes = await asyncio.gather(*(store.apply_status_updates(c) for c in poisoned),
                                    return_exceptions=True)
    assert isinstance(outcomes.pop(50), ValueError)
    assert outcomes == [1] * len(rest)
    for m in claimed:
        message = await store.get_message(project.id, m.id)
        assert message is not None and message["state"] == "delivered", m.id
