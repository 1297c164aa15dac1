"""The SQLite store's connections: the read connection, and the one writer thread that runs every
write job, group-committing the jobs waiting at the same moment (each in its own savepoint, or,
for a batch of ``replayable`` jobs only, none unless one of them fails, consecutive jobs of a
``grouped_by`` kind running as one).

Several processes may share the database file: each writer holds an ``flock`` on
``<database>-writelock`` for one transaction, queuing on ``<database>-writeturn`` first so the
lock is handed on fairly.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import queue
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from pushgate.store.errors import StoreUnavailable
from pushgate.store.migrate import sqlite_location_problem, sqlite_path

T = TypeVar("T")

# How many jobs at most share one transaction; bounds the latency a job can add to others.
GROUP_COMMIT_MAX_JOBS = 256
BUSY_TIMEOUT_MS = 10_000
#: Beside the database file (like its -wal and -shm): the lock every process's writer holds
#: for the length of one transaction.
WRITE_LOCK_SUFFIX = "-writelock"
#: Beside it, the turn a writer holds while it waits for that lock (see _Writer.run).
WRITE_TURN_SUFFIX = "-writeturn"

log = logging.getLogger("pushgate.store")
#: Seconds; see SQLiteStore.open.
WRITER_SWITCH_INTERVAL = 0.0002


class SQLiteBase:
    """Opening and closing the store, reads on the caller's thread, writes as writer-thread jobs."""
    def __init__(self, url: str) -> None:
        path = sqlite_path(url)
        if path is None or path == ":memory:":
            raise StoreUnavailable("the SQLite store needs a file: sqlite:///path/to/file.db")
        self.path = path
        self._writer: _Writer | None = None
        self._reader: sqlite3.Connection | None = None

    async def open(self) -> None:
        # Said plainly before SQLite tries: its own words ("unable to open database file")
        # name neither the path's problem nor the fix.
        problem = sqlite_location_problem(self.path)
        if problem is not None:
            raise StoreUnavailable(problem)
        try:
            reader = _connect(self.path)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open the database {self.path}: {exc}") from None
        try:
            reader.execute("SELECT 1 FROM projects LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            reader.close()
            hint = ": run `pushgate migrate` first" if "no such table" in str(exc) else ""
            raise StoreUnavailable(f"cannot use the database {self.path}: {exc}{hint}") from None
        self._reader = reader
        # The writer releases the GIL for every SQLite call and must win it back from the
        # event loop thread, which (CPU-bound on decoding and validating pushes) yields it
        # only every switch interval: 5 ms by default, so a push's ~8 statements could wait
        # tens of ms. A short interval lets the writer's SQLite work overlap the loop's
        # Python work (docs/benchmarks.md lists the lever). Only ever lowered.
        sys.setswitchinterval(min(sys.getswitchinterval(), WRITER_SWITCH_INTERVAL))
        writer = _Writer(self.path)
        writer.start()
        writer.ready.wait()
        if writer.error is not None:
            raise StoreUnavailable(f"cannot open {self.path}: {writer.error}")
        self._writer = writer

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.jobs.put(None)
            await asyncio.to_thread(self._writer.join)
            self._writer = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    async def ping(self) -> None:
        try:
            self._read().execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from None
        if self._writer is None or not self._writer.is_alive():
            raise StoreUnavailable("the writer thread is not running")

    def _read(self) -> sqlite3.Connection:
        if self._reader is None:
            raise StoreUnavailable("the store is not open")
        return self._reader

    def _finds(self, sql: str, *params: Any) -> bool:
        """Whether the query ``sql`` finds a row, read on the caller's thread. A poll that
        asks first claims nothing, when nothing is due, without a writer job: no turn on the
        write lock the other processes' writers wait for, no wake-up of the writer thread."""
        return self._read().execute(sql, params).fetchone() is not None

    def _write(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        if self._writer is None:
            raise StoreUnavailable("the store is not open")
        if not self._writer.is_alive():
            raise StoreUnavailable("the SQLite writer thread has stopped")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._writer.jobs.put(_Job(fn, args, future, loop))
        return future


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("PRAGMA cache_size = -65536")
    return conn


class _Job:
    __slots__ = ("fn", "args", "future", "loop")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...],
                 future: asyncio.Future[Any], loop: asyncio.AbstractEventLoop) -> None:
        self.fn = fn
        self.args = args
        self.future = future
        self.loop = loop


