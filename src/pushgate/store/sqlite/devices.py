"""Phones of pull channels in SQLite: pairing, liveness, and claims within each phone's quota
(rolling limits, in-flight cap, sticky recipients).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from pushgate.core.devices import (
    DEVICE_HISTORY_SECONDS,
    Device,
    DeviceClaim,
    DeviceMessage,
    DeviceQuota,
    HandedMessage,
    Handout,
    ReportedMessage,
    claim_start,
    device_worker,
    full_windows,
    leases_to_renew,
    plan_handout,
    ready_when_windows_free,
    sorted_claim,
)
from pushgate.store.rows import DEVICE_COLUMNS, device_from_row
from pushgate.store.sqlite.common import _LIVE, _now
from pushgate.store.sqlite.connection import SQLiteBase
from pushgate.store.sqlite.queue import _reclaim_expired

# --- devices ------------------------------------------------------------------------------------
_DEVICE_MESSAGE_RETURNING = "id, number, body, priority, created_at, expires_at, attempts"


class SQLiteDevices(SQLiteBase):
    """Devices of pull channels."""

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
        return device_from_row(row) if row else None

    async def get_device(self, device_id: str) -> Device | None:
        row = self._read().execute(
            f"SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?", (device_id,)).fetchone()
        return device_from_row(row) if row else None

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
        return [device_from_row(r, held.get(device_worker(r[0]), 0)) for r in rows]

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
    stopped = conn.execute("SELECT paused FROM channels WHERE id = ?", (channel_id,)).fetchone()
    claim, open_now = claim_start(pending, ready_at, paused_until,
                                  None if stopped is None else bool(stopped[0]), now)
    if not open_now:
        return sorted_claim(claim)
    in_flight = conn.execute(
        f"SELECT count(*) FROM messages WHERE channel_id = ? AND state = 'sending' AND {_LIVE}"
        " AND leased_by = ? AND lease_until >= ?", (channel_id, worker, now)).fetchone()[0]
    handed = [conn.execute(
        "SELECT count(*) FROM device_messages WHERE device_id = ? AND handed_at >= ?",
        (device_id, now - seconds)).fetchone()[0] for seconds, _limit in quota.windows()]
    allowance = quota.allowance(in_flight, handed)
    if allowance == 0:
        claim.ready_at = ready_when_windows_free(now, [(seconds, _nth_handout(
            conn, device_id, now - seconds, offset)) for seconds, offset in full_windows(
            quota, handed)])
        conn.execute("UPDATE devices SET ready_at = ? WHERE id = ?", (claim.ready_at, device_id))
        return sorted_claim(claim)
    taken = _take_for_device(conn, channel_id, device_id, quota, now, allowance)
    plan = plan_handout(device_id, quota, now, claim, taken)
    _record_handout(conn, channel_id, device_id, now, plan)
    return plan.claim


def _nth_handout(conn: sqlite3.Connection, device_id: str, since: float,
                 offset: int) -> float | None:
    row = conn.execute(
        "SELECT handed_at FROM device_messages WHERE device_id = ? AND handed_at >= ?"
        " ORDER BY handed_at LIMIT 1 OFFSET ?", (device_id, since, offset)).fetchone()
    return None if row is None else float(row[0])


def _take_for_device(conn: sqlite3.Connection, channel_id: int, device_id: str,
                     quota: DeviceQuota, now: float, allowance: int) -> list[HandedMessage]:
    """Lease up to ``allowance`` messages to the device."""
    worker = device_worker(device_id)
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
    return [HandedMessage(DeviceMessage(r[0], r[1], r[2], r[3], r[4], r[5],
                                                possible_resend=resend), r[6])
            for rows, resend in ((expired, True), (fresh, False)) for r in rows]


def _record_handout(conn: sqlite3.Connection, channel_id: int, device_id: str, now: float,
                    plan: Handout) -> None:
    conn.executemany(
        "INSERT INTO message_events (message_id, state, at, detail) VALUES (?, 'sending', ?, ?)",
        [(mid, now, detail) for mid, detail in plan.events])
    conn.executemany(
        "INSERT INTO device_messages (message_id, device_id, channel_id, handed_at)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (message_id, device_id) DO UPDATE SET"
        " handed_at = excluded.handed_at, reported_state = NULL, reported_at = NULL",
        [(mid, device_id, channel_id, now) for mid in plan.message_ids])
    conn.executemany(
        "INSERT INTO device_recipients (channel_id, number, device_id, at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (channel_id, number) DO UPDATE SET device_id = excluded.device_id,"
        " at = excluded.at", [(channel_id, number, device_id, now) for number in plan.numbers])
    if plan.ready_at is not None:
        conn.execute("UPDATE devices SET ready_at = ? WHERE id = ?", (plan.ready_at, device_id))


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
        [(now + lease_seconds, mid, worker) for mid in leases_to_renew(reports, known)])
    conn.execute("UPDATE devices SET last_seen_at = max(coalesce(last_seen_at, 0), ?)"
                 " WHERE id = ?", (now, device_id))
    return known
