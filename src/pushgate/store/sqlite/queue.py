"""The dispatch queue in SQLite: channel leases, claiming messages (taking back expired
leases), releasing them, pacing counts, and waking dispatchers of other processes.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

from pushgate.core.models import OutboundMessage, Promotion
from pushgate.core.policy import fair_share
from pushgate.store.outage import Backoff, Outage, describe, is_unavailable
from pushgate.store.sqlite.common import _LIVE, _VALID, _now
from pushgate.store.sqlite.connection import SQLiteBase, _connect, log, replayable

#: Seconds between two looks for pushes other processes queued (SQLiteStore.listen).
LISTEN_POLL_SECONDS = 0.02

_CLAIM_RETURNING = "id, push_id, project_id, channel_id, number, body, media, media_kind, " \
    "parts, priority, attempts, extra, media_id"


class SQLiteQueue(SQLiteBase):
    """Channel leases and message claims."""

    async def acquire_channel_leases(self, worker_id: str, now: float, ttl: float,
                                     skip_kinds: Sequence[str] = ()) -> list[int]:
        return await self._write(_acquire_leases_job, worker_id, now, ttl, list(skip_kinds))

    async def release_channel_leases(self, worker_id: str) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM channel_leases WHERE worker_id = ?", (worker_id,))
            conn.execute("DELETE FROM workers WHERE worker_id = ?", (worker_id,))

        await self._write(job)

    async def channel_workers(self, channel_ids: Sequence[int], now: float) -> dict[int, str]:
        rows = self._read().execute(
            "SELECT channel_id, worker_id FROM channel_leases WHERE channel_id IN"
            " (SELECT value FROM json_each(?)) AND lease_until >= ?",
            (json.dumps(list(channel_ids)), now)).fetchall()
        return {int(r[0]): str(r[1]) for r in rows}

    async def claim_messages(
        self, channel_id: int, worker_id: str, limit: int, now: float, lease_seconds: float,
        min_priority: int = 0, reclaim: bool = True,
    ) -> list[OutboundMessage]:
        expired, fresh = await self._write(_claim_job, channel_id, worker_id, limit, now,
                                           lease_seconds, min_priority, reclaim)
        return _outbound_messages(expired, fresh)

    async def promote_due(self, now: float, limit: int) -> Promotion:
        # Nothing due, the common case: one read of the index's first entry, no write job.
        due = self._read().execute(_NEXT_DUE_SQL).fetchone()[0]
        if due is None or due > now:
            return Promotion(0, frozenset(), due)
        return await self._write(_promote_job, now, limit)

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

    async def queue_depths(self) -> dict[tuple[int, int], int]:
        # The live-state term as written in the claim index's predicate, so SQLite counts
        # over that index alone (channel, state, priority) rather than the table.
        rows = self._read().execute(
            "SELECT channel_id, priority, count(*) FROM messages WHERE state = 'queued'"
            f" AND {_LIVE} GROUP BY channel_id, priority").fetchall()
        return {(r[0], r[1]): r[2] for r in rows}

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


@replayable
def _claim_job(
    conn: sqlite3.Connection,
    channel_id: int,
    worker_id: str,
    limit: int,
    now: float,
    lease_seconds: float,
    min_priority: int = 0,
    reclaim: bool = True,
) -> tuple[list[Any], list[Any]]:
    """Claim up to ``limit`` of the channel's due messages: (re-claimed, fresh) rows, each
    ``_CLAIM_RETURNING`` (fresh ones with ``claims`` after it). Expired leases are looked
    for only with ``reclaim``."""
    until = now + lease_seconds
    expired = (_reclaim_expired(conn, channel_id, worker_id, now, until, limit,
                                _CLAIM_RETURNING, min_priority) if reclaim else [])
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
              for r in fresh if r[13] > 1]
    events += [(r[0], "sending", now,
                f"worker {worker_id}, attempt {r[10]}: possible re-send, previous lease expired")
               for r in expired]
    conn.executemany(
        "INSERT INTO message_events (message_id, state, at, detail) VALUES (?, ?, ?, ?)", events)
    return expired, fresh


def _outbound_messages(expired: list[Any], fresh: list[Any]) -> list[OutboundMessage]:
    """The claimed rows as messages to send, highest priority first. Built on the caller's
    thread, not the writer's: the writer is the dispatch path's busiest thread, and
    building these objects there took a visible share of its time."""
    messages = [
        OutboundMessage(id=r[0], push_id=r[1], project_id=r[2], channel_id=r[3], number=r[4],
                        text=r[5], media_url=r[6], media_kind=r[7], parts=r[8], priority=r[9],
                        attempts=r[10], possible_resend=resend, media_id=r[12],
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


_NEXT_DUE_SQL = "SELECT min(schedule_due) FROM pushes WHERE schedule_due IS NOT NULL"


def _promote_job(conn: sqlite3.Connection, now: float, limit: int) -> Promotion:
    """Scheduled messages of due pushes to the queue: the due pushes through
    ``pushes_schedule``, their waiting messages through ``messages_scheduled`` (migration
    0013), so neither the messages already moved nor those of later pushes are read."""
    moved = 0
    channels: set[int] = set()
    due = conn.execute(
        "SELECT id, channel_id FROM pushes WHERE schedule_due IS NOT NULL AND schedule_due <= ?"
        " ORDER BY schedule_due, id LIMIT ?", (now, limit)).fetchall()
    for push_id, channel_id in due:
        left = limit - moved
        count = conn.execute(
            "UPDATE messages SET state = 'queued', updated_at = ? WHERE id IN (SELECT id"
            " FROM messages WHERE push_id = ? AND state = 'scheduled' ORDER BY id LIMIT ?)",
            (now, push_id, left)).rowcount
        moved += count
        if count:
            channels.add(channel_id)
        if count == left:
            break   # the limit: the rest of this push next time
        conn.execute("UPDATE pushes SET schedule_due = NULL WHERE id = ?", (push_id,))
    next_due = conn.execute(_NEXT_DUE_SQL).fetchone()[0]
    return Promotion(moved, frozenset(channels), next_due)
