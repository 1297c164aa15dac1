"""store/outage.py: what counts as the database being away, the back-off, one log line per
outage start and end however many loops see it, and the LISTEN connection reporting its loss
and its reconnection to the process's outage."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from typing import Any

import pytest
from tests.store.helpers import push_plan

from pushgate.store.base import Store
from pushgate.store.errors import StoreUnavailable
from pushgate.store.factory import store_for_url
from pushgate.store.outage import (
    BACKOFF_CAP_SECONDS,
    Backoff,
    Outage,
    is_unavailable,
    keep_going,
)

DEADLINE = 10.0


def lines(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in r.getMessage() for r in caplog.records)


def test_what_counts_as_the_database_being_away(tmp_path: Any) -> None:
    assert is_unavailable(StoreUnavailable("PostgreSQL: connection refused"))
    path = str(tmp_path / "x.db")
    holder = sqlite3.connect(path, isolation_level=None)
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError) as locked:
        other.execute("INSERT INTO t VALUES (1)")
    assert is_unavailable(locked.value)
    # A wrong statement is a bug, not an outage.
    with pytest.raises(sqlite3.OperationalError) as wrong:
        other.execute("SELECT nope FROM t")
    assert not is_unavailable(wrong.value)
    holder.close()
    other.close()
    assert not is_unavailable(RuntimeError("a bug"))
    assert not is_unavailable(KeyError("x"))


def test_backoff_doubles_up_to_its_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(first=0.2, cap=BACKOFF_CAP_SECONDS)
    delays = [backoff.next() for _ in range(12)]
    for n, delay in enumerate(delays):
        ceiling = min(BACKOFF_CAP_SECONDS, 0.2 * 2 ** n)
        assert ceiling / 2 <= delay <= ceiling
    assert max(delays) <= BACKOFF_CAP_SECONDS
    backoff.reset()
    assert backoff.next() <= 0.2


def test_one_line_when_the_outage_starts_and_one_when_it_ends(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pushgate")
    outage = Outage()
    recovered: list[int] = []
    outage.on_recovery(lambda: recovered.append(1))
    before = time.monotonic()
    outage.failed(StoreUnavailable("PostgreSQL: connection refused\nsecond line"), before)
    assert outage.down
    for _ in range(5):   # every other loop meets the same outage
        outage.failed(StoreUnavailable("PostgreSQL: connection reset"), time.monotonic())
    # A call begun before the outage was seen, answered now, proves nothing.
    outage.reached(before)
    assert outage.down and not recovered
    after = time.monotonic()
    outage.reached(after)
    assert not outage.down and recovered == [1]
    outage.reached(time.monotonic())
    # A call begun before the recovery that fails late is not a new outage...
    outage.failed(StoreUnavailable("late"), after - 0.001)
    assert not outage.down
    assert lines(caplog, "database unavailable") == 1
    assert lines(caplog, "database available again") == 1
    # ... one begun after it is.
    outage.failed(StoreUnavailable("again"), time.monotonic())
    assert outage.down and outage.outages == 2
    messages = [r.getMessage() for r in caplog.records]
    assert "second line" not in " ".join(messages)
    assert not [r for r in caplog.records if r.exc_info]


async def test_keep_going_rides_out_an_outage_and_raises_or_survives_a_bug(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pushgate")
    outage = Outage()
    results: list[Any] = [StoreUnavailable("away"), StoreUnavailable("away"), True, False]

    async def step() -> bool:
        result = results.pop(0)
        if isinstance(result, Exception):
            raise result
        return bool(result)

    async def idle() -> None:
        await asyncio.sleep(0)

    await keep_going("loop", step, idle, lambda: not results, outage)
    assert not outage.down and outage.outages == 1
    assert lines(caplog, "database unavailable") == 1
    assert lines(caplog, "database available again") == 1

    async def buggy() -> bool:
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        await keep_going("loop", buggy, idle, lambda: False, outage)

    calls = 0

    async def buggy_twice() -> bool:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RuntimeError("a bug")
        return False

    await keep_going("loop", buggy_twice, idle, lambda: calls >= 3, outage, survive_bugs=True)
    bugs = [r for r in caplog.records if "loop failed" in r.getMessage()]
    assert len(bugs) == 2 and all(r.exc_info for r in bugs)
    assert not outage.down    # a bug is not an outage


@pytest.mark.postgres_only
async def test_the_listen_connection_reports_its_loss_and_reconnection(
        store: Store, db_url: str, make: Any, query: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pushgate")
    listening = store_for_url(db_url)
    await listening.open()
    project, _token, _secret = await make.project()
    channel = await make.channel(project.id)
    outage = Outage()
    got = asyncio.Event()
    listener = asyncio.create_task(listening.listen(lambda _channel_id: got.set(), outage))

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
        end = time.monotonic() + DEADLINE
        while outage.down:
            assert time.monotonic() < end, "the reconnection was not reported"
            await asyncio.sleep(0.05)
        assert outage.outages == 1 and not listener.done()
        assert lines(caplog, "database unavailable") == 1
        assert lines(caplog, "database available again") == 1
    finally:
        listener.cancel()
        with pytest.raises(asyncio.CancelledError):
            await listener
        await listening.close()
