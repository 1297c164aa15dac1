"""The embedded store: one SQLite file in WAL mode, durable with ``synchronous=FULL``.

SQLite has one writer at a time, and a commit costs an fsync. So every write runs as a job on
one writer thread, which takes all jobs waiting at that moment into one transaction (each in a
savepoint of its own, so one job's error does not undo the others), commits once, and only then
resolves each job's future. Under load this is group commit: many small pushes share an fsync;
when idle a job commits alone with no added wait. Reads use a separate connection on the
caller's thread; WAL lets them run beside the writer. Several processes may share the file
(API processes on one port, a worker): their writers take turns on a lock file beside it.

The SQL is written against the DB-API directly rather than through SQLAlchemy Core: the accept
and claim paths move hundreds of thousands of rows a second, and ``bench/store_driver.py``
measures SQLAlchemy's per-statement overhead there (see docs/benchmarks.md). The schema itself
is owned by the Alembic migrations.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import itertools
import json
import logging
import os
import queue
import sqlite3
import sys
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

from pushgate.core.channels import ChannelSpec
from pushgate.core.lifecycle import ERROR_STATES, State, advances
from pushgate.core.models import (
    AcceptResult,
    InboundForward,
    InboundMessage,
    InboundPart,
    OutboundMessage,
    OutboxBatch,
    OutboxItem,
    Project,
    SendResult,
    StatusUpdate,
    TokenInfo,
)
from pushgate.core.push import PushPlan
from pushgate.core.transitions import resolve_part_updates, walk_status_updates
from pushgate.store.base import (
    DEVICE_COLUMNS,
    DEVICE_HISTORY_SECONDS,
    EARLY_UPDATE_TTL,
    EXPIRED_UNCONFIRMED,
    EXPIRY_RECHECK_SECONDS,
    Device,
    DeviceClaim,
    DeviceMessage,
    DeviceQuota,
    InsufficientCredit,
    ReportedMessage,
    RetryPolicy,
    Store,
    StoreUnavailable,
    device_worker,
    fair_share,
)
from pushgate.store.migrate import sqlite_location_problem, sqlite_path
from pushgate.store.outage import Backoff, Outage, describe, is_unavailable
from pushgate.store.rows import (
    CHANNEL_COLUMNS,
    MESSAGE_DETAIL_COLUMNS,
    PROJECT_COLUMNS,
    channel_from_row,
    inbound_payload,
    message_detail,
    message_dict,
    project_from_row,
    report_payload,
)

T = TypeVar("T")

# How many jobs at most share one transaction; bounds the latency a job can add to others.
GROUP_COMMIT_MAX_JOBS = 256
BUSY_TIMEOUT_MS = 10_000
#: Beside the database file (like its -wal and -shm): the lock every process's writer holds
#: for the length of one transaction.
WRITE_LOCK_SUFFIX = "-writelock"
#: Beside it, the turn a writer holds while it waits for that lock (see _Writer.run).
WRITE_TURN_SUFFIX = "-writeturn"
#: Seconds between two looks for pushes other processes queued (SQLiteStore.listen).
LISTEN_POLL_SECONDS = 0.02

log = logging.getLogger("pushgate.store")
#: Seconds; see SQLiteStore.open.
WRITER_SWITCH_INTERVAL = 0.0002

# The live messages (queued, sending): the rows the claim index holds. SQLite uses a partial
# index only when the query repeats its WHERE terms (migration 0006), so queries of live
# messages by channel add this one.
_LIVE = "state IN ('queued', 'sending')"

# A message past its validity is never claimed, neither queued nor whose lease ran out: it
# waits for the sweep (expire_due) to expire and refund it. Bound to `now`.
_VALID = "(expires_at IS NULL OR expires_at >= ?)"

_CLAIM_RETURNING = "id, push_id, project_id, channel_id, number, body, media, media_kind, " \
    "parts, priority, attempts, extra"


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
            while len(batch) < GROUP_COMMIT_MAX_JOBS:
                try:
                    job = self.jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                batch.append(job)
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


def _run_jobs(conn: sqlite3.Connection, batch: list[_Job]) -> list[tuple[bool, Any]]:
    """The jobs of an open transaction, each in a savepoint, then the commit: their outcomes
    (all failed if the commit did)."""
    outcomes: list[tuple[bool, Any]] = []
    for job in batch:
        conn.execute("SAVEPOINT job")
        try:
            outcomes.append((True, job.fn(conn, *job.args)))
            conn.execute("RELEASE job")
        except BaseException as exc:  # the job's own error goes back to its caller
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            outcomes.append((False, exc))
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        error = StoreUnavailable(f"commit failed: {exc}")
        outcomes = [(False, error)] * len(batch)
    return outcomes


def _resolve_all(answers: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in answers:
        _resolve(future, ok, value)


class SQLiteStore(Store):
    def __init__(self, url: str) -> None:
        path = sqlite_path(url)
        if path is None or path == ":memory:":
            raise StoreUnavailable("the SQLite store needs a file: sqlite:///path/to/file.db")
        self.path = path
        self._writer: _Writer | None = None
        self._reader: sqlite3.Connection | None = None

    # --- life -----------------------------------------------------------------------------
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
        # tens of ms. 0.2 ms lets the writer's SQLite work overlap the loop's Python work:
        # +18 % 1,000-recipient pushes/s in two A/Bs (medians of 3: 100k → 118k and
        # 79k → 93k messages/s; p99 60 → 54 ms; docs/benchmarks.md). Only ever lowered.
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

    def _write(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        if self._writer is None:
            raise StoreUnavailable("the store is not open")
        if not self._writer.is_alive():
            raise StoreUnavailable("the SQLite writer thread has stopped")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._writer.jobs.put(_Job(fn, args, future, loop))
        return future

    # --- operators --------------------------------------------------------------------------
    async def create_project(
        self, name: str, balance_micro: int, webhook_url: str | None, webhook_secret: str
    ) -> Project:
        def job(conn: sqlite3.Connection) -> Project:
            now = _now()
            cur = conn.execute(
                "INSERT INTO projects (name, balance_micro, webhook_url, webhook_secret, active,"
                " created_at) VALUES (?, ?, ?, ?, 1, ?)",
                (name, balance_micro, webhook_url, webhook_secret, now),
            )
            project_id = int(cur.lastrowid or 0)
            if balance_micro:
                conn.execute(
                    "INSERT INTO credit_ledger (project_id, delta_micro, reason, at)"
                    " VALUES (?, ?, 'initial credit', ?)", (project_id, balance_micro, now))
            return Project(project_id, name, balance_micro, webhook_url, True)

        return await self._write(job)

    async def get_project(self, project_id: int) -> Project | None:
        row = self._read().execute(
            f"SELECT {PROJECT_COLUMNS} FROM projects WHERE id = ?", (project_id,)).fetchone()
        return project_from_row(row) if row else None

    async def find_project(self, name: str) -> Project | None:
        row = self._read().execute("SELECT id FROM projects WHERE name = ?", (name,)).fetchone()
        return await self.get_project(row[0]) if row else None

    async def list_projects(self) -> list[Project]:
        rows = self._read().execute(
            f"SELECT {PROJECT_COLUMNS} FROM projects ORDER BY id").fetchall()
        return [project_from_row(r) for r in rows]

    async def set_webhook(self, project_id: int, url: str | None, secret: str | None) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE projects SET webhook_url = ?, webhook_secret = coalesce(?, webhook_secret)"
                " WHERE id = ?", (url, secret, project_id))

        await self._write(job)

    async def set_incoming_webhook(self, project_id: int, url: str | None) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE projects SET incoming_webhook_url = ? WHERE id = ?",
                         (url, project_id))

        await self._write(job)

    async def add_credits(self, project_id: int, delta_micro: int, reason: str) -> int:
        def job(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "UPDATE projects SET balance_micro = balance_micro + ? WHERE id = ?"
                " RETURNING balance_micro", (delta_micro, project_id)).fetchone()
            if row is None:
                raise KeyError(f"no project {project_id}")
            conn.execute(
                "INSERT INTO credit_ledger (project_id, delta_micro, reason, at)"
                " VALUES (?, ?, ?, ?)", (project_id, delta_micro, reason, _now()))
            return int(row[0])

        try:
            return await self._write(job)
        except sqlite3.IntegrityError:
            raise ValueError("the balance cannot go below zero") from None

    async def create_token(
        self, project_id: int, token_hash: str, label: str, ip_allow: Sequence[str]
    ) -> int:
        def job(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO api_tokens (project_id, token_hash, label, ip_allow, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (project_id, token_hash, label, ",".join(ip_allow), _now()))
            return int(cur.lastrowid or 0)

        return await self._write(job)

    async def revoke_token(self, token_id: int) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (_now(), token_id))
            return cur.rowcount > 0

        return await self._write(job)

    async def list_tokens(self, project_id: int) -> list[dict[str, Any]]:
        rows = self._read().execute(
            "SELECT id, label, ip_allow, created_at, revoked_at FROM api_tokens"
            " WHERE project_id = ? ORDER BY id", (project_id,)).fetchall()
        return [{"id": r[0], "label": r[1], "ip_allow": [ip for ip in r[2].split(",") if ip],
                 "created_at": r[3], "revoked_at": r[4]} for r in rows]

    async def add_channel(self, spec: ChannelSpec) -> ChannelSpec:
        def job(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO channels (project_id, kind, application, price_micro, price_unit,"
                " max_chars, max_segments, media_allowed, rate_per_second, delay_ms, jitter_ms,"
                " paused, name, config, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (spec.project_id, spec.kind, spec.application, spec.price_micro,
                 str(spec.price_unit), spec.max_chars, spec.max_segments, spec.media_allowed,
                 spec.rate_per_second, spec.delay_ms, spec.jitter_ms, spec.paused, spec.name,
                 json.dumps(spec.config), _now()))
            return int(cur.lastrowid or 0)

        channel_id = await self._write(job)
        channel = await self.get_channel(channel_id)
        assert channel is not None
        return channel

    async def update_channel(self, channel_id: int, **changes: Any) -> ChannelSpec | None:
        allowed = {"price_micro", "price_unit", "max_chars", "max_segments", "media_allowed",
                   "rate_per_second", "delay_ms", "jitter_ms", "paused", "name", "config",
                   "paused_reason"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"cannot change {sorted(unknown)}")
        if "config" in changes:
            changes["config"] = json.dumps(changes["config"])
        if "price_unit" in changes:
            changes["price_unit"] = str(changes["price_unit"])
        if changes:
            assignments = ", ".join(f"{name} = ?" for name in changes)

            def job(conn: sqlite3.Connection) -> None:
                conn.execute(f"UPDATE channels SET {assignments} WHERE id = ?",
                             (*changes.values(), channel_id))

            await self._write(job)
        return await self.get_channel(channel_id)

    async def list_channels(self, project_id: int | None = None) -> list[ChannelSpec]:
        if project_id is None:
            rows = self._read().execute(
                f"SELECT {CHANNEL_COLUMNS} FROM channels ORDER BY id").fetchall()
        else:
            rows = self._read().execute(
                f"SELECT {CHANNEL_COLUMNS} FROM channels WHERE project_id = ? ORDER BY id",
                (project_id,)).fetchall()
        return [channel_from_row(r) for r in rows]

    async def get_channel(self, channel_id: int) -> ChannelSpec | None:
        row = self._read().execute(
            f"SELECT {CHANNEL_COLUMNS} FROM channels WHERE id = ?", (channel_id,)).fetchone()
        return channel_from_row(row) if row else None

    # --- accept -----------------------------------------------------------------------------
    async def authenticate(self, token_hash: str) -> TokenInfo | None:
        row = self._read().execute(
            "SELECT t.id, t.project_id, t.revoked_at, t.ip_allow, p.active FROM api_tokens t"
            " JOIN projects p ON p.id = t.project_id WHERE t.token_hash = ?",
            (token_hash,)).fetchone()
        if row is None:
            return None
        return TokenInfo(token_id=row[0], project_id=row[1], revoked=row[2] is not None,
                         ip_allow=[ip for ip in row[3].split(",") if ip],
                         project_active=bool(row[4]))

    async def find_channel(self, project_id: int, application: int) -> ChannelSpec | None:
        row = self._read().execute(
            f"SELECT {CHANNEL_COLUMNS} FROM channels WHERE project_id = ? AND application = ?"
            " ORDER BY paused, id LIMIT 1", (project_id, application)).fetchone()
        return channel_from_row(row) if row else None

    async def accept_push(
        self,
        project_id: int,
        channel: ChannelSpec,
        plan: PushPlan,
        now: float,
        expires_at: float | None,
    ) -> AcceptResult:
        rows = _message_rows(plan)
        push_id, first_id, balance = await self._write(_accept_job, project_id, channel, plan,
                                                       rows, now, expires_at)
        return AcceptResult(push_id=push_id, balance_micro=balance,
                            message_ids=list(range(first_id, first_id + len(plan.accepted))))

    # --- reports ----------------------------------------------------------------------------
    async def get_push(self, project_id: int, push_id: int) -> dict[str, Any] | None:
        conn = self._read()
        row = conn.execute(
            "SELECT id, channel_id, priority, entries, accepted, credit_micro, created_at"
            " FROM pushes WHERE id = ? AND project_id = ?", (push_id, project_id)).fetchone()
        if row is None:
            return None
        counts = dict(conn.execute(
            "SELECT state, count(*) FROM messages WHERE push_id = ? GROUP BY state",
            (push_id,)).fetchall())
        return {"push_id": row[0], "channel_id": row[1], "priority": row[2], "entries": row[3],
                "accepted": row[4], "credit_micro": row[5], "created_at": row[6],
                "counts": counts}

    async def iter_push_messages(
        self, project_id: int, push_id: int, chunk: int = 1000
    ) -> AsyncIterator[list[dict[str, Any]]]:
        last = 0
        while True:
            rows = self._read().execute(
                "SELECT id, number, state, reference, error_code, error_message, updated_at,"
                " body, media, media_kind, credit_micro, channel_id, resends FROM messages"
                " WHERE push_id = ? AND project_id = ? AND id > ? ORDER BY id LIMIT ?",
                (push_id, project_id, last, chunk)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [message_dict(r) for r in rows]
            if len(rows) < chunk:
                return
            await asyncio.sleep(0)

    async def get_message(self, project_id: int, message_id: int) -> dict[str, Any] | None:
        conn = self._read()
        row = conn.execute(
            f"SELECT {MESSAGE_DETAIL_COLUMNS} FROM messages WHERE id = ? AND project_id = ?",
            (message_id, project_id)).fetchone()
        if row is None:
            return None
        events = conn.execute(
            "SELECT state, at, detail FROM message_events WHERE message_id = ? ORDER BY id",
            (message_id,)).fetchall()
        return message_detail(row, events)

    async def get_media(self, media_id: int) -> tuple[str, bytes] | None:
        row = self._read().execute(
            "SELECT content_type, data FROM media WHERE id = ?", (media_id,)).fetchone()
        return (row[0], bytes(row[1])) if row else None

    async def sandbox_inbox(self, project_id: int, limit: int) -> list[dict[str, Any]]:
        rows = self._read().execute(
            "SELECT m.id, m.number, m.state, m.reference, m.error_code, m.error_message,"
            " m.updated_at, m.body, m.media, m.media_kind, m.credit_micro, m.channel_id,"
            " m.resends FROM messages m JOIN channels c ON c.id = m.channel_id"
            " WHERE c.project_id = ? AND c.kind = 'sandbox'"
            " AND m.state NOT IN ('queued', 'sending')"
            " ORDER BY m.updated_at DESC, m.id DESC LIMIT ?", (project_id, limit)).fetchall()
        return [message_dict(r) for r in rows]

    # --- dispatch ---------------------------------------------------------------------------
    async def acquire_channel_leases(self, worker_id: str, now: float, ttl: float,
                                     skip_kinds: Sequence[str] = ()) -> list[int]:
        return await self._write(_acquire_leases_job, worker_id, now, ttl, list(skip_kinds))

    async def release_channel_leases(self, worker_id: str) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM channel_leases WHERE worker_id = ?", (worker_id,))
            conn.execute("DELETE FROM workers WHERE worker_id = ?", (worker_id,))

        await self._write(job)

    async def claim_messages(
        self, channel_id: int, worker_id: str, limit: int, now: float, lease_seconds: float,
        min_priority: int = 0,
    ) -> list[OutboundMessage]:
        expired, fresh = await self._write(_claim_job, channel_id, worker_id, limit, now,
                                           lease_seconds, min_priority)
        return _outbound_messages(expired, fresh)

    async def record_outcomes(
        self, worker_id: str, results: Sequence[SendResult], now: float, policy: RetryPolicy
    ) -> None:
        if results:
            await self._write(_record_outcomes_job, worker_id, list(results), now, policy)

    async def release_messages(self, worker_id: str, message_ids: Sequence[int]) -> None:
        def job(conn: sqlite3.Connection) -> None:
            released = conn.execute(
                "UPDATE messages SET state = 'queued', lease_until = NULL, leased_by = NULL,"
                " attempts = max(attempts - 1, 0) WHERE id IN (SELECT value FROM json_each(?))"
                " AND state = 'sending' AND leased_by = ? RETURNING id",
                (json.dumps(list(message_ids)), worker_id)).fetchall()
            now = _now()
            conn.executemany(
                "INSERT INTO message_events (message_id, state, at, detail) VALUES (?, ?, ?, ?)",
                [(r[0], "queued", now, f"released unsent by worker {worker_id}")
                 for r in sorted(released)])

        if message_ids:
            await self._write(job)

    async def apply_status_updates(self, updates: Sequence[StatusUpdate]) -> int:
        if not updates:
            return 0
        return await self._write(_apply_status_job, list(updates))

    async def sent_since(self, channel_id: int, since: float) -> int:
        row = self._read().execute(
            "SELECT count(*) FROM messages WHERE channel_id = ? AND submitted_at >= ?",
            (channel_id, since)).fetchone()
        return int(row[0])

    async def submitted_before(self, channel_id: int, before: float, limit: int) -> list[int]:
        rows = self._read().execute(
            "SELECT id FROM messages WHERE channel_id = ? AND state = 'submitted'"
            " AND updated_at <= ? ORDER BY priority DESC, id LIMIT ?",
            (channel_id, before, limit)).fetchall()
        return [r[0] for r in rows]

    async def expire_due(self, now: float, limit: int) -> int:
        return await self._write(_expire_job, now, limit)

    async def has_ready_messages(self, channel_id: int, now: float,
                                 min_priority: int = 0) -> bool:
        conn = self._read()
        row = conn.execute(
            f"SELECT 1 FROM messages WHERE channel_id = ? AND state = 'queued' AND {_LIVE}"
            f" AND priority >= ? AND next_attempt_at <= ? AND {_VALID} LIMIT 1",
            (channel_id, min_priority, now, now)).fetchone()
        if row is None:
            row = conn.execute(
                f"SELECT 1 FROM messages WHERE channel_id = ? AND state = 'sending' AND {_LIVE}"
                f" AND priority >= ? AND lease_until < ? AND {_VALID} LIMIT 1",
                (channel_id, min_priority, now, now)).fetchone()
        return row is not None

    async def listen(self, on_channel: Callable[[int], None],
                     outage: Outage | None = None) -> None:
        """Until cancelled: every ``LISTEN_POLL_SECONDS``, ask SQLite whether another
        connection committed (``PRAGMA data_version``: a read of shared memory, microseconds),
        and if so call ``on_channel`` for the channel of each push recorded since the last
        look (push ids only grow, so that is a range of the primary key, one row a push).
        Pushes taken by another process on this file (``serve --api-only``, ``--reuse-port``)
        then wake this process's dispatcher within milliseconds, not at its next poll.
        A read that fails (the file locked for long, a disk error) is reported and the
        connection opened again with back-off."""
        backoff = Backoff()
        while True:
            began = time.monotonic()
            conn: sqlite3.Connection | None = None
            try:
                conn = _connect(self.path)
                version = conn.execute("PRAGMA data_version").fetchone()[0]
                last_push = conn.execute(
                    "SELECT coalesce(max(id), 0) FROM pushes").fetchone()[0]
                if outage is not None:
                    outage.reached(began)
                backoff.reset()
                while True:
                    await asyncio.sleep(LISTEN_POLL_SECONDS)
                    began = time.monotonic()
                    now_version = conn.execute("PRAGMA data_version").fetchone()[0]
                    if now_version == version:
                        continue
                    version = now_version
                    rows = conn.execute(
                        "SELECT id, channel_id FROM pushes WHERE id > ? ORDER BY id",
                        (last_push,)).fetchall()
                    if rows:
                        last_push = rows[-1][0]
                        for channel_id in {channel_id for _id, channel_id in rows}:
                            on_channel(channel_id)
            except sqlite3.Error as exc:
                if outage is not None and is_unavailable(exc):
                    outage.failed(exc, began)
                else:
                    log.warning("watching %s for pushes failed (%s); trying again",
                                self.path, describe(exc))
            finally:
                if conn is not None:
                    conn.close()
            await asyncio.sleep(backoff.next())

    # --- webhooks ---------------------------------------------------------------------------
    async def claim_outbox(
        self, worker_id: str, limit: int, now: float, lease_seconds: float
    ) -> list[OutboxBatch]:
        return await self._write(_claim_outbox_job, limit, now, lease_seconds)

    async def complete_outbox(self, ids: Sequence[int]) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?))",
                         (json.dumps(list(ids)),))

        if ids:
            await self._write(job)

    async def retry_outbox(
        self, ids: Sequence[int], now: float, schedule: Sequence[float]
    ) -> None:
        def job(conn: sqlite3.Connection) -> None:
            rows = conn.execute(
                "SELECT id, attempts FROM outbox WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(list(ids)),)).fetchall()
            updates = []
            for outbox_id, attempts in rows:
                tries = attempts + 1
                if tries > len(schedule):
                    updates.append((tries, now, True, outbox_id))
                else:
                    updates.append((tries, now + schedule[tries - 1], False, outbox_id))
            conn.executemany(
                "UPDATE outbox SET attempts = ?, next_attempt_at = ?, dead = ? WHERE id = ?",
                updates)

        if ids:
            await self._write(job)

    # --- inbound ----------------------------------------------------------------------------
    async def record_inbound(self, messages: Sequence[InboundMessage], now: float) -> int:
        def job(conn: sqlite3.Connection) -> int:
            new = 0
            for m in messages:
                row = conn.execute(
                    "INSERT INTO inbound_messages (project_id, channel_id, number, body, type,"
                    " provider_id, media_url, name, raw, at, forward_at)"
                    " SELECT c.project_id, c.id, ?, ?, ?, ?, ?, ?, ?, ?,"
                    " CASE WHEN coalesce(p.incoming_webhook_url, '') <> '' THEN ? END"
                    " FROM channels c JOIN projects p ON p.id = c.project_id WHERE c.id = ?"
                    " ON CONFLICT (channel_id, provider_id) DO NOTHING RETURNING id",
                    (m.number, m.text, m.type, m.provider_id, m.media_url, m.name,
                     json.dumps(m.raw, default=str), m.at, now, m.channel_id)).fetchone()
                new += row is not None
            return new

        return await self._write(job) if messages else 0

    async def add_inbound_parts(self, parts: Sequence[InboundPart]) -> list[InboundPart]:
        def job(conn: sqlite3.Connection) -> list[InboundPart]:
            conn.executemany(
                "INSERT INTO inbound_parts (channel_id, number, destination, reference, total,"
                " seq, data_coding, data, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                [(p.channel_id, p.number, p.destination, p.reference, p.total, p.seq,
                  p.data_coding, p.data, p.at) for p in parts])
            stored: list[InboundPart] = []
            for key in dict.fromkeys(p.key for p in parts):
                stored += [_inbound_part(r) for r in conn.execute(
                    "SELECT channel_id, number, destination, reference, total, seq,"
                    " data_coding, data, at FROM inbound_parts WHERE channel_id = ?"
                    " AND number = ? AND destination = ? AND reference = ? AND total = ?"
                    " ORDER BY seq", key)]
            return stored

        return await self._write(job) if parts else []

    async def due_inbound_parts(self, channel_id: int, before: float,
                                limit: int) -> list[InboundPart]:
        return [_inbound_part(r) for r in self._read().execute(
            "SELECT p.channel_id, p.number, p.destination, p.reference, p.total, p.seq,"
            " p.data_coding, p.data, p.at FROM inbound_parts p JOIN"
            " (SELECT number, destination, reference, total FROM inbound_parts"
            "  WHERE channel_id = ? GROUP BY number, destination, reference, total"
            "  HAVING min(at) < ? ORDER BY min(at) LIMIT ?) d"
            " ON d.number = p.number AND d.destination = p.destination"
            " AND d.reference = p.reference AND d.total = p.total"
            " WHERE p.channel_id = ? ORDER BY p.number, p.destination, p.reference,"
            " p.total, p.seq", (channel_id, before, limit, channel_id))]

    async def drop_inbound_parts(self, parts: Sequence[InboundPart]) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "DELETE FROM inbound_parts WHERE channel_id = ? AND number = ?"
                " AND destination = ? AND reference = ? AND total = ? AND seq = ?",
                [(*p.key, p.seq) for p in parts])

        if parts:
            await self._write(job)

    async def claim_inbound(
        self, limit: int, now: float, lease_seconds: float
    ) -> list[InboundForward]:
        def job(conn: sqlite3.Connection) -> list[InboundForward]:
            rows = conn.execute(
                "UPDATE inbound_messages SET forward_at = ? WHERE id IN (SELECT id FROM"
                " inbound_messages WHERE forward_at <= ? ORDER BY forward_at, id LIMIT ?)"
                " RETURNING id", (now + lease_seconds, now, limit)).fetchall()
            if not rows:
                return []
            return [InboundForward(r[0], r[1], r[10] or "", r[11] or "", r[12],
                                   inbound_payload(r)) for r in conn.execute(
                "SELECT i.id, i.project_id, i.channel_id, i.number, i.body, i.type,"
                " i.provider_id, i.media_url, i.name, c.application, p.incoming_webhook_url,"
                " p.webhook_secret, i.forward_attempts, i.raw FROM inbound_messages i"
                " JOIN channels c ON c.id = i.channel_id JOIN projects p ON p.id = i.project_id"
                " WHERE i.id IN (SELECT value FROM json_each(?)) ORDER BY i.id",
                (json.dumps([r[0] for r in rows]),)).fetchall()]

        return await self._write(job)

    async def complete_inbound(self, ids: Sequence[int]) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE inbound_messages SET forward_at = NULL"
                         " WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(list(ids)),))

        if ids:
            await self._write(job)

    async def retry_inbound(
        self, ids: Sequence[int], now: float, schedule: Sequence[float]
    ) -> None:
        def job(conn: sqlite3.Connection) -> None:
            rows = conn.execute(
                "SELECT id, forward_attempts FROM inbound_messages"
                " WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(list(ids)),))
            conn.executemany(
                "UPDATE inbound_messages SET forward_attempts = ?, forward_at = ? WHERE id = ?",
                [(tries, None if tries > len(schedule) else now + schedule[tries - 1], mid)
                 for mid, tries in ((r[0], r[1] + 1) for r in rows.fetchall())])

        if ids:
            await self._write(job)

    async def outbox_stats(self) -> dict[str, int]:
        row = self._read().execute(
            "SELECT coalesce(sum(dead = 0), 0), coalesce(sum(dead = 1), 0) FROM outbox"
        ).fetchone()
        return {"pending": int(row[0]), "dead": int(row[1])}

    # --- devices ----------------------------------------------------------------------------
    async def register_device(self, device: Device, token_hash: str) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO devices (id, channel_id, project_id, name, token_hash, push_token,"
                " user_agent, health, created_at, last_seen_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (device.id, device.channel_id, device.project_id, device.name, token_hash,
                 device.push_token, device.user_agent, json.dumps(device.health or {}),
                 device.created_at, device.last_seen_at))

        await self._write(job)

    async def device_by_token(self, token_hash: str) -> Device | None:
        row = self._read().execute(
            f"SELECT {DEVICE_COLUMNS} FROM devices WHERE token_hash = ?", (token_hash,)
        ).fetchone()
        return _device_from_row(row) if row else None

    async def get_device(self, device_id: str) -> Device | None:
        row = self._read().execute(
            f"SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?", (device_id,)).fetchone()
        return _device_from_row(row) if row else None

    async def list_devices(self, channel_id: int | None = None) -> list[Device]:
        conn = self._read()
        where, params = ("WHERE channel_id = ?", (channel_id,)) if channel_id is not None \
            else ("", ())
        rows = conn.execute(
            f"SELECT {DEVICE_COLUMNS} FROM devices {where} ORDER BY created_at, id",
            params).fetchall()
        held = dict(conn.execute(
            "SELECT leased_by, count(*) FROM messages WHERE channel_id IN"
            " (SELECT value FROM json_each(?)) AND state = 'sending' AND lease_until >= ?"
            " GROUP BY leased_by", (json.dumps(sorted({r[1] for r in rows})), _now())).fetchall())
        return [_device_from_row(r, held.get(device_worker(r[0]), 0)) for r in rows]

    async def touch_device(
        self,
        device_id: str,
        now: float,
        *,
        user_agent: str | None = None,
        push_token: str | None = None,
        health: dict[str, Any] | None = None,
    ) -> None:
        patch = json.dumps(health) if health else None

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE devices SET last_seen_at = max(coalesce(last_seen_at, 0), ?),"
                " user_agent = coalesce(?, user_agent), push_token = coalesce(?, push_token),"
                " health = CASE WHEN ? IS NULL THEN health ELSE json_patch(health, ?) END"
                " WHERE id = ?", (now, user_agent, push_token, patch, patch, device_id))

        await self._write(job)

    async def revoke_devices(
        self, now: float, *, device_id: str | None = None, channel_id: int | None = None
    ) -> int:
        def job(conn: sqlite3.Connection) -> int:
            if device_id is not None:
                cur = conn.execute("UPDATE devices SET revoked_at = ? WHERE id = ?"
                                   " AND revoked_at IS NULL", (now, device_id))
            else:
                cur = conn.execute("UPDATE devices SET revoked_at = ? WHERE channel_id = ?"
                                   " AND revoked_at IS NULL", (now, channel_id))
            return cur.rowcount

        if device_id is None and channel_id is None:
            raise ValueError("revoke_devices needs a device_id or a channel_id")
        return await self._write(job)

    async def claim_for_device(
        self, device_id: str, quota: DeviceQuota, now: float
    ) -> DeviceClaim:
        return await self._write(_claim_for_device_job, device_id, quota, now)

    async def note_device_reports(
        self,
        device_id: str,
        reports: Sequence[tuple[int, str, float]],
        now: float,
        lease_seconds: float,
    ) -> dict[int, ReportedMessage]:
        return await self._write(_note_device_reports_job, device_id, list(reports), now,
                                 lease_seconds)

    async def pause_device(self, device_id: str, until: float) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE devices SET paused_until = max(paused_until, ?) WHERE id = ?",
                         (until, device_id))

        await self._write(job)

    async def request_reconnect(self, channel_id: int, now: float) -> int:
        def job(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "UPDATE devices SET reconnect_at = ? WHERE channel_id = ? AND revoked_at IS NULL",
                (now, channel_id)).rowcount

        return await self._write(job)

    async def cancel_channel_queue(
        self, channel_id: int, now: float, reason: str, include_in_flight: bool = False
    ) -> tuple[int, int]:
        return await self._write(_cancel_queue_job, channel_id, now, reason, include_in_flight)

    async def channel_queue_counts(self, channel_id: int) -> dict[str, int]:
        counts = dict(self._read().execute(
            f"SELECT state, count(*) FROM messages WHERE channel_id = ? AND {_LIVE}"
            " GROUP BY state", (channel_id,)).fetchall())
        return {"queued": int(counts.get("queued", 0)), "sending": int(counts.get("sending", 0))}


# --- write jobs (run on the writer thread, inside the batch transaction) -----------------------

def _now() -> float:
    return time.time()


#: Rows per INSERT statement: a push is cut greedily into these sizes, so every push size is
#: made of the same six prepared statements (preparing one of a new size costs as much again
#: as running it, ~2.7 µs a row, and real pushes vary in size), and a large push goes 2,000
#: rows a statement (fewer GIL round trips for the writer: 10,000-recipient pushes +12-18 %,
#: docs/benchmarks.md). 2,000 rows bind 18,007 parameters, under SQLite's default limit of
#: 32,766 (since 3.32).
_INSERT_SIZES = (2000, 500, 100, 20, 5, 1)
_INSERT_MESSAGE_WIDTH = 9   # parameters per row; the push-wide ones come first, once


def _message_rows(plan: PushPlan) -> list[Any]:
    """The accepted rows as ``_insert_messages_sql`` binds them, flat: each row's offset in
    the push (its id is the push's first id plus that), then the plan's columns. Built on
    the caller's thread: the writer thread is the accept path's bottleneck for large pushes,
    and building them there cost it ~0.2–0.3 µs a message (docs/benchmarks.md)."""
    if not plan.refused:   # every entry accepted: an entry's index is its offset
        return list(itertools.chain.from_iterable(plan.accepted))
    return [value for offset, row in enumerate(plan.accepted) for value in (offset, *row[1:])]


@functools.lru_cache(maxsize=8)
def _insert_messages_sql(rows: int) -> str:
    # ?1..?7 are the same for every row of a push (push_id, project_id, channel_id, priority,
    # now, expires_at, first id) and are bound once per statement; the anonymous ? of the
    # VALUES rows are numbered from 8 on (SQLite numbers a bare ? one past the largest so
    # far). Binding runs under the GIL on the writer thread: 9 instead of 17 parameters per
    # row inserts 181k → 215k rows/s (bench/store_driver.py, median of 3); end to end on
    # 1,000-recipient pushes the gain is within run-to-run noise (three A/Bs: +9 %, -8 %,
    # -9 %; docs/benchmarks.md).
    one = "(?, ?, ?, ?, ?, ?, ?, ?, ?)"
    return ("INSERT INTO messages (id, push_id, project_id, channel_id, number, body, media,"
            " media_kind, reference, priority, state, parts, segments, credit_micro, attempts,"
            " resends, next_attempt_at, created_at, updated_at, expires_at)"
            " SELECT ?7 + column1, ?1, ?2, ?3, column2, column3, column4, column5, column6, ?4,"
            " 'queued', column7, column8, column9, 0, 0, ?5, ?5, ?5, ?6 FROM (VALUES "
            + ", ".join([one] * rows) + ")")


def _accept_job(
    conn: sqlite3.Connection,
    project_id: int,
    channel: ChannelSpec,
    plan: PushPlan,
    rows: list[Any],
    now: float,
    expires_at: float | None,
) -> tuple[int, int, int]:
    """Charge, record the push and insert its messages: (push id, first message id, balance
    after). ``rows`` is ``_message_rows(plan)``."""
    total = plan.credit_total
    row = conn.execute(
        "UPDATE projects SET balance_micro = balance_micro - ? WHERE id = ?"
        " AND balance_micro >= ? RETURNING balance_micro", (total, project_id, total)).fetchone()
    if row is None:
        balance = conn.execute("SELECT balance_micro FROM projects WHERE id = ?",
                               (project_id,)).fetchone()
        raise InsufficientCredit(total, int(balance[0]) if balance else 0)
    balance_after = int(row[0])

    media_id = None
    if plan.inline_media is not None:
        media = plan.inline_media
        media_id = conn.execute(
            "INSERT INTO media (project_id, kind, content_type, data, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (project_id, str(media.kind), media.content_type, media.data, now)).lastrowid
    push_id = int(conn.execute(
        "INSERT INTO pushes (project_id, channel_id, priority, entries, accepted, credit_micro,"
        " media_id, created_at, expiry_due) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (project_id, channel.id, plan.priority, plan.total_entries, len(plan.accepted), total,
         media_id, now, expires_at)).lastrowid or 0)
    if total:
        conn.execute(
            "INSERT INTO credit_ledger (project_id, delta_micro, reason, push_id, at)"
            " VALUES (?, ?, 'push', ?, ?)", (project_id, -total, push_id, now))

    # Ids are handed out here, under the write lock, so the answer can list them in order
    # without reading them back.
    first_id = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM messages").fetchone()[0]
    width = _INSERT_MESSAGE_WIDTH
    if media_id is not None:
        # The messages of a push with inline media point at its one stored copy.
        rows = rows.copy()
        rows[3::width] = [f"media:{media_id}" if media_ref == "inline:" else media_ref
                          for media_ref in rows[3::width]]
    push_wide = [push_id, project_id, channel.id, plan.priority, now, expires_at, first_id]
    # Multi-row INSERTs: ~30 % faster than executemany of one-row statements for
    # 1,000-recipient pushes (docs/benchmarks.md).
    count = len(plan.accepted)
    start = 0
    for size in _INSERT_SIZES:
        while count - start >= size:
            conn.execute(_insert_messages_sql(size),
                         push_wide + rows[start * width:(start + size) * width])
            start += size
    if plan.extras is not None:
        # Only template pushes carry channel data: the plain hot path binds nothing more.
        conn.executemany("UPDATE messages SET extra = ? WHERE id = ?",
                         [(extra, first_id + offset)
                          for offset, extra in enumerate(plan.extras) if extra is not None])
    return push_id, first_id, balance_after


def _acquire_leases_job(
    conn: sqlite3.Connection, worker_id: str, now: float, ttl: float, skip_kinds: list[str]
) -> list[int]:
    until = now + ttl
    skip = json.dumps(skip_kinds)
    conn.execute(
        "INSERT INTO workers (worker_id, heartbeat_at, started_at) VALUES (?, ?, ?)"
        " ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
        (worker_id, now, now))
    conn.execute("DELETE FROM workers WHERE heartbeat_at < ?", (now - ttl,))
    conn.execute("DELETE FROM channel_leases WHERE lease_until < ?", (now,))
    # Paused channels are not sent, and channels of skipped kinds (phones, which fetch their
    # own messages) have no sender: neither takes a share of the workers.
    conn.execute(
        "DELETE FROM channel_leases WHERE channel_id IN (SELECT id FROM channels WHERE paused"
        " OR kind IN (SELECT value FROM json_each(?)))", (skip,))
    conn.execute("UPDATE channel_leases SET lease_until = ? WHERE worker_id = ?",
                 (until, worker_id))
    live, active = conn.execute(
        "SELECT (SELECT count(*) FROM workers), (SELECT count(*) FROM channels WHERE NOT paused"
        " AND kind NOT IN (SELECT value FROM json_each(?)))", (skip,)).fetchone()
    share = fair_share(active, live)
    mine = [r[0] for r in conn.execute(
        "SELECT channel_id FROM channel_leases WHERE worker_id = ? ORDER BY channel_id",
        (worker_id,)).fetchall()]
    if len(mine) > share:
        # Another worker joined: hand back the surplus so it can take it.
        conn.execute(
            "DELETE FROM channel_leases WHERE channel_id IN (SELECT value FROM json_each(?))",
            (json.dumps(mine[share:]),))
    elif len(mine) < share:
        conn.execute(
            "INSERT INTO channel_leases (channel_id, worker_id, lease_until)"
            " SELECT id, ?, ? FROM channels WHERE NOT paused"
            " AND kind NOT IN (SELECT value FROM json_each(?))"
            " AND id NOT IN (SELECT channel_id FROM channel_leases) ORDER BY id LIMIT ?",
            (worker_id, until, skip, share - len(mine)))
    rows = conn.execute(
        "SELECT channel_id FROM channel_leases WHERE worker_id = ? ORDER BY channel_id",
        (worker_id,)).fetchall()
    return [r[0] for r in rows]


def _claim_job(
    conn: sqlite3.Connection,
    channel_id: int,
    worker_id: str,
    limit: int,
    now: float,
    lease_seconds: float,
    min_priority: int = 0,
) -> tuple[list[Any], list[Any]]:
    """Claim up to ``limit`` of the channel's due messages: (re-claimed, fresh) rows, each
    ``_CLAIM_RETURNING`` (fresh ones with ``claims`` after it)."""
    until = now + lease_seconds
    expired = _reclaim_expired(conn, channel_id, worker_id, now, until, limit,
                               _CLAIM_RETURNING, min_priority)
    fresh: list[Any] = []
    if len(expired) < limit:
        # A message's first claim is kept in its columns; only a later one is an event row
        # (core/history.py). SET expressions see the row as it was, so `claims = 0` is the
        # count before this claim.
        fresh = conn.execute(
            "UPDATE messages SET state = 'sending', lease_until = ?, leased_by = ?,"
            " attempts = attempts + 1, updated_at = ?, claims = claims + 1,"
            " first_claim_at = CASE WHEN claims = 0 THEN ? ELSE first_claim_at END,"
            " first_claim_by = CASE WHEN claims = 0 THEN ? ELSE first_claim_by END"
            " WHERE id IN (SELECT id FROM messages"
            f" WHERE channel_id = ? AND state = 'queued' AND {_LIVE} AND priority >= ?"
            f" AND next_attempt_at <= ? AND {_VALID}"
            f" ORDER BY priority DESC, id LIMIT ?) RETURNING {_CLAIM_RETURNING}, claims",
            (until, worker_id, now, now, worker_id, channel_id, min_priority, now, now,
             limit - len(expired))).fetchall()
    events = [(r[0], "sending", now, f"worker {worker_id}, attempt {r[10]}")
              for r in fresh if r[12] > 1]
    events += [(r[0], "sending", now,
                f"worker {worker_id}, attempt {r[10]}: possible re-send, previous lease expired")
               for r in expired]
    conn.executemany(
        "INSERT INTO message_events (message_id, state, at, detail) VALUES (?, ?, ?, ?)", events)
    return expired, fresh


def _outbound_messages(expired: list[Any], fresh: list[Any]) -> list[OutboundMessage]:
    """The claimed rows as messages to send, highest priority first. Built on the caller's
    thread, not the writer's: the writer is the dispatch path's busiest thread (~80 % busy
    through the sandbox), and these objects were ~12 % of its time (py-spy; the end-to-end
    A/B was within noise, docs/benchmarks.md)."""
    messages = [
        OutboundMessage(id=r[0], push_id=r[1], project_id=r[2], channel_id=r[3], number=r[4],
                        text=r[5], media_url=r[6], media_kind=r[7], parts=r[8], priority=r[9],
                        attempts=r[10], possible_resend=resend,
                        extra=json.loads(r[11]) if r[11] else None)
        for rows, resend in ((expired, True), (fresh, False)) for r in rows
    ]
    messages.sort(key=lambda m: (-m.priority, m.id))
    return messages


def _reclaim_expired(conn: sqlite3.Connection, channel_id: int, worker_id: str, now: float,
                     until: float, limit: int, returning: str,
                     min_priority: int = 0) -> list[Any]:
    """Claim again the channel's messages whose lease ran out while ``sending``: they may have
    reached the provider, so nothing is lost and each is counted as a possible re-send
    (nothing is doubled silently). Not past their validity: those the sweep expires."""
    return conn.execute(
        "UPDATE messages SET lease_until = ?, leased_by = ?, attempts = attempts + 1,"
        " resends = resends + 1, claims = claims + 1, updated_at = ?"
        " WHERE id IN (SELECT id FROM messages"
        f" WHERE channel_id = ? AND state = 'sending' AND {_LIVE} AND priority >= ?"
        f" AND lease_until < ? AND {_VALID}"
        f" ORDER BY priority DESC, id LIMIT ?) RETURNING {returning}",
        (until, worker_id, now, channel_id, min_priority, now, now, limit)).fetchall()


def _webhook_projects(conn: sqlite3.Connection) -> set[int]:
    rows = conn.execute(
        "SELECT id FROM projects WHERE webhook_url IS NOT NULL AND webhook_url <> ''").fetchall()
    return {r[0] for r in rows}


def _refund(conn: sqlite3.Connection, refunds: dict[int, int], now: float, reason: str) -> None:
    for project_id, micro in refunds.items():
        if micro:
            conn.execute("UPDATE projects SET balance_micro = balance_micro + ? WHERE id = ?",
                         (micro, project_id))
            conn.execute(
                "INSERT INTO credit_ledger (project_id, delta_micro, reason, at)"
                " VALUES (?, ?, ?, ?)", (project_id, micro, reason, now))


def _add_outbox(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """rows: (project_id, message_id, state, at, error_code, error_message, next_attempt_at)."""
    if rows:
        conn.executemany(
            "INSERT INTO outbox (project_id, message_id, state, at, error_code, error_message,"
            " attempts, next_attempt_at, dead) VALUES (?, ?, ?, ?, ?, ?, 0, ?, 0)", rows)


def _record_outcomes_job(
    conn: sqlite3.Connection,
    worker_id: str,
    results: list[SendResult],
    now: float,
    policy: RetryPolicy,
) -> None:
    current = {
        r[0]: r for r in conn.execute(
            "SELECT id, project_id, credit_micro, attempts, channel_id FROM messages"
            " WHERE id IN (SELECT value FROM json_each(?)) AND state = 'sending'"
            " AND leased_by = ?",
            (json.dumps([res.message_id for res in results]), worker_id)).fetchall()
    }
    hooks = _webhook_projects(conn)
    submitted, retried, deferred, failed, events, outbox = [], [], [], [], [], []
    refunds: dict[int, int] = defaultdict(int)
    late_provider_ids = []
    refs: list[tuple[int, str, int, int]] = []
    for res in results:
        row = current.get(res.message_id)
        if row is None:
            # Our lease ran out and another worker owns the message now; its outcome counts.
            # Or a provider callback moved it on first: then keep its provider ids.
            if res.ok and res.provider_id:
                late_provider_ids.append((res.provider_id, res.message_id))
            if res.ok and res.provider_refs:
                channel_id = conn.execute("SELECT channel_id FROM messages WHERE id = ?",
                                          (res.message_id,)).fetchone()
                if channel_id is not None:
                    refs += [(channel_id[0], pid, res.message_id, part)
                             for part, pid in res.provider_refs]
            continue
        mid, project_id, credit, attempts, channel_id = row
        if res.ok:
            # An ok send may still report a problem with a part (e.g. an audio's text lost).
            state = "delivered" if res.delivered else "submitted"
            refs += [(channel_id, pid, mid, part) for part, pid in res.provider_refs]
            if res.error_code:
                # A problem to report: the submission keeps its event rows, with the problem
                # (its `submitted_at` still counts it for the channel's caps).
                submitted.append((state, res.provider_id, res.error_code, res.error_message,
                                  now, None, now, mid))
                events.append((mid, "submitted", now, f"provider id {res.provider_id}; "
                               f"{res.error_code}: {res.error_message}"))
                if res.delivered:
                    events.append((mid, "delivered", now, None))
            else:
                # The routine case: the steps are columns, not rows (core/history.py).
                submitted.append((state, res.provider_id, None, None, now,
                                  now if res.delivered else None, now, mid))
            if project_id in hooks:
                outbox.append((project_id, mid, "submitted", now, None, None, now))
                if res.delivered:
                    outbox.append((project_id, mid, "delivered", now, None, None, now))
            continue
        detail = f"{res.error_code or 'error'}: {res.error_message or ''}".strip()
        if res.defer:
            wait = max(res.retry_after or 0.0, 0.05)
            deferred.append((now + wait, res.error_code, res.error_message, now, mid))
            events.append((mid, "queued", now, f"waiting {wait:.1f}s (not an attempt): {detail}"))
            continue
        if res.retryable and attempts < policy.max_attempts:
            delay = policy.delay(attempts, res.retry_after)
            retried.append((now + delay, res.error_code, res.error_message, now, mid))
            events.append((mid, "queued", now, f"retry in {delay:.1f}s after {detail}"))
            continue
        if res.retryable:
            detail = f"gave up after {attempts} attempts; last {detail}"
        failed.append((res.error_code, res.error_message, now, mid))
        events.append((mid, "failed", now, detail))
        events.append((mid, "refunded", now, f"{credit} micro-credits returned"))
        refunds[project_id] += credit
        if project_id in hooks:
            outbox.append((project_id, mid, "refunded", now, res.error_code, res.error_message,
                           now))
    # A send that went through has this attempt's problem, if any: an earlier attempt's
    # error (a retry's 130429) stays in the history only.
    conn.executemany(
        "UPDATE messages SET state = ?, provider_id = ?, error_code = ?, error_message = ?,"
        " submitted_at = ?, delivered_at = ?, lease_until = NULL, leased_by = NULL,"
        " updated_at = ? WHERE id = ?", submitted)
    conn.executemany(
        "UPDATE messages SET provider_id = ? WHERE id = ? AND provider_id IS NULL"
        " AND state IN ('submitted', 'delivered', 'read')", late_provider_ids)
    conn.executemany(
        "UPDATE messages SET state = 'queued', next_attempt_at = ?, error_code = ?,"
        " error_message = ?, lease_until = NULL, leased_by = NULL, updated_at = ?"
        " WHERE id = ?", retried)
    conn.executemany(
        "UPDATE messages SET state = 'queued', next_attempt_at = ?, error_code = ?,"
        " error_message = ?, lease_until = NULL, leased_by = NULL, updated_at = ?,"
        " attempts = max(attempts - 1, 0) WHERE id = ?", deferred)
    conn.executemany(
        "UPDATE messages SET state = 'refunded', error_code = ?, error_message = ?,"
        " lease_until = NULL, leased_by = NULL, updated_at = ? WHERE id = ?", failed)
    conn.executemany(
        "INSERT INTO message_events (message_id, state, at, detail) VALUES (?, ?, ?, ?)", events)
    _refund(conn, refunds, now, "refund: send failed")
    _add_outbox(conn, outbox)
    conn.executemany(
        "INSERT INTO provider_refs (channel_id, provider_id, message_id, part, state)"
        " VALUES (?, ?, ?, ?, 'submitted') ON CONFLICT DO NOTHING", refs)
    _apply_early_updates(conn, [(current[s[7]][4], s[1]) for s in submitted if s[1]]
                         + [(c, pid) for c, pid, _m, _p in refs])


def _apply_early_updates(conn: sqlite3.Connection, keys: list[tuple[int, str]]) -> None:
    """Status updates that arrived before these provider ids were recorded: apply them now."""
    if not keys or conn.execute("SELECT 1 FROM early_updates LIMIT 1").fetchone() is None:
        return
    rows = conn.execute(
        "DELETE FROM early_updates WHERE (channel_id, provider_id) IN"
        " (SELECT value ->> 0, value ->> 1 FROM json_each(?))"
        " RETURNING id, channel_id, provider_id, state, at, error_code, error_message",
        (json.dumps(keys),)).fetchall()
    if rows:
        rows.sort()
        _apply_status_job(conn, [
            StatusUpdate(state=State(r[3]), at=r[4], channel_id=r[1], provider_id=r[2],
                         error_code=r[5], error_message=r[6]) for r in rows], keep_early=False)


def _apply_status_job(conn: sqlite3.Connection, updates: list[StatusUpdate],
                      keep_early: bool = True) -> int:
    # Parts of multi-part sends first: their updates become their message's.
    part_keys = {(u.channel_id, u.provider_id) for u in updates
                 if u.message_id is None and u.provider_id is not None}
    ref_of: dict[tuple[int, str], tuple[int, int]] = {}
    part_states: dict[int, dict[int, State]] = {}
    part_events: list[Any] = []
    if part_keys and conn.execute("SELECT 1 FROM provider_refs LIMIT 1").fetchone():
        for channel_id, provider_id in part_keys:
            r = conn.execute("SELECT message_id, part FROM provider_refs"
                             " WHERE channel_id = ? AND provider_id = ?",
                             (channel_id, provider_id)).fetchone()
            if r is not None:
                ref_of[(channel_id, provider_id)] = (r[0], r[1])
        if ref_of:
            for mid, part, state in conn.execute(
                    "SELECT message_id, part, state FROM provider_refs"
                    " WHERE message_id IN (SELECT value FROM json_each(?))",
                    (json.dumps(sorted({k[0] for k in ref_of.values()})),)):
                merged = part_states.setdefault(mid, {})
                current = merged.get(part)
                if current is None or advances(current, State(state)):
                    merged[part] = State(state)
            updates, part_changes, part_events = resolve_part_updates(
                updates, ref_of, part_states)
            conn.executemany(
                "UPDATE provider_refs SET state = ? WHERE message_id = ? AND part = ?",
                [(state.value, mid, part) for mid, part, state in part_changes])
    by_id = [u.message_id for u in updates if u.message_id is not None]
    by_provider = [(u.channel_id, u.provider_id) for u in updates
                   if u.message_id is None and u.provider_id is not None]
    rows: dict[int, list[Any]] = {}
    provider_map: dict[tuple[int | None, str], int] = {}
    if by_id:
        for r in conn.execute(
                "SELECT id, project_id, state, channel_id, provider_id, credit_micro FROM messages"
                " WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(by_id),)):
            rows[r[0]] = list(r)
    early = []
    for channel_id, provider_id in by_provider:
        r = conn.execute(
            "SELECT id, project_id, state, channel_id, provider_id, credit_micro FROM messages"
            " WHERE channel_id = ? AND provider_id = ?", (channel_id, provider_id)).fetchone()
        if r is not None:
            rows[r[0]] = list(r)
            provider_map[(channel_id, provider_id)] = r[0]
        elif channel_id is not None:
            early.append((channel_id, provider_id))
    if early and keep_early:
        # A receipt that overtook its send's outcome: kept until the id is recorded.
        wanted = set(early)
        conn.executemany(
            "INSERT INTO early_updates (channel_id, provider_id, state, at, error_code,"
            " error_message, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(u.channel_id, u.provider_id, u.state.value, u.at, u.error_code, u.error_message,
              _now()) for u in updates
             if u.message_id is None and (u.channel_id, u.provider_id) in wanted])
    hooks = _webhook_projects(conn)
    states = {mid: State(row[2]) for mid, row in rows.items()}
    moves, events = walk_status_updates(
        updates, states, lambda u: u.message_id if u.message_id is not None
        else provider_map.get((u.channel_id, u.provider_id or "")))
    events = part_events + events
    changes, outbox = [], []
    refunds: dict[int, int] = defaultdict(int)
    for mid, u in moves:
        # A failure keeps the error it was reported with if it brings none (refunded after
        # failed); a message moving on (delivered, read) sheds an earlier attempt's error.
        keep = u.state in ERROR_STATES
        changes.append((u.state.value, u.error_code, keep, u.error_message, keep, u.at, mid))
        project_id = rows[mid][1]
        if u.state is State.REFUNDED:
            refunds[project_id] += rows[mid][5]
        if project_id in hooks:
            outbox.append((project_id, mid, u.state.value, u.at, u.error_code, u.error_message,
                           u.at))
    _refund(conn, refunds, _now(), "refund: provider reported failure")
    conn.executemany(
        "UPDATE messages SET state = ?, error_code = coalesce(?, CASE WHEN ? THEN error_code"
        " END), error_message = coalesce(?, CASE WHEN ? THEN error_message END),"
        " updated_at = ?, lease_until = NULL, leased_by = NULL WHERE id = ?", changes)
    conn.executemany(
        "INSERT INTO message_events (message_id, state, at, detail) VALUES (?, ?, ?, ?)", events)
    _add_outbox(conn, outbox)
    return len(moves)


def _expire_job(conn: sqlite3.Connection, now: float, limit: int) -> int:
    conn.execute("DELETE FROM early_updates WHERE received_at < ?", (now - EARLY_UPDATE_TTL,))
    # Push by push (migration 0007): a due push's messages past their validity expire, queued
    # ones and those whose lease ran out (never sent again); once none of its messages is
    # live the push is done, else (some are still being sent, and may come back queued) it is
    # looked at again EXPIRY_RECHECK_SECONDS later.
    rows: list[Any] = []
    due = conn.execute("SELECT id FROM pushes WHERE expiry_due IS NOT NULL AND expiry_due < ?"
                       " ORDER BY expiry_due LIMIT ?", (now, limit)).fetchall()
    for (push_id,) in due:
        left = limit - len(rows)
        expired = conn.execute(
            "UPDATE messages SET state = 'expired', updated_at = ?, error_message ="
            " CASE state WHEN 'queued' THEN 'validity period ended' ELSE ? END"
            " WHERE id IN (SELECT id FROM messages WHERE push_id = ? AND expires_at < ?"
            " AND (state = 'queued' OR (state = 'sending' AND lease_until < ?)) LIMIT ?)"
            " RETURNING id, project_id, credit_micro, error_message",
            (now, EXPIRED_UNCONFIRMED, push_id, now, now, left)).fetchall()
        rows += expired
        if len(expired) == left:
            break   # the limit: the rest of this push next time
        conn.execute(
            "UPDATE pushes SET expiry_due = (SELECT max(min(expires_at), ?) FROM messages"
            f" WHERE push_id = ? AND {_LIVE}) WHERE id = ?",
            (now + EXPIRY_RECHECK_SECONDS, push_id, push_id))
    if not rows:
        return 0
    hooks = _webhook_projects(conn)
    refunds: dict[int, int] = defaultdict(int)
    for _mid, project_id, credit, _why in rows:
        refunds[project_id] += credit
    conn.executemany(
        "INSERT INTO message_events (message_id, state, at, detail) VALUES (?, 'expired', ?, ?)",
        [(r[0], now, f"{r[3]}; credit returned") for r in rows])
    _refund(conn, refunds, now, "refund: expired")
    _add_outbox(conn, [(r[1], r[0], "expired", now, None, r[3], now)
                       for r in rows if r[1] in hooks])
    return len(rows)


def _claim_outbox_job(
    conn: sqlite3.Connection, limit: int, now: float, lease_seconds: float
) -> list[OutboxBatch]:
    # Pushing next_attempt_at past the lease is the lease: a crashed deliverer's items come
    # back when it passes, and a successful one deletes them.
    ids = [r[0] for r in conn.execute(
        "UPDATE outbox SET next_attempt_at = ? WHERE id IN (SELECT id FROM outbox"
        " WHERE NOT dead AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?)"
        " RETURNING id", (now + lease_seconds, now, limit)).fetchall()]
    if not ids:
        return []
    rows = conn.execute(
        "SELECT o.id, o.project_id, o.attempts, o.state, o.at, o.error_code, o.error_message,"
        " m.push_id, m.id, m.number, m.reference, m.body, m.media, m.media_kind,"
        " m.channel_id, p.webhook_url, p.webhook_secret FROM outbox o"
        " JOIN messages m ON m.id = o.message_id JOIN projects p ON p.id = o.project_id"
        " WHERE o.id IN (SELECT value FROM json_each(?)) ORDER BY o.id",
        (json.dumps(ids),)).fetchall()
    batches: dict[int, OutboxBatch] = {}
    orphaned = []
    for r in rows:
        url = r[15]
        if not url:
            orphaned.append(r[0])   # the project removed its webhook since
            continue
        batch = batches.get(r[1])
        if batch is None:
            batch = batches[r[1]] = OutboxBatch(project_id=r[1], url=url, secret=r[16] or "")
        batch.items.append(OutboxItem(id=r[0], project_id=r[1], attempts=r[2],
                                      payload=report_payload(r)))
    if orphaned:
        conn.execute("DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?))",
                     (json.dumps(orphaned),))
    return list(batches.values())


# --- devices ------------------------------------------------------------------------------------
_DEVICE_MESSAGE_RETURNING = "id, number, body, priority, created_at, expires_at, attempts"


def _device_from_row(row: Sequence[Any], in_flight: int = 0) -> Device:
    return Device(id=row[0], channel_id=row[1], project_id=row[2], name=row[3],
                  created_at=row[4], last_seen_at=row[5], revoked_at=row[6], push_token=row[7],
                  user_agent=row[8] or "", health=json.loads(row[9] or "{}") or None,
                  ready_at=row[10], paused_until=row[11], reconnect_at=row[12],
                  in_flight=in_flight)


def _window_free_at(conn: sqlite3.Connection, device_id: str, quota: DeviceQuota,
                    handed: list[int], now: float) -> float:
    """When every full limit window has room again (``now`` if none is full)."""
    free_at = now
    for (seconds, limit), count in zip(quota.windows(), handed, strict=True):
        if count >= limit:
            row = conn.execute(
                "SELECT handed_at FROM device_messages WHERE device_id = ? AND handed_at >= ?"
                " ORDER BY handed_at LIMIT 1 OFFSET ?",
                (device_id, now - seconds, count - limit)).fetchone()
            if row is not None:
                free_at = max(free_at, row[0] + seconds)
    return free_at


def _claim_for_device_job(
    conn: sqlite3.Connection, device_id: str, quota: DeviceQuota, now: float
) -> DeviceClaim:
    device = conn.execute(
        "SELECT channel_id, revoked_at, ready_at, paused_until FROM devices WHERE id = ?",
        (device_id,)).fetchone()
    if device is None or device[1] is not None:
        return DeviceClaim([], 0, now)
    channel_id, _revoked, ready_at, paused_until = device
    worker = device_worker(device_id)
    conn.execute("UPDATE devices SET last_seen_at = ? WHERE id = ?", (now, device_id))
    conn.execute("DELETE FROM device_messages WHERE device_id = ? AND handed_at < ?",
                 (device_id, now - DEVICE_HISTORY_SECONDS))
    # Handed out before and not acknowledged: the app may have missed the answer.
    pending = [DeviceMessage(*r[:6]) for r in conn.execute(
        "SELECT m.id, m.number, m.body, m.priority, m.created_at, m.expires_at"
        " FROM device_messages h JOIN messages m ON m.id = h.message_id"
        " WHERE h.device_id = ? AND h.reported_state IS NULL AND m.state = 'sending'"
        " AND m.leased_by = ? AND m.lease_until >= ?", (device_id, worker, now)).fetchall()]
    claim = DeviceClaim(pending, 0, max(ready_at, paused_until))
    stopped = conn.execute("SELECT paused FROM channels WHERE id = ?", (channel_id,)).fetchone()
    if stopped is None or stopped[0] or now < claim.ready_at:
        return _sorted_claim(claim)
    in_flight = conn.execute(
        f"SELECT count(*) FROM messages WHERE channel_id = ? AND state = 'sending' AND {_LIVE}"
        " AND leased_by = ? AND lease_until >= ?", (channel_id, worker, now)).fetchone()[0]
    handed = [conn.execute(
        "SELECT count(*) FROM device_messages WHERE device_id = ? AND handed_at >= ?",
        (device_id, now - seconds)).fetchone()[0] for seconds, _limit in quota.windows()]
    allowance = quota.allowance(in_flight, handed)
    if allowance == 0:
        claim.ready_at = _window_free_at(conn, device_id, quota, handed, now)
        conn.execute("UPDATE devices SET ready_at = ? WHERE id = ?", (claim.ready_at, device_id))
        return _sorted_claim(claim)

    until = now + quota.lease_seconds
    # A lease that ran out (its phone went silent) is handed on before anything new; past
    # its validity it is left to the sweep, which expires it: a phone never gets a stale one.
    expired = _reclaim_expired(conn, channel_id, worker, now, until, allowance,
                               _DEVICE_MESSAGE_RETURNING)
    fresh: list[Any] = []
    if len(expired) < allowance:
        # A recipient another online phone wrote to lately waits a while for that phone, so
        # one person keeps hearing from one number.
        fresh = conn.execute(
            "UPDATE messages SET state = 'sending', lease_until = ?, leased_by = ?,"
            " attempts = attempts + 1, updated_at = ? WHERE id IN (SELECT m.id FROM messages m"
            f" WHERE m.channel_id = ? AND m.state = 'queued' AND m.{_LIVE}"
            " AND m.next_attempt_at <= ?"
            " AND (m.expires_at IS NULL OR m.expires_at >= ?)"
            " AND NOT (m.created_at > ? AND EXISTS (SELECT 1 FROM device_recipients r"
            " JOIN devices d ON d.id = r.device_id WHERE r.channel_id = m.channel_id"
            " AND r.number = m.number AND r.device_id <> ? AND d.revoked_at IS NULL"
            " AND d.last_seen_at >= ? AND d.paused_until <= ?))"
            f" ORDER BY m.priority DESC, m.id LIMIT ?) RETURNING {_DEVICE_MESSAGE_RETURNING}",
            (until, worker, now, channel_id, now, now, now - quota.sticky_seconds, device_id,
             now - quota.offline_after, now, allowance - len(expired))).fetchall()
    rows = [(r, True) for r in expired] + [(r, False) for r in fresh]
    conn.executemany(
        "INSERT INTO message_events (message_id, state, at, detail) VALUES (?, 'sending', ?, ?)",
        [(r[0], now, f"device {device_id}, attempt {r[6]}"
          + (": possible re-send, previous lease expired" if resend else ""))
         for r, resend in rows])
    conn.executemany(
        "INSERT INTO device_messages (message_id, device_id, channel_id, handed_at)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (message_id, device_id) DO UPDATE SET"
        " handed_at = excluded.handed_at, reported_state = NULL, reported_at = NULL",
        [(r[0], device_id, channel_id, now) for r, _resend in rows])
    conn.executemany(
        "INSERT INTO device_recipients (channel_id, number, device_id, at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (channel_id, number) DO UPDATE SET device_id = excluded.device_id,"
        " at = excluded.at", [(channel_id, r[1], device_id, now) for r, _resend in rows])
    if rows:
        claim.ready_at = now + sum(quota.delays[:len(rows)])
        conn.execute("UPDATE devices SET ready_at = ? WHERE id = ?", (claim.ready_at, device_id))
    claim.new = len(rows)
    claim.messages += [DeviceMessage(*r[:6], possible_resend=resend) for r, resend in rows]
    return _sorted_claim(claim)


def _sorted_claim(claim: DeviceClaim) -> DeviceClaim:
    claim.messages.sort(key=lambda m: (-m.priority, m.id))
    return claim


def _note_device_reports_job(
    conn: sqlite3.Connection,
    device_id: str,
    reports: list[tuple[int, str, float]],
    now: float,
    lease_seconds: float,
) -> dict[int, ReportedMessage]:
    worker = device_worker(device_id)
    known = {r[0]: ReportedMessage(r[1], r[1] == "sending" and r[2] == worker)
             for r in conn.execute(
                 "SELECT m.id, m.state, m.leased_by FROM device_messages h"
                 " JOIN messages m ON m.id = h.message_id WHERE h.device_id = ?"
                 " AND h.message_id IN (SELECT value FROM json_each(?))",
                 (device_id, json.dumps(sorted({r[0] for r in reports})))).fetchall()}
    conn.executemany(
        "UPDATE device_messages SET reported_state = ?, reported_at = ?"
        " WHERE message_id = ? AND device_id = ?",
        [(state, at, mid, device_id) for mid, state, at in reports if mid in known])
    # The phone has it queued: it keeps the message while it waits out its own delays.
    conn.executemany(
        "UPDATE messages SET lease_until = max(lease_until, ?) WHERE id = ?"
        " AND state = 'sending' AND leased_by = ?",
        [(now + lease_seconds, mid, worker) for mid, state, _at in reports
         if state in ("Pending", "Processed") and mid in known and known[mid].held])
    conn.execute("UPDATE devices SET last_seen_at = max(coalesce(last_seen_at, 0), ?)"
                 " WHERE id = ?", (now, device_id))
    return known


def _cancel_queue_job(
    conn: sqlite3.Connection, channel_id: int, now: float, reason: str, include_in_flight: bool
) -> tuple[int, int]:
    states = ("queued", "sending") if include_in_flight else ("queued",)
    rows = conn.execute(
        "UPDATE messages SET state = 'cancelled', error_message = ?, lease_until = NULL,"
        f" leased_by = NULL, updated_at = ? WHERE channel_id = ? AND {_LIVE}"
        " AND state IN (SELECT value FROM json_each(?)) RETURNING id, project_id, credit_micro",
        (reason, now, channel_id, json.dumps(states))).fetchall()
    if not rows:
        return 0, 0
    rows.sort()
    hooks = _webhook_projects(conn)
    refunds: dict[int, int] = defaultdict(int)
    for _mid, project_id, credit in rows:
        refunds[project_id] += credit
    conn.executemany(
        "INSERT INTO message_events (message_id, state, at, detail) VALUES (?, 'cancelled', ?, ?)",
        [(mid, now, f"{reason}; {credit} micro-credits returned") for mid, _p, credit in rows])
    _refund(conn, refunds, now, f"refund: {reason}")
    _add_outbox(conn, [(project_id, mid, "cancelled", now, None, reason, now)
                       for mid, project_id, _credit in rows if project_id in hooks])
    return len(rows), sum(refunds.values())


def _inbound_part(row: Sequence[Any]) -> InboundPart:
    return InboundPart(row[0], row[1], row[2], row[3], row[4], row[5], row[6], bytes(row[7]),
                       row[8])
