"""Phones of pull channels in PostgreSQL: pairing, liveness, and claims within each phone's
quota (rolling limits, in-flight cap, sticky recipients).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg

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
from pushgate.store.postgres.common import _add_events, _columns, _now, _rowcount
from pushgate.store.postgres.connection import PostgresBase
from pushgate.store.rows import DEVICE_COLUMNS, device_from_row


class PostgresDevices(PostgresBase):
    """Devices of pull channels."""

    async def register_device(self, device: Device, token_hash: str) -> None:
        async def job(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "INSERT INTO devices (id, channel_id, project_id, name, token_hash, push_token,"
                " user_agent, health, created_at, last_seen_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                device.id, device.channel_id, device.project_id, device.name, token_hash,
                device.push_token, device.user_agent, json.dumps(device.health or {}),
                device.created_at, device.last_seen_at)

        await self._tx(job)

    async def device_by_token(self, token_hash: str) -> Device | None:
        row = await self._fetchrow(
            f"SELECT {DEVICE_COLUMNS} FROM devices WHERE token_hash = $1", token_hash)
        return device_from_row(row) if row else None

    async def get_device(self, device_id: str) -> Device | None:
        row = await self._fetchrow(f"SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1",
                                   device_id)
        return device_from_row(row) if row else None

    async def list_devices(self, channel_id: int | None = None) -> list[Device]:
        async with self._conn() as conn:
            if channel_id is None:
                rows = await conn.fetch(
                    f"SELECT {DEVICE_COLUMNS} FROM devices ORDER BY created_at, id")
            else:
                rows = await conn.fetch(
                    f"SELECT {DEVICE_COLUMNS} FROM devices WHERE channel_id = $1"
                    " ORDER BY created_at, id", channel_id)
            held = {r[0]: r[1] for r in await conn.fetch(
                "SELECT leased_by, count(*) FROM messages WHERE channel_id = ANY($1::int[])"
                " AND state = 'sending' AND lease_until >= $2 GROUP BY leased_by",
                sorted({r[1] for r in rows}), _now())}
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
        async def job(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "UPDATE devices SET last_seen_at = greatest(coalesce(last_seen_at, 0), $2),"
                " user_agent = coalesce($3, user_agent), push_token = coalesce($4, push_token),"
                " health = CASE WHEN $5::text IS NULL THEN health"
                " ELSE (health::jsonb || $5::jsonb)::text END WHERE id = $1",
                device_id, now, user_agent, push_token, json.dumps(health) if health else None)

        await self._tx(job)

    async def revoke_devices(
        self, now: float, *, device_id: str | None = None, channel_id: int | None = None
    ) -> int:
        if device_id is None and channel_id is None:
            raise ValueError("revoke_devices needs a device_id or a channel_id")

        async def job(conn: asyncpg.Connection) -> int:
            if device_id is not None:
                status = await conn.execute(
                    "UPDATE devices SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                    now, device_id)
            else:
                status = await conn.execute(
                    "UPDATE devices SET revoked_at = $1 WHERE channel_id = $2"
                    " AND revoked_at IS NULL", now, channel_id)
            return _rowcount(status)

        return await self._tx(job)

    async def claim_for_device(
        self, device_id: str, quota: DeviceQuota, now: float
    ) -> DeviceClaim:
        return await self._tx(_claim_for_device, device_id, quota, now)

    async def note_device_reports(
        self,
        device_id: str,
        reports: Sequence[tuple[int, str, float]],
        now: float,
        lease_seconds: float,
    ) -> dict[int, ReportedMessage]:
        return await self._tx(_note_device_reports, device_id, list(reports), now,
                              lease_seconds)

    async def pause_device(self, device_id: str, until: float) -> None:
        async def job(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "UPDATE devices SET paused_until = greatest(paused_until, $2) WHERE id = $1",
                device_id, until)

        await self._tx(job)

    async def request_reconnect(self, channel_id: int, now: float) -> int:
        async def job(conn: asyncpg.Connection) -> int:
            return _rowcount(await conn.execute(
                "UPDATE devices SET reconnect_at = $2 WHERE channel_id = $1"
                " AND revoked_at IS NULL", channel_id, now))

        return await self._tx(job)


# --- devices ------------------------------------------------------------------------------------

async def _claim_for_device(
    conn: asyncpg.Connection, device_id: str, quota: DeviceQuota, now: float
) -> DeviceClaim:
    # The device row lock serialises one device's claims (its limits are counted here).
    device = await conn.fetchrow(
        "SELECT channel_id, revoked_at, ready_at, paused_until FROM devices WHERE id = $1"
        " FOR UPDATE", device_id)
    if device is None or device[1] is not None:
        return DeviceClaim([], 0, now)
    channel_id, _revoked, ready_at, paused_until = device
    worker = device_worker(device_id)
    await conn.execute("UPDATE devices SET last_seen_at = $2 WHERE id = $1", device_id, now)
    await conn.execute("DELETE FROM device_messages WHERE device_id = $1 AND handed_at < $2",
                       device_id, now - DEVICE_HISTORY_SECONDS)
    # Handed out before and not acknowledged: the app may have missed the answer.
    pending = [DeviceMessage(*r) for r in await conn.fetch(
        "SELECT m.id, m.number, m.body, m.priority, m.created_at, m.expires_at"
        " FROM device_messages h JOIN messages m ON m.id = h.message_id"
        " WHERE h.device_id = $1 AND h.reported_state IS NULL AND m.state = 'sending'"
        " AND m.leased_by = $2 AND m.lease_until >= $3", device_id, worker, now)]
    stopped = await conn.fetchval("SELECT paused FROM channels WHERE id = $1", channel_id)
    claim, open_now = claim_start(pending, ready_at, paused_until, stopped, now)
    if not open_now:
        return sorted_claim(claim)
    in_flight = await conn.fetchval(
        "SELECT count(*) FROM messages WHERE channel_id = $1 AND state = 'sending'"
        " AND leased_by = $2 AND lease_until >= $3", channel_id, worker, now)
    handed = [int(await conn.fetchval(
        "SELECT count(*) FROM device_messages WHERE device_id = $1 AND handed_at >= $2",
        device_id, now - seconds)) for seconds, _limit in quota.windows()]
    allowance = quota.allowance(int(in_flight), handed)
    if allowance == 0:
        claim.ready_at = ready_when_windows_free(now, [(seconds, await conn.fetchval(
            "SELECT handed_at FROM device_messages WHERE device_id = $1"
            " AND handed_at >= $2 ORDER BY handed_at LIMIT 1 OFFSET $3",
            device_id, now - seconds, offset)) for seconds, offset in full_windows(
            quota, handed)])
        await conn.execute("UPDATE devices SET ready_at = $2 WHERE id = $1", device_id,
                           claim.ready_at)
        return sorted_claim(claim)
    taken = await _take_for_device(conn, channel_id, device_id, quota, now, allowance)
    plan = plan_handout(device_id, quota, now, claim, taken)
    await _record_handout(conn, channel_id, device_id, now, plan)
    return plan.claim


async def _take_for_device(conn: asyncpg.Connection, channel_id: int, device_id: str,
                           quota: DeviceQuota, now: float,
                           allowance: int) -> list[HandedMessage]:
    """Lease up to ``allowance`` messages to the device."""
    # Leases that ran out first (their phone went silent; possible re-sends), then queued
    # messages, passing over a recipient another online phone wrote to lately, so one person
    # keeps hearing from one number. SKIP LOCKED: another device's claim is never waited for.
    # Neither past its validity: the sweep expires those, a phone never gets a stale one.
    rows = await conn.fetch(
        "WITH expired AS (SELECT id FROM messages WHERE channel_id = $1"
        "  AND state = 'sending' AND lease_until < $2"
        "  AND (expires_at IS NULL OR expires_at >= $2)"
        "  ORDER BY priority DESC, id LIMIT $3 FOR UPDATE SKIP LOCKED),"
        " fresh AS (SELECT m.id FROM messages m WHERE m.channel_id = $1"
        "  AND m.state = 'queued' AND m.next_attempt_at <= $2"
        "  AND (m.expires_at IS NULL OR m.expires_at >= $2)"
        "  AND NOT (m.created_at > $6 AND EXISTS (SELECT 1 FROM device_recipients r"
        "   JOIN devices d ON d.id = r.device_id WHERE r.channel_id = m.channel_id"
        "   AND r.number = m.number AND r.device_id <> $7 AND d.revoked_at IS NULL"
        "   AND d.last_seen_at >= $8 AND d.paused_until <= $2))"
        "  ORDER BY m.priority DESC, m.id"
        "  LIMIT greatest(0, $3 - (SELECT count(*) FROM expired)) FOR UPDATE OF m SKIP LOCKED)"
        " UPDATE messages m SET state = 'sending', lease_until = $4, leased_by = $5,"
        "  attempts = m.attempts + 1,"
        "  resends = m.resends + CASE WHEN c.resend THEN 1 ELSE 0 END, updated_at = $2"
        "  FROM (SELECT id, true AS resend FROM expired"
        "        UNION ALL SELECT id, false FROM fresh) c WHERE m.id = c.id"
        " RETURNING m.id, m.number, m.body, m.priority, m.created_at, m.expires_at,"
        "  m.attempts, c.resend",
        channel_id, now, allowance, now + quota.lease_seconds, device_worker(device_id),
        now - quota.sticky_seconds, device_id, now - quota.offline_after)
    return [HandedMessage(DeviceMessage(r[0], r[1], r[2], r[3], r[4], r[5],
                                                possible_resend=r[7]), r[6]) for r in rows]


async def _record_handout(conn: asyncpg.Connection, channel_id: int, device_id: str,
                          now: float, plan: Handout) -> None:
    if not plan.message_ids:
        return
    await _add_events(conn, [(mid, "sending", now, detail) for mid, detail in plan.events])
    await conn.execute(
        "INSERT INTO device_messages (message_id, device_id, channel_id, handed_at)"
        " SELECT id, $2, $3, $4 FROM unnest($1::bigint[]) AS id"
        " ON CONFLICT (message_id, device_id) DO UPDATE SET"
        " handed_at = excluded.handed_at, reported_state = NULL, reported_at = NULL",
        plan.message_ids, device_id, channel_id, now)
    await conn.execute(
        "INSERT INTO device_recipients (channel_id, number, device_id, at)"
        " SELECT $2, number, $3, $4 FROM unnest($1::text[]) AS number"
        " ON CONFLICT (channel_id, number) DO UPDATE SET device_id = excluded.device_id,"
        " at = excluded.at", plan.numbers, channel_id, device_id, now)
    await conn.execute("UPDATE devices SET ready_at = $2 WHERE id = $1", device_id,
                       plan.ready_at)


async def _note_device_reports(
    conn: asyncpg.Connection,
    device_id: str,
    reports: list[tuple[int, str, float]],
    now: float,
    lease_seconds: float,
) -> dict[int, ReportedMessage]:
    worker = device_worker(device_id)
    last = {mid: (state, at) for mid, state, at in reports}   # the last report per message
    known = {r[0]: ReportedMessage(r[1], r[1] == "sending" and r[2] == worker)
             for r in await conn.fetch(
                 "SELECT m.id, m.state, m.leased_by FROM device_messages h"
                 " JOIN messages m ON m.id = h.message_id WHERE h.device_id = $1"
                 " AND h.message_id = ANY($2::bigint[])", device_id, sorted(last))}
    rows = [(mid, state, at) for mid, (state, at) in sorted(last.items()) if mid in known]
    if rows:
        await conn.execute(
            "UPDATE device_messages h SET reported_state = u.state, reported_at = u.at"
            " FROM unnest($2::bigint[], $3::text[], $4::float8[]) AS u(id, state, at)"
            " WHERE h.message_id = u.id AND h.device_id = $1", device_id, *_columns(rows, 3))
    # The phone has it queued: it keeps the message while it waits out its own delays.
    queued_on_phone = leases_to_renew(reports, known)
    if queued_on_phone:
        await conn.execute(
            "UPDATE messages SET lease_until = greatest(lease_until, $2)"
            " WHERE id = ANY($1::bigint[]) AND state = 'sending' AND leased_by = $3",
            queued_on_phone, now + lease_seconds, worker)
    await conn.execute(
        "UPDATE devices SET last_seen_at = greatest(coalesce(last_seen_at, 0), $2)"
        " WHERE id = $1", device_id, now)
    return known
