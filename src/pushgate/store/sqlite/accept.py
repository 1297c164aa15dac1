"""The accept path in SQLite: a push, its inline media and its messages in one writer job,
the balance debited in the same transaction.
"""

from __future__ import annotations

import functools
import itertools
import json
import sqlite3
from collections.abc import Callable
from typing import Any

from pushgate.core.channels import ChannelSpec
from pushgate.core.models import AcceptResult
from pushgate.core.optouts import numbers_left_out, without_opted_out
from pushgate.core.push import ROW_NUMBER, PushPlan
from pushgate.store.errors import AllOptedOut, IdempotencyKeyReused, InsufficientCredit
from pushgate.store.sqlite.connection import SQLiteBase, grouped_by, replayable

#: Rows per INSERT statement: a push is cut greedily into these sizes, so every push size is
#: made of the same six prepared statements (preparing one of a new size costs as much again
#: as running it, and real pushes vary in size), and a large push goes 2,000 rows a
#: statement (fewer GIL round trips for the writer; docs/benchmarks.md lists the lever).
#: 2,000 rows bind 18,008 parameters, under SQLite's default limit of
#: 32,766 (since 3.32).
_INSERT_SIZES = (2000, 500, 100, 20, 5, 1)
_INSERT_MESSAGE_WIDTH = 8   # parameters per row; the push-wide ones come first, once


class SQLiteAccept(SQLiteBase):
    """Accepting pushes."""

    async def accept_push(
        self,
        project_id: int,
        channel: ChannelSpec,
        plan: PushPlan,
        now: float,
        expires_at: float | None,
        send_at: float | None = None,
        idempotency_key: str | None = None,
        idempotency_digest: str | None = None,
    ) -> AcceptResult:
        rows = _message_rows(plan)
        if idempotency_key is not None:
            return await self._write(_keyed_job, project_id, channel, plan, rows, now,
                                     expires_at, send_at, idempotency_key, idempotency_digest)
        push_id, first_id, balance, opted = await self._write(
            _accept_job, project_id, channel, plan, rows, now, expires_at, send_at)
        accepted = len(plan.accepted) - _dropped(plan, opted)
        return AcceptResult(push_id=push_id, balance_micro=balance, opted_out=opted,
                            message_ids=list(range(first_id, first_id + accepted)))


    async def accept_reply(
        self,
        project_id: int,
        channel: ChannelSpec,
        plan: PushPlan,
        number: str,
        now: float,
        expires_at: float | None,
        not_since: float,
        confirmation: bool = False,
    ) -> AcceptResult | None:
        rows = _message_rows(plan)
        accepted = await self._write(_reply_job, project_id, channel, plan, rows, number, now,
                                     expires_at, not_since, confirmation)
        if accepted is None:
            return None
        push_id, first_id, balance, opted = accepted
        count = len(plan.accepted) - _dropped(plan, opted)
        return AcceptResult(push_id=push_id, balance_micro=balance, opted_out=opted,
                            message_ids=list(range(first_id, first_id + count)))


def _dropped(plan: PushPlan, opted: frozenset[str]) -> int:
    """How many accepted rows of ``plan`` go to ``opted``."""
    return sum(row[ROW_NUMBER] in opted for row in plan.accepted) if opted else 0


def opted_out_among(conn: sqlite3.Connection, project_id: int,
                    numbers: list[str]) -> frozenset[str]:
    """Which of ``numbers`` the project has opted out: nothing asked beyond one probe of the
    index when the project has no opt-out at all, else one query walking the push's numbers
    (one JSON text, however many) and seeking each in the ``(project_id, number)`` key.
    CROSS JOIN keeps that order: a list of 10,000 numbers bound one parameter each, or the
    planner's ``IN``, costs two to three times as much (docs/benchmarks.md)."""
    if not numbers or not _has_optouts(conn, project_id):
        return frozenset()
    return frozenset(r[0] for r in conn.execute(
        "SELECT o.number FROM json_each(?1) j CROSS JOIN optouts o"
        " WHERE o.project_id = ?2 AND o.number = j.value", (json.dumps(numbers), project_id)))


def _has_optouts(conn: sqlite3.Connection, project_id: int) -> bool:
    return conn.execute("SELECT 1 FROM optouts WHERE project_id = ? LIMIT 1",
                        (project_id,)).fetchone() is not None


#: Charges a project when its balance covers the amount: no row when it does not.
_DEBIT_SQL = ("UPDATE projects SET balance_micro = balance_micro - ?1 WHERE id = ?2"
              " AND balance_micro >= ?1 RETURNING balance_micro")


