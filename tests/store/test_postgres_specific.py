"""What only the PostgreSQL store has to prove: `pushgate migrate` can run from several nodes at
once, a lost database or LISTEN connection is reported and reconnected, concurrent status
updates share transactions.

The store contract, several instances on one database included, runs on both backends in
``tests/store/contract/``.
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
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.store.helpers import DEADLINE, push_plan

from pushgate.store.base import Store
from pushgate.store.errors import StoreUnavailable
from pushgate.store.factory import store_for_url
from pushgate.store.postgres import PostgresStore

pytestmark = pytest.mark.postgres_only


def pg_database_url(dsn: str, database: str) -> str:
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(dsn)._replace(path=f"/{database}"))


def test_store_for_url_picks_postgres() -> None:
    for url in ("postgresql://u@127.0.0.1/db", "postgres://u@127.0.0.1/db",
                "postgresql+asyncpg://u@127.0.0.1/db"):
        store = store_for_url(url)
        assert isinstance(store, PostgresStore)
        assert store.dsn == "postgresql://u@127.0.0.1/db"
    sized = PostgresStore("postgresql://u@127.0.0.1/db?pool_min_size=1&pool_max_size=3")
    assert (sized.min_size, sized.max_size, sized.dsn) == (1, 3, "postgresql://u@127.0.0.1/db")


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
            await store.accept_push(project.id, channel, push_plan(1, 1_000), time.time(), None)
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
    await store.accept_push(project.id, spec, push_plan(count, 0), now, None)
    claimed = await store.claim_messages(channel.id, "w", count, now, 60)
    await store.record_outcomes("w", [SendResult.sent(m.id, f"p{m.id}")
                                      for m in claimed], now, RetryPolicy())

    transactions = 0
    real_tx = store._tx
    from pushgate.store.postgres import status as status_module

    real_apply = status_module.apply_status

    async def counting_tx(fn: Any, *args: Any) -> Any:
        nonlocal transactions
        transactions += 1
        return await real_tx(fn, *args)

    async def apply(conn: Any, updates: list[StatusUpdate], keep_early: bool = True) -> Any:
        if any(u.provider_id == "poison" for u in updates):
            raise ValueError("a malformed update")
        return await real_apply(conn, updates, keep_early)

    monkeypatch.setattr(store, "_tx", counting_tx)
    monkeypatch.setattr(status_module, "apply_status", apply)
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
        assert message is not None and message.state == "delivered", m.id
