"""SQLite's writer: accepts queued together share one writer transaction (group commit), and a
failing job does not undo the others of its batch; writers of several processes take turns on
the lock file; ``listen`` hears other processes' pushes. (Concurrent accepts on every store:
``contract/test_store_accept.py``.)"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

import pytest
from tests.store.contract.test_store_accept import (
    PRICE,
    balance,
    check_affordable_stored,
    make_plan,
)

from pushgate.core.channels import ChannelSpec
from pushgate.core.models import SendResult
from pushgate.core.policy import RetryPolicy
from pushgate.core.pricing import parse_credits
from pushgate.store.base import Store
from pushgate.store.errors import InsufficientCredit
from pushgate.store.sqlite.connection import replayable


class HeldWriter:
    """The store's writer thread held inside a job (``hold``) until
    ``release_when_queued``: the jobs queued meanwhile run together as its next batch."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.writer = store._writer          # type: ignore[attr-defined]
        self.started, self.gate = threading.Event(), threading.Event()
        self.blocked: asyncio.Future[None] | None = None

    async def hold(self) -> None:
        def blocker(conn: Any) -> None:
            self.started.set()
            self.gate.wait(10)

        self.blocked = self.store._write(blocker)   # type: ignore[attr-defined]
        assert await asyncio.to_thread(self.started.wait, 10), "the writer never ran the blocker"

    async def release_when_queued(self, count: int) -> None:
        """Once ``count`` jobs wait in the writer's queue, let the writer go on."""
        deadline = time.monotonic() + 10
        while self.writer.jobs.qsize() < count:
            assert time.monotonic() < deadline, "the jobs never reached the writer queue"
            await asyncio.sleep(0.005)
        self.gate.set()
        assert self.blocked is not None
        await self.blocked


@pytest.mark.sqlite_only
async def test_failing_job_in_one_writer_batch_keeps_the_others(
    store: Store, make: Any, query: Any
) -> None:
    """Hold the writer thread so that all the accepts queue up and run as ONE batch."""
    project, _, _ = await make.project(credits="0.25")
    channel: ChannelSpec = await make.channel(project.id)
    held = HeldWriter(store)
    await held.hold()
    t0 = time.time()
    plans = [make_plan(10, tag=f"a{n}") for n in range(5)]
    plans.insert(3, make_plan(100, tag="big"))
    tasks = [asyncio.ensure_future(store.accept_push(project.id, channel, p, t0, None))
             for p in plans]
    await held.release_when_queued(len(plans))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results.pop(3), InsufficientCredit)
    await check_affordable_stored(store, project.id, results)
    assert await balance(store, project.id) == 0
    # Nothing of the refused push was written: no push row, no messages, no ledger line.
    [(pushes,)] = query("SELECT count(*) FROM pushes")
    [(messages,)] = query("SELECT count(*) FROM messages")
    [(debits,)] = query("SELECT count(*) FROM credit_ledger WHERE delta_micro < 0")
    assert (pushes, messages, debits) == (5, 50, 5)


@pytest.mark.sqlite_only
async def test_a_batch_job_failing_after_it_wrote_leaves_nothing_and_keeps_the_others(
    store: Store, make: Any, query: Any
) -> None:
    """A batch of accept jobs runs without savepoints; a job of that kind failing after its
    first write (here: one marked replayable that writes a push row, then raises) must leave
    nothing behind while the accepts before and after it in the batch are kept, and their
    message ids are still consecutive and in order."""
    project, _, _ = await make.project(credits="10")
    channel: ChannelSpec = await make.channel(project.id)
    runs: list[int] = []

    @replayable
    def writes_then_fails(conn: Any) -> None:
        runs.append(1)
        conn.execute("INSERT INTO pushes (project_id, channel_id, priority, entries, accepted,"
                     " credit_micro, created_at) VALUES (?, ?, 0, 1, 1, 0, 0)",
                     (project.id, channel.id))
        raise RuntimeError("failed after writing")

    held = HeldWriter(store)
    await held.hold()
    t0 = time.time()
    before = [asyncio.ensure_future(store.accept_push(project.id, channel,
                                                      make_plan(3, tag=f"b{n}"), t0, None))
              for n in range(2)]
    failing = store._write(writes_then_fails)   # type: ignore[attr-defined]
    after = [asyncio.ensure_future(store.accept_push(project.id, channel,
                                                     make_plan(4, tag=f"c{n}"), t0, None))
             for n in range(2)]
    await held.release_when_queued(5)
    with pytest.raises(RuntimeError, match="failed after writing"):
        await failing
    results = await asyncio.gather(*before, *after)
    assert len(runs) == 2   # run once without a savepoint, once again in its own
    [(pushes,)] = query("SELECT count(*) FROM pushes")
    assert pushes == 4
    [(messages,)] = query("SELECT count(*) FROM messages")
    assert messages == 3 + 3 + 4 + 4
    for result in results:
        ids = [row[0] for row in query(
            "SELECT id FROM messages WHERE push_id = ? ORDER BY id", result.push_id)]
        assert ids == result.message_ids
        assert ids == list(range(ids[0], ids[0] + len(ids)))


