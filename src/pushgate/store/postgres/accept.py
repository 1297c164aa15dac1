"""The accept path in PostgreSQL: a push, its inline media and its messages in one
transaction (ids drawn from the sequence in bulk), the conditional debit taken last.
"""

from __future__ import annotations

import asyncpg

from pushgate.core.channels import ChannelSpec
from pushgate.core.models import AcceptResult
from pushgate.core.optouts import numbers_left_out, without_opted_out
from pushgate.core.push import ROW_NUMBER, PushPlan
from pushgate.store.errors import AllOptedOut, IdempotencyKeyReused, InsufficientCredit
from pushgate.store.postgres.connection import PostgresBase
from pushgate.store.postgres.queue import NOTIFY_CHANNEL


class PostgresAccept(PostgresBase):
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
        if idempotency_key is not None:
            return await self._tx(self._keyed, project_id, channel, plan, now, expires_at,
                                  send_at, idempotency_key, idempotency_digest)
        return await self._tx(self._accept, project_id, channel, plan, now, expires_at,
                              send_at)

    async def _keyed(
        self,
        conn: asyncpg.Connection,
        project_id: int,
        channel: ChannelSpec,
        plan: PushPlan,
        now: float,
        expires_at: float | None,
        send_at: float | None,
        key: str,
        digest: str | None,
    ) -> AcceptResult:
        # The key is claimed first: a concurrent accept of the same key waits here for this
        # transaction, then finds the key taken (committed) or free (rolled back).
        claimed = await conn.fetchval(
            "INSERT INTO idempotency_keys (project_id, key, created_at, digest)"
            " VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (project_id, key) DO NOTHING RETURNING 1", project_id, key, now, digest)
        if claimed is None:
            known = await conn.fetchrow(
                "SELECT push_id, digest FROM idempotency_keys WHERE project_id = $1 AND key = $2",
                project_id, key)
            push_id = known[0]
            if known[1] is not None and digest is not None and known[1] != digest:
                raise IdempotencyKeyReused(int(push_id))
            sent = await conn.fetch(
                "SELECT id, number FROM messages WHERE push_id = $1 ORDER BY id", push_id)
            balance = await conn.fetchval(
                "SELECT balance_micro FROM projects WHERE id = $1", project_id)
            return AcceptResult(push_id=int(push_id), message_ids=[int(r[0]) for r in sent],
                                balance_micro=int(balance or 0), replayed=True,
                                opted_out=numbers_left_out(plan, (r[1] for r in sent)))
        result = await self._accept(conn, project_id, channel, plan, now, expires_at, send_at)
        await conn.execute("UPDATE idempotency_keys SET push_id = $3"
                           " WHERE project_id = $1 AND key = $2", project_id, key,
                           result.push_id)
        return result

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
        return await self._tx(self._reply, project_id, channel, plan, number, now, expires_at,
                              not_since, confirmation)

    async def _reply(
        self,
        conn: asyncpg.Connection,
        project_id: int,
        channel: ChannelSpec,
        plan: PushPlan,
        number: str,
        now: float,
        expires_at: float | None,
        not_since: float,
        confirmation: bool,
    ) -> AcceptResult | None:
        # The conflicting row of a concurrent reply is waited for; its WHERE is then judged
        # on the committed note, so only one of two processes passes.
        passed = await conn.fetchval(
            "INSERT INTO instant_replies (channel_id, number, replied_at) VALUES ($1, $2, $3)"
            " ON CONFLICT (channel_id, number) DO UPDATE SET replied_at = EXCLUDED.replied_at"
            " WHERE instant_replies.replied_at <= $4 RETURNING 1",
            channel.id, number, now, not_since)
        if passed is None:
            return None
        # A confirmation (the answer to the STOP the user just wrote) is the one message an
        # opted-out number may get.
        return await self._accept(conn, project_id, channel, plan, now, expires_at,
                                  check_optouts=not confirmation)

    async def _accept(
        self,
        conn: asyncpg.Connection,
        project_id: int,
        channel: ChannelSpec,
        plan: PushPlan,
        now: float,
        expires_at: float | None,
        send_at: float | None = None,
        check_optouts: bool = True,
    ) -> AcceptResult:
        # Refuse early, without a lock, what the balance cannot cover now; the debit below
        # decides under the lock. The same round trip says whether the project has any
        # opt-out, so a project without pays no lookup.
        head = await conn.fetchrow(
            "SELECT balance_micro, EXISTS (SELECT 1 FROM optouts WHERE project_id = $1)"
            " FROM projects WHERE id = $1", project_id)
        opted: frozenset[str] = frozenset()
        if head is not None and head[1] and check_optouts:
            opted = frozenset(await conn.fetchval(
                "SELECT array(SELECT number FROM optouts WHERE project_id = $1"
                " AND number = ANY($2::text[]))", project_id,
                list({row[ROW_NUMBER] for row in plan.accepted})))
            if opted:
                plan = without_opted_out(plan, opted)
                if not plan.accepted:
                    raise AllOptedOut(opted)
        total = plan.credit_total
        balance = None if head is None else head[0]
        if balance is None or balance < total:
            raise InsufficientCredit(total, int(balance or 0))

        media_id = None
        if plan.inline_media is not None:
            media = plan.inline_media
            media_id = await conn.fetchval(
                "INSERT INTO media (project_id, kind, content_type, data, created_at)"
                " VALUES ($1, $2, $3, $4, $5) RETURNING id",
                project_id, str(media.kind), media.content_type, media.data, now)
        row = await conn.fetchrow(
            "WITH p AS (INSERT INTO pushes (project_id, channel_id, priority, entries, accepted,"
            " credit_micro, media_id, created_at, expiry_due)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $10) RETURNING id)"
            " SELECT (SELECT id FROM p),"
            " array(SELECT nextval($9::regclass) FROM generate_series(1, $5))",
            project_id, channel.id, plan.priority, plan.total_entries, len(plan.accepted),
            total, media_id, now, self._message_seq, expires_at)
        push_id = int(row[0])
        # Drawn from the sequence in one statement; sorted, they follow the request's order,
        # which is also the queue's FIFO order within a priority.
        ids = sorted(row[1])
        if send_at is not None:
            # Its own statement: the unscheduled push's INSERT stays as it was.
            await conn.execute("UPDATE pushes SET send_at = $1, schedule_due = $1"
                               " WHERE id = $2", send_at, push_id)
        if ids:
            await _insert_messages(conn, ids, push_id, project_id, channel, plan, now,
                                   expires_at, media_id,
                                   "queued" if send_at is None else "scheduled")
        balance = await _debit(conn, total, project_id, push_id, now, channel.id)
        return AcceptResult(push_id=push_id, message_ids=ids, balance_micro=balance,
                            opted_out=opted)