@replayable
def _reply_job(
    conn: sqlite3.Connection,
    project_id: int,
    channel: ChannelSpec,
    plan: PushPlan,
    rows: list[Any],
    number: str,
    now: float,
    expires_at: float | None,
    not_since: float,
    confirmation: bool,
) -> tuple[int, int, int, frozenset[str]] | None:
    """The loop guard's note, then ``_accept_job``; None when the guard holds. Both in the
    job's savepoint: an ``InsufficientCredit`` takes the note back with it. A
    ``confirmation`` (the answer to the STOP keyword the user just wrote) is the one message
    an opted-out number may get."""
    if conn.execute(_GUARD_SQL, (channel.id, number, now, not_since)).fetchone() is None:
        return None
    return _accept_job(conn, project_id, channel, plan, rows, now, expires_at, None,
                       check_optouts=not confirmation)


@replayable
def _keyed_job(
    conn: sqlite3.Connection,
    project_id: int,
    channel: ChannelSpec,
    plan: PushPlan,
    rows: list[Any],
    now: float,
    expires_at: float | None,
    send_at: float | None,
    key: str,
    digest: str | None,
) -> AcceptResult:
    """``_accept_job`` under an idempotency key: the push accepted under it before, read
    back, or a new one recorded with the key (the single writer makes the two one step)."""
    known = conn.execute("SELECT push_id, digest FROM idempotency_keys"
                         " WHERE project_id = ? AND key = ?", (project_id, key)).fetchone()
    if known is not None:
        push_id = int(known[0])
        if known[1] is not None and digest is not None and known[1] != digest:
            raise IdempotencyKeyReused(push_id)
        sent = conn.execute("SELECT id, number FROM messages WHERE push_id = ? ORDER BY id",
                            (push_id,)).fetchall()
        balance = conn.execute("SELECT balance_micro FROM projects WHERE id = ?",
                               (project_id,)).fetchone()
        return AcceptResult(push_id=push_id, message_ids=[int(r[0]) for r in sent],
                            balance_micro=int(balance[0]) if balance else 0, replayed=True,
                            opted_out=numbers_left_out(plan, (r[1] for r in sent)))
    push_id, first_id, balance_after, opted = _accept_job(conn, project_id, channel, plan, rows,
                                                          now, expires_at, send_at)
    conn.execute("INSERT INTO idempotency_keys (project_id, key, push_id, created_at, digest)"
                 " VALUES (?, ?, ?, ?, ?)", (project_id, key, push_id, now, digest))
    accepted = len(plan.accepted) - _dropped(plan, opted)
    return AcceptResult(push_id=push_id, balance_micro=balance_after, opted_out=opted,
                        message_ids=list(range(first_id, first_id + accepted)))


# Inserts the note, or moves it forward only when the last reply is old enough; RETURNING
# gives no row when the conflict's WHERE refused the update.
_GUARD_SQL = ("INSERT INTO instant_replies (channel_id, number, replied_at) VALUES (?1, ?2, ?3)"
              " ON CONFLICT (channel_id, number) DO UPDATE SET replied_at = excluded.replied_at"
              " WHERE instant_replies.replied_at <= ?4 RETURNING 1")


def _message_rows(plan: PushPlan) -> list[Any]:
    """The accepted rows as ``_insert_messages_sql`` binds them, flat: the plan's columns
    after each row's entry index. Built on the caller's thread: the writer thread is the
    accept path's bottleneck for large pushes, and every message built there is time taken
    from it."""
    flat = list(itertools.chain.from_iterable(plan.accepted))
    del flat[::_INSERT_MESSAGE_WIDTH + 1]   # the entry indexes (C-level, unlike a comprehension)
    return flat


@functools.lru_cache(maxsize=16)
def _insert_messages_sql(rows: int, state: str = "queued") -> str:
    # ?1..?7 are the same for every row of a push (push_id, project_id, channel_id, priority,
    # now, expires_at, inline media id) and are bound once per statement; the
    # anonymous ? of the VALUES rows are numbered from 8 on (SQLite numbers a bare ? one past
    # the largest so far). Binding runs under the GIL on the writer thread, so fewer
    # parameters per row means more rows per second (bench/store_driver.py;
    # docs/benchmarks.md).
    one = "(?, ?, ?, ?, ?, ?, ?, ?)"
    # A row without a media URL sends the push's inline media, if it has one (?7). The id is
    # left to SQLite: messages.id is the rowid, so each row gets the largest id so far plus
    # one, in the order of the VALUES (what the explicit max(id) + 1 read gave before, one
    # statement less); the caller works the first id out from the last.
    return ("INSERT INTO messages (push_id, project_id, channel_id, number, body, media,"
            " media_id, media_kind, reference, priority, state, parts, segments, credit_micro,"
            " attempts, resends, next_attempt_at, created_at, updated_at, expires_at)"
            " SELECT ?1, ?2, ?3, column1, column2, column3,"
            " CASE WHEN column3 IS NULL THEN ?7 END, column4, column5, ?4,"
            f" '{state}', column6, column7, column8, 0, 0, ?5, ?5, ?5, ?6 FROM (VALUES "
            + ", ".join([one] * rows) + ")")