async def writer_holds_the_turn(turn_fd: int) -> None:
    """Wait until this store's writer waits for the write lock, holding the turn."""
    import fcntl

    deadline = time.monotonic() + 10
    while True:
        try:
            fcntl.flock(turn_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        fcntl.flock(turn_fd, fcntl.LOCK_UN)
        assert time.monotonic() < deadline, "the writer never waited for the lock"
        await asyncio.sleep(0.01)


@pytest.mark.sqlite_only
async def test_sqlite_writers_of_several_processes_take_turns_on_the_lock_file(
    store: Store, make: Any, db_url: str, tmp_path: Any
) -> None:
    """Another process's writer holds the lock for its transaction: this store's writes wait
    for it (and are then done, none lost); two stores on one file interleave cleanly."""
    import fcntl
    import os

    from pushgate.store.sqlite import SQLiteStore
    from pushgate.store.sqlite.connection import WRITE_LOCK_SUFFIX

    project, _, _ = await make.project(credits="100")
    channel = await make.channel(project.id)
    assert isinstance(store, SQLiteStore)
    lock_fd = os.open(store.path + WRITE_LOCK_SUFFIX, os.O_RDWR)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)   # as another process's writer would
        waiting = asyncio.ensure_future(
            store.accept_push(project.id, channel, make_plan(3, tag="held"), time.time(), None))
        done, _ = await asyncio.wait([waiting], timeout=0.3)
        assert not done, "the write went ahead while another writer held the lock"
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
        held = await asyncio.wait_for(waiting, 10)
    finally:
        os.close(lock_fd)
    assert len(held.message_ids) == 3

    other = SQLiteStore(db_url)   # a second writer on the same file
    await other.open()
    try:
        results = await asyncio.gather(*(
            (store if n % 2 else other).accept_push(
                project.id, channel, make_plan(10, tag=f"p{n}"), time.time(), None)
            for n in range(40)))
    finally:
        await other.close()
    ids = [mid for r in results for mid in r.message_ids] + held.message_ids
    assert len(set(ids)) == 403
    assert await balance(store, project.id) == parse_credits("100") - 403 * PRICE


@pytest.mark.sqlite_only
async def test_a_sqlite_writer_waiting_for_the_lock_goes_before_its_holder_comes_back(
    store: Store, make: Any
) -> None:
    """flock alone is not fair: a writer that unlocks and at once locks again can beat the one
    it has just woken, time after time. A waiting writer holds the turn, so another process's
    writer coming back for the lock queues behind it."""
    import fcntl
    import os
    import sqlite3

    from pushgate.store.sqlite import SQLiteStore
    from pushgate.store.sqlite.connection import WRITE_LOCK_SUFFIX, WRITE_TURN_SUFFIX

    project, _, _ = await make.project(credits="100")
    channel = await make.channel(project.id)
    assert isinstance(store, SQLiteStore)
    # Another process's writer, in its transaction.
    lock_fd = os.open(store.path + WRITE_LOCK_SUFFIX, os.O_RDWR)
    turn_fd = os.open(store.path + WRITE_TURN_SUFFIX, os.O_RDWR)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    try:
        waiting = asyncio.ensure_future(
            store.accept_push(project.id, channel, make_plan(3, tag="waiting"), time.time(),
                              None))
        await writer_holds_the_turn(turn_fd)

        def finish_and_lock_again() -> int:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
            fcntl.flock(turn_fd, fcntl.LOCK_EX)
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            fcntl.flock(turn_fd, fcntl.LOCK_UN)
            with contextlib.closing(sqlite3.connect(store.path)) as conn:
                [(count,)] = conn.execute(
                    "SELECT count(*) FROM messages WHERE body LIKE 'waiting %'").fetchall()
            return int(count)

        committed_before_the_holder_came_back = await asyncio.to_thread(finish_and_lock_again)
    finally:
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
        os.close(lock_fd)
        os.close(turn_fd)
    assert committed_before_the_holder_came_back == 3
    assert len((await asyncio.wait_for(waiting, 10)).message_ids) == 3