def _resolve(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.cancelled():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class _Writer(threading.Thread):
    """The one writer: drains the job queue, one transaction per gathered batch."""

    def __init__(self, path: str) -> None:
        super().__init__(name="pushgate-sqlite-writer", daemon=True)
        self.path = path
        self.lock_fd = -1   # WRITE_LOCK_SUFFIX's file, opened by run()
        self.turn_fd = -1   # WRITE_TURN_SUFFIX's file, likewise
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.ready = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn = _connect(self.path)
            # A statement that changes pages its transaction already changed keeps their old
            # content in a statement journal; past 64 KiB SQLite spills it to a new file in
            # the temp directory (create, unlink, writes, close) for that one statement. A
            # writer batch mixing accepts with dispatch's claims and outcomes did so ~30 times
            # a second under load. The writer's statements are bounded batches, so their
            # journals and temp tables can live in memory; the reader keeps file-backed temp
            # storage for large sorts.
            conn.execute("PRAGMA temp_store = MEMORY")
            self.lock_fd = os.open(self.path + WRITE_LOCK_SUFFIX, os.O_RDWR | os.O_CREAT, 0o600)
            self.turn_fd = os.open(self.path + WRITE_TURN_SUFFIX, os.O_RDWR | os.O_CREAT, 0o600)
        except BaseException as exc:  # reported by open()
            self.error = exc
            self.ready.set()
            return
        self.ready.set()
        stopping = False
        while not stopping:
            first = self.jobs.get()
            if first is None:
                break
            batch = [first]
            stopping = self._gather(batch)
            # Processes sharing the file (several `serve --api-only --reuse-port`, a
            # `worker`) take turns here: a blocked flock wakes the moment the holder is done,
            # where SQLite's own busy handler sleeps and polls (p99 in seconds with two API
            # processes, docs/benchmarks.md). The flock calls release the GIL while they wait.
            # flock is not fair: a busy holder that unlocks and locks again at once wins over
            # the waiter it has just woken, which then waited up to 300 ms. So a writer holds
            # the turn while it waits for the lock; the holder, back for more, queues behind.
            fcntl.flock(self.turn_fd, fcntl.LOCK_EX)
            try:
                fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
            finally:
                fcntl.flock(self.turn_fd, fcntl.LOCK_UN)
            # The jobs that came while this writer waited for its turn join the batch: they
            # share its commit instead of waiting for another turn (with several processes,
            # a turn is often as long as the other writer's transaction).
            if not stopping:
                stopping = self._gather(batch)
            try:
                answers = self._run_batch(conn, batch)
            finally:
                fcntl.flock(self.lock_fd, fcntl.LOCK_UN)
            # Answered once the lock is free for the next writer.
            for loop, resolved in answers.items():
                loop.call_soon_threadsafe(_resolve_all, resolved)
        conn.close()
        os.close(self.lock_fd)
        os.close(self.turn_fd)

    def _gather(self, batch: list[_Job]) -> bool:
        """Add the jobs waiting in the queue to ``batch``, up to ``GROUP_COMMIT_MAX_JOBS``;
        whether the stop mark came among them."""
        while len(batch) < GROUP_COMMIT_MAX_JOBS:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                return False
            if job is None:
                return True
            batch.append(job)
        return False

    @staticmethod
    def _run_batch(conn: sqlite3.Connection, batch: list[_Job]) -> dict[
            asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]]:
        """One transaction for the batch: each job's outcome, by the event loop to answer."""
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            error = StoreUnavailable(f"cannot start a write transaction: {exc}")
            outcomes = [(False, error)] * len(batch)
        else:
            outcomes = _run_jobs(conn, batch)
        # One wake-up per event loop, not per job: each call_soon_threadsafe writes to the
        # loop's self-pipe.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for job, (ok, value) in zip(batch, outcomes, strict=True):
            by_loop.setdefault(job.loop, []).append((job.future, ok, value))
        return by_loop


#: Writer jobs that are functions of their connection and arguments only (no effect outside
#: the database, arguments left as they were): running one twice in the same database state
#: gives the same outcome. See ``replayable`` and ``_run_jobs``.
_REPLAYABLE: set[Callable[..., Any]] = set()

F = TypeVar("F", bound=Callable[..., Any])
G = TypeVar("G", bound=Callable[..., list[Any]])


def replayable(fn: F) -> F:
    """Mark a writer job as safe to run again after its whole batch was rolled back."""
    _REPLAYABLE.add(fn)
    return fn


#: For a replayable job, the function that runs a run of consecutive such jobs of a batch
#: together (see ``grouped_by``).
_GROUPED: dict[Callable[..., Any], Callable[..., list[Any]]] = {}


def grouped_by(job: Callable[..., Any]) -> Callable[[G], G]:
    """Register the decorated function as the way to run consecutive ``job`` jobs of a batch
    without savepoints: called as ``group(conn, [args, ...])``, it returns each job's result
    in order, exactly what running ``job(conn, *args)`` for each in turn would have returned
    and written. It may raise: the batch then runs again job by job, each in its own
    savepoint (``_run_jobs``), so a group only has to be right when it succeeds."""
    def register(group: G) -> G:
        if job not in _REPLAYABLE:
            raise ValueError(f"{job.__name__} must be replayable to be grouped")
        _GROUPED[job] = group
        return group
    return register