@replayable
def _accept_job(
    conn: sqlite3.Connection,
    project_id: int,
    channel: ChannelSpec,
    plan: PushPlan,
    rows: list[Any],
    now: float,
    expires_at: float | None,
    send_at: float | None = None,
    check_optouts: bool = True,
) -> tuple[int, int, int, frozenset[str]]:
    """Refuse the entries to opted-out numbers in place, charge, record the push and insert
    its messages: (push id, first message id, balance after, the opted-out numbers).
    ``rows`` is ``_message_rows(plan)``; ``AllOptedOut`` when nothing is left; with
    ``send_at``, the messages wait ``scheduled`` (``promote_due``)."""
    opted = (opted_out_among(conn, project_id, [row[ROW_NUMBER] for row in plan.accepted])
             if check_optouts else frozenset())
    if opted:
        plan = without_opted_out(plan, opted)
        if not plan.accepted:
            raise AllOptedOut(opted)
        rows = _message_rows(plan)
    total = plan.credit_total
    row = conn.execute(_DEBIT_SQL, (total, project_id)).fetchone()
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
    state = "queued"
    if send_at is not None:
        # Its own statement: the unscheduled push's INSERT stays as it was.
        conn.execute("UPDATE pushes SET send_at = ?1, schedule_due = ?1 WHERE id = ?2",
                     (send_at, push_id))
        state = "scheduled"

    width = _INSERT_MESSAGE_WIDTH
    push_wide = [push_id, project_id, channel.id, plan.priority, now, expires_at, media_id]
    # Multi-row INSERTs rather than executemany of one-row statements: one statement runs
    # per chunk instead of per row (docs/benchmarks.md).
    count = len(plan.accepted)
    last_id = _insert_cut(conn, functools.partial(_insert_messages_sql, state=state), rows,
                          width, _INSERT_SIZES, push_wide)
    # Ids are handed out under the write lock, consecutive within the push (one writer, and
    # each row takes the largest id plus one), so the answer lists them in order without
    # reading them back.
    first_id = last_id - count + 1
    if plan.extras is not None:
        # Only template pushes carry channel data: the plain hot path binds nothing more.
        conn.executemany("UPDATE messages SET extra = ? WHERE id = ?",
                         [(extra, first_id + offset)
                          for offset, extra in enumerate(plan.extras) if extra is not None])
    return push_id, first_id, balance_after, opted


#: Largest push ``_accept_group`` takes together with others: the one-recipient pushes of
#: alerts and codes, many to a writer batch; a larger push is cheap enough a statement alone.
GROUP_MAX_ROWS = 20
#: Rows per statement of a group's INSERTs, cut greedily like ``_INSERT_SIZES``.
_GROUP_SIZES = (64, 16, 4, 1)


class _ShortOfSum(Exception):
    """A project's balance is short of its pushes' sum in a group."""