async def _insert_messages(
    conn: asyncpg.Connection, ids: list[int], push_id: int, project_id: int,
    channel: ChannelSpec, plan: PushPlan, now: float, expires_at: float | None,
    media_id: int | None, state: str = "queued",
) -> None:
    """The plan's accepted rows as ``state`` messages (queued, or scheduled), with ``ids``
    in order."""
    _i, numbers, bodies, medias, kinds, references, parts, segments, credits = zip(
        *plan.accepted, strict=True)
    # A row without a media URL sends the push's inline media, if it has one ($16).
    await conn.execute(
        "INSERT INTO messages (id, push_id, project_id, channel_id, number, body, media,"
        " media_id, media_kind, reference, priority, state, parts, segments,"
        " credit_micro, attempts, resends, next_attempt_at, created_at, updated_at,"
        " expires_at)"
        " SELECT u.id, $10, $11, $12, u.number, u.body, u.media,"
        " CASE WHEN u.media IS NULL THEN $16::bigint END, u.kind, u.reference,"
        " $13, $17, u.parts, u.segments, u.credit, 0, 0, $14, $14, $14, $15"
        " FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],"
        " $6::text[], $7::int[], $8::int[], $9::bigint[])"
        " AS u(id, number, body, media, kind, reference, parts, segments, credit)",
        ids, numbers, bodies, medias, kinds, references, parts, segments, credits,
        push_id, project_id, channel.id, plan.priority, now, expires_at, media_id, state)
    if plan.extras is not None:
        # Only template pushes carry channel data: the plain hot path sends nothing more.
        await conn.execute(
            "UPDATE messages m SET extra = u.extra FROM unnest($1::bigint[],"
            " $2::text[]) AS u(id, extra) WHERE m.id = u.id AND u.extra IS NOT NULL",
            ids, plan.extras)


async def _debit(conn: asyncpg.Connection, total: int, project_id: int, push_id: int,
                 now: float, channel_id: int) -> int:
    """Takes ``total`` from the project's balance and returns what is left;
    ``InsufficientCredit`` when it does not cover it."""
    # The debit last: the project row stays locked only until the commit. The ledger line
    # and the wake-up for dispatchers (delivered at the commit) go in the same statement.
    row = await conn.fetchrow(
        "WITH d AS (UPDATE projects SET balance_micro = balance_micro - $1"
        " WHERE id = $2 AND balance_micro >= $1 RETURNING balance_micro),"
        " l AS (INSERT INTO credit_ledger (project_id, delta_micro, reason, push_id, at)"
        " SELECT $2, -$1, 'push', $3, $4 FROM d WHERE $1 <> 0)"
        " SELECT balance_micro, pg_notify($5, $6) FROM d",
        total, project_id, push_id, now, NOTIFY_CHANNEL, str(channel_id))
    if row is None:
        balance = await conn.fetchval(
            "SELECT balance_micro FROM projects WHERE id = $1", project_id)
        raise InsufficientCredit(total, int(balance or 0))
    return int(row[0])