def _run_jobs(conn: sqlite3.Connection, batch: list[_Job]) -> list[tuple[bool, Any]]:
    """The jobs of an open transaction, then the commit: their outcomes (all failed if the
    commit did).

    A batch of replayable jobs only runs without savepoints: two statements fewer a job on
    the accept and dispatch paths (the dispatching process's batches hold accepts, claims
    and outcome writes), where the writer thread's statements are its cost. If one of them
    fails, the whole transaction is rolled back and the batch runs again from the start,
    each job in its own savepoint, so a failing job never takes the others down and leaves
    nothing of its own behind. Any other batch takes the savepoint path at once. On that
    path a run of grouped jobs (``grouped_by``) shares one savepoint, and runs one by one
    only if its group fails."""
    if all(job.fn in _REPLAYABLE for job in batch):
        plain = _run_plain(conn, batch)
        if plain is not None:
            return _commit(conn, plain)
        with contextlib.suppress(sqlite3.Error):
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            error = StoreUnavailable(f"cannot start a write transaction: {exc}")
            return [(False, error)] * len(batch)
    outcomes: list[tuple[bool, Any]] = []
    for jobs, group in _runs(batch):
        if group is not None:
            grouped = _run_group(conn, jobs, group)
            if grouped is not None:
                outcomes += grouped
                continue
        for job in jobs:
            conn.execute("SAVEPOINT job")
            try:
                outcomes.append((True, job.fn(conn, *job.args)))
                conn.execute("RELEASE job")
            except BaseException as exc:  # the job's own error goes back to its caller
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                outcomes.append((False, exc))
    return _commit(conn, outcomes)


def _runs(batch: list[_Job]) -> Iterator[tuple[list[_Job], Callable[..., list[Any]] | None]]:
    """The batch cut into runs: two or more consecutive jobs of a function with a group
    (``grouped_by``) with that group, every other job alone with None."""
    at = 0
    while at < len(batch):
        fn = batch[at].fn
        group = _GROUPED.get(fn)
        end = at + 1
        if group is not None:
            while end < len(batch) and batch[end].fn is fn:
                end += 1
        yield batch[at:end], (group if end - at > 1 else None)
        at = end


def _run_group(conn: sqlite3.Connection, jobs: list[_Job],
               group: Callable[..., list[Any]]) -> list[tuple[bool, Any]] | None:
    """A run of grouped jobs in one savepoint: their outcomes, or None (nothing of them
    left written) if the group failed, for the caller to run them one by one. A batch may
    hold jobs that are not replayable beside its accepts (a provider's status updates, an
    inbound message), which would otherwise keep those accepts from being grouped."""
    conn.execute("SAVEPOINT job")
    try:
        values = group(conn, [job.args for job in jobs])
        if len(values) != len(jobs):
            raise RuntimeError(f"{group.__name__} answered {len(values)} jobs of {len(jobs)}")
    except BaseException:  # each job then runs alone, in its own savepoint
        conn.execute("ROLLBACK TO job")
        conn.execute("RELEASE job")
        return None
    conn.execute("RELEASE job")
    return [(True, value) for value in values]


def _run_plain(conn: sqlite3.Connection, batch: list[_Job]) -> list[tuple[bool, Any]] | None:
    """The batch's outcomes without savepoints; None as soon as a job fails (the
    transaction then holds part of that job's writes and must be rolled back). Consecutive
    jobs of a function with a group (``grouped_by``) run as one: on the accept path of
    one-recipient pushes, a batch of a dozen runs a handful of statements instead of a
    dozen times five, each a GIL round trip for the writer thread (docs/benchmarks.md)."""
    outcomes: list[tuple[bool, Any]] = []
    try:
        for jobs, group in _runs(batch):
            if group is not None:
                values = group(conn, [job.args for job in jobs])
                if len(values) != len(jobs):
                    raise RuntimeError(f"{group.__name__} answered {len(values)} jobs"
                                       f" of {len(jobs)}")
                outcomes += [(True, value) for value in values]
            else:
                job = jobs[0]
                outcomes.append((True, job.fn(conn, *job.args)))
    except BaseException:  # replayed with savepoints by the caller
        return None
    return outcomes


def _commit(conn: sqlite3.Connection,
            outcomes: list[tuple[bool, Any]]) -> list[tuple[bool, Any]]:
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        error = StoreUnavailable(f"commit failed: {exc}")
        outcomes = [(False, error)] * len(outcomes)
    return outcomes


def _resolve_all(answers: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in answers:
        _resolve(future, ok, value)