@grouped_by(_accept_job)
def _accept_group(conn: sqlite3.Connection,
                  jobs: list[tuple[Any, ...]]) -> list[tuple[int, int, int, frozenset[str]]]:
    """Consecutive ``_accept_job`` jobs of a writer batch as a few statements: one balance
    ``UPDATE`` per project for the sum of its pushes, then multi-row INSERTs of the pushes,
    their ledger lines and their messages, in the jobs' order. The rows, ids and balances
    are those the jobs run one after another would write and answer: ids are handed out in
    order (each row takes the largest id plus one), and when a project's balance covers
    the sum it covered each push in turn. A push this does not cover (inline media, a
    schedule, ``check_optouts`` off, extras, more than ``GROUP_MAX_ROWS`` messages), a
    project with opt-outs, or a balance short of a project's sum: the jobs run one by one
    (a short balance then raises, and the batch is replayed job by job in savepoints)."""
    plans: list[PushPlan] = []
    for args in jobs:
        plan = args[2]
        if (len(args) > 7 or (len(args) == 7 and args[6] is not None)
                or plan.inline_media is not None or plan.extras is not None
                or not plan.accepted or len(plan.accepted) > GROUP_MAX_ROWS):
            return [_accept_job(conn, *args) for args in jobs]
        plans.append(plan)
    totals: dict[int, int] = {}
    for args, plan in zip(jobs, plans, strict=True):
        totals[args[0]] = totals.get(args[0], 0) + plan.credit_total
    if any(_has_optouts(conn, project_id) for project_id in totals):
        return [_accept_job(conn, *args) for args in jobs]
    # Each project's balance before the group: its pushes are charged from it in order.
    balance: dict[int, int] = {}
    for project_id, total in totals.items():
        row = conn.execute(_DEBIT_SQL, (total, project_id)).fetchone()
        if row is None:
            raise _ShortOfSum   # the batch is replayed job by job
        balance[project_id] = int(row[0]) + total

    push_rows: list[Any] = []
    for (project_id, channel, _plan, _rows, now, expires_at, *_), plan in zip(
            jobs, plans, strict=True):
        push_rows += (project_id, channel.id, plan.priority, plan.total_entries,
                      len(plan.accepted), plan.credit_total, now, expires_at)
    last_push = _insert_cut(conn, _insert_pushes_sql, push_rows, 8)
    first_push = last_push - len(jobs) + 1

    ledger_rows: list[Any] = []
    message_rows: list[Any] = []
    results: list[tuple[int, int, int, frozenset[str]]] = []
    offset = 0
    for n, ((project_id, channel, _plan, rows, now, expires_at, *_), plan) in enumerate(
            zip(jobs, plans, strict=True)):
        push_id = first_push + n
        total = plan.credit_total
        if total:
            ledger_rows += (project_id, -total, push_id, now)
        balance[project_id] -= total
        head = (push_id, project_id, channel.id, plan.priority, now, expires_at)
        width = _INSERT_MESSAGE_WIDTH
        for start in range(0, len(rows), width):
            message_rows += head
            message_rows += rows[start:start + width]
        results.append((push_id, offset, balance[project_id], frozenset()))
        offset += len(plan.accepted)
    if ledger_rows:
        _insert_cut(conn, _insert_ledger_sql, ledger_rows, 4)
    last_message = _insert_cut(conn, _insert_group_messages_sql, message_rows,
                               len(_GROUP_MESSAGE_COLUMNS))
    first_message = last_message - offset + 1
    return [(push_id, first_message + first, after, opted)
            for push_id, first, after, opted in results]


def _insert_cut(conn: sqlite3.Connection, sql: Callable[[int], str], flat: list[Any],
                width: int, sizes: tuple[int, ...] = _GROUP_SIZES,
                head: list[Any] | None = None) -> int:
    """INSERT the rows of ``flat`` (``width`` values each) in statements of ``sizes`` rows,
    cut greedily (``sql(rows)`` the statement, ``head`` bound first in each); the last
    rowid."""
    count = len(flat) // width
    head = head or []
    start = 0
    last_id = 0
    for size in sizes:
        while count - start >= size:
            last_id = conn.execute(
                sql(size), head + flat[start * width:(start + size) * width]).lastrowid or 0
            start += size
    return last_id


@functools.lru_cache(maxsize=8)
def _insert_pushes_sql(rows: int) -> str:
    return ("INSERT INTO pushes (project_id, channel_id, priority, entries, accepted,"
            " credit_micro, created_at, expiry_due) VALUES "
            + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * rows))


@functools.lru_cache(maxsize=8)
def _insert_ledger_sql(rows: int) -> str:
    return ("INSERT INTO credit_ledger (project_id, delta_micro, reason, push_id, at) VALUES "
            + ", ".join(["(?, ?, 'push', ?, ?)"] * rows))


#: A grouped message row: its push's columns, then ``_message_rows``'s eight.
_GROUP_MESSAGE_COLUMNS = ("push_id", "project_id", "channel_id", "priority", "now",
                          "expires_at", "number", "body", "media", "media_kind", "reference",
                          "parts", "segments", "credit_micro")


@functools.lru_cache(maxsize=8)
def _insert_group_messages_sql(rows: int) -> str:
    # What ``_insert_messages_sql(rows, "queued")`` writes for a push without inline media,
    # the push's columns given per row.
    one = "(" + ", ".join(["?"] * len(_GROUP_MESSAGE_COLUMNS)) + ")"
    return ("INSERT INTO messages (push_id, project_id, channel_id, number, body, media,"
            " media_id, media_kind, reference, priority, state, parts, segments, credit_micro,"
            " attempts, resends, next_attempt_at, created_at, updated_at, expires_at)"
            " SELECT column1, column2, column3, column7, column8, column9, NULL, column10,"
            " column11, column4, 'queued', column12, column13, column14, 0, 0, column5,"
            " column5, column5, column6 FROM (VALUES " + ", ".join([one] * rows) + ")")