@pytest.mark.sqlite_only
async def test_jobs_queued_while_a_writer_waits_for_its_turn_share_its_commit(
    store: Store, make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer gathers its batch, then waits for another process's transaction; the jobs
    that came meanwhile go into the same transaction instead of waiting another turn."""
    import fcntl
    import os

    from pushgate.store.sqlite import SQLiteStore, connection

    project, _, _ = await make.project(credits="100")
    channel = await make.channel(project.id)
    assert isinstance(store, SQLiteStore)
    batches: list[int] = []
    run_batch = connection._Writer._run_batch

    def counted(conn: Any, batch: list[Any]) -> Any:
        batches.append(len(batch))
        return run_batch(conn, batch)

    monkeypatch.setattr(connection._Writer, "_run_batch", staticmethod(counted))
    writer = store._writer   # type: ignore[attr-defined]
    lock_fd = os.open(store.path + connection.WRITE_LOCK_SUFFIX, os.O_RDWR)
    turn_fd = os.open(store.path + connection.WRITE_TURN_SUFFIX, os.O_RDWR)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)   # another process's writer, in its transaction
    try:
        first = asyncio.ensure_future(store.accept_push(
            project.id, channel, make_plan(2, tag="first"), time.time(), None))
        await writer_holds_the_turn(turn_fd)   # its batch in hand
        deadline = time.monotonic() + 10
        later = [asyncio.ensure_future(store.accept_push(
            project.id, channel, make_plan(2, tag=f"later{n}"), time.time(), None))
            for n in range(3)]
        while writer.jobs.qsize() < len(later):
            assert time.monotonic() < deadline, "the later accepts never reached the queue"
            await asyncio.sleep(0.005)
    finally:
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
        os.close(lock_fd)
        os.close(turn_fd)
    results = await asyncio.wait_for(asyncio.gather(first, *later), 10)
    assert [len(r.message_ids) for r in results] == [2, 2, 2, 2]
    assert batches == [4]


@pytest.mark.sqlite_only
async def test_sqlite_listen_names_the_channels_of_pushes_other_processes_queued(
    store: Store, make: Any, db_url: str
) -> None:
    """SQLite has no NOTIFY: ``listen`` notices another connection's commits and names the
    channel of every push recorded since its last look, once per look."""
    from pushgate.store.sqlite import SQLiteStore

    project, _, _ = await make.project(credits="100")
    first = await make.channel(project.id)
    second = await make.channel(project.id, application=2)
    await store.accept_push(project.id, first, make_plan(2, tag="before"), time.time(), None)
    heard: list[int] = []
    woke = asyncio.Event()

    def on_channel(channel_id: int) -> None:
        heard.append(channel_id)
        woke.set()

    listener = asyncio.ensure_future(store.listen(on_channel))
    other = SQLiteStore(db_url)   # another process's store on the same file
    await other.open()
    try:
        await asyncio.sleep(0.1)
        assert heard == []   # pushes before it started are not news
        for n in range(3):
            await other.accept_push(project.id, second, make_plan(5, tag=f"s{n}"),
                                    time.time(), None)
        await asyncio.wait_for(woke.wait(), 10)
        await asyncio.sleep(0.1)
        assert set(heard) == {second.id}
        woke.clear()
        await other.accept_push(project.id, first, make_plan(5, tag="f"), time.time(), None)
        await asyncio.wait_for(woke.wait(), 10)
        assert heard[-1] == first.id
    finally:
        listener.cancel()
        await other.close()


@pytest.mark.sqlite_only
async def test_the_writer_keeps_statement_journals_and_temp_tables_in_memory(
    store: Store,
) -> None:
    """Otherwise a batch mixing accepts with claims and outcome writes spills statement
    journals to a new temp file per statement. The reader, which may sort large results,
    keeps file-backed temp storage."""
    def temp_store(conn: Any) -> int:
        return int(conn.execute("PRAGMA temp_store").fetchone()[0])

    assert await store._write(temp_store) == 2          # type: ignore[attr-defined]
    assert temp_store(store._read()) == 0                # type: ignore[attr-defined]


@pytest.mark.sqlite_only
async def test_a_batch_of_accepts_a_claim_and_an_outcome_write_runs_without_savepoints(
    statements: list[str], store: Store, make: Any, query: Any
) -> None:
    """The dispatching process's batches nearly always hold a claim or an outcome write
    beside its accepts: all three kinds are replayable, so such a batch runs plain (a
    failing job would have the batch replayed with savepoints)."""
    project, _, _ = await make.project(credits="10")
    channel: ChannelSpec = await make.channel(project.id)
    t0 = time.time()
    await store.accept_push(project.id, channel, make_plan(2, tag="early"), t0, None)
    sending = await store.claim_messages(channel.id, "w1", 10, t0, 60)
    assert len(sending) == 2
    held = HeldWriter(store)
    await held.hold()
    statements.clear()
    tasks = [
        asyncio.ensure_future(store.accept_push(project.id, channel, make_plan(1, tag=f"n{n}"),
                                                t0, None)) for n in range(2)]
    tasks.append(asyncio.ensure_future(store.claim_messages(channel.id, "w1", 10, t0, 60)))
    tasks.append(asyncio.ensure_future(store.record_outcomes(
        "w1", [SendResult.delivered(m.id, f"p-{m.id}") for m in sending], t0, RetryPolicy())))
    await held.release_when_queued(len(tasks))
    *_accepted, claimed, recorded = await asyncio.gather(*tasks)
    assert recorded is None
    assert len(claimed) == 2          # the two accepted in the same batch, before the claim
    # After the blocker's own batch (its savepoint released, then committed): one batch.
    batch = statements[statements.index("COMMIT") + 1:]
    assert sum(s == "COMMIT" for s in batch) == 1
    assert [s for s in batch if s.startswith(("SAVEPOINT", "RELEASE"))] == []
    states = query("SELECT id, state FROM messages ORDER BY id")
    assert [state for _id, state in states] == ["delivered", "delivered", "sending", "sending"]
