"""Row shapes both store implementations read and write: one mapping, two SQL dialects, from
columns to the typed records of ``core/records.py``."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from pushgate.core.channels import ChannelSpec, PriceUnit, caption_kinds_for
from pushgate.core.devices import Device
from pushgate.core.history import RoutineSteps, message_history
from pushgate.core.lifecycle import State
from pushgate.core.models import OutboxBatch, OutboxItem, Project, TokenInfo, TokenRecord
from pushgate.core.records import (
    CheckReport,
    InboundRecord,
    MessageDetail,
    MessageRecord,
    PushRecord,
    ReportRecord,
)

CHANNEL_COLUMNS = (
    "id, project_id, kind, application, price_micro, price_unit, max_chars, max_segments, "
    "media_allowed, rate_per_second, delay_ms, jitter_ms, paused, name, config, paused_reason"
)
PROJECT_COLUMNS = "id, name, balance_micro, webhook_url, active, incoming_webhook_url"
#: The ``pushes`` columns ``push_record`` reads.
PUSH_COLUMNS = "id, channel_id, priority, entries, accepted, credit_micro, created_at, send_at"

#: Message ids a dashboard search (``find_messages``) looks at a call, read through the
#: primary key: ~10 ms on SQLite (docs/benchmarks.md). The searches' own indexes cost every
#: accepted message a random-order index entry (revisions 0020, 0021).
SEARCH_WINDOW = 100_000


def search_window(before: int | None, newest: int | None) -> tuple[int, int] | None:
    """The message ids ``[floor, top)`` one search call looks at: below ``before``, or from
    ``newest`` (the largest id, read only when ``before`` is None); None when there are no
    messages at all."""
    if before is None:
        if newest is None:
            return None
        before = newest + 1
    return before, max(before - SEARCH_WINDOW, 0)


def search_asks_older(found: int, limit: int, floor: int) -> bool:
    """Whether a search call that found ``found`` rows (read with a limit of ``limit + 1``)
    must ask if messages older than its window's ``floor`` exist: a full page says where to
    go on by itself, and below id 0 there is nothing."""
    return found <= limit and floor > 0


TOKEN_COLUMNS = "id, label, ip_allow, created_at, revoked_at"


def token_record(row: Sequence[Any]) -> TokenRecord:
    return TokenRecord(id=row[0], label=row[1], ip_allow=[ip for ip in row[2].split(",") if ip],
                       created_at=row[3], revoked_at=row[4])


def channel_from_row(row: Sequence[Any]) -> ChannelSpec:
    return ChannelSpec(
        id=row[0], project_id=row[1], kind=row[2], application=row[3], price_micro=row[4],
        price_unit=PriceUnit(row[5]), max_chars=row[6], max_segments=row[7],
        media_allowed=bool(row[8]), rate_per_second=row[9], delay_ms=row[10],
        jitter_ms=row[11], paused=bool(row[12]), name=row[13], config=json.loads(row[14]),
        paused_reason=row[15] or "", caption_kinds=caption_kinds_for(row[3]),
    )


def project_from_row(row: Sequence[Any]) -> Project:
    return Project(row[0], row[1], row[2], row[3], bool(row[4]), row[5])


#: The channel columns ``Store.update_channel`` may change, with the type each is stored as.
CHANNEL_CHANGES: dict[str, Callable[[Any], Any]] = {
    "price_micro": int, "price_unit": str, "max_chars": int, "max_segments": int,
    "media_allowed": bool, "rate_per_second": float, "delay_ms": int, "jitter_ms": int,
    "paused": bool, "name": str, "config": str, "paused_reason": str,
}


def channel_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """The column values of an ``update_channel`` call (``config`` as JSON text);
    ``ValueError`` names a column that cannot be changed."""
    unknown = set(changes) - set(CHANNEL_CHANGES)
    if unknown:
        raise ValueError(f"cannot change {sorted(unknown)}")
    if "config" in changes:
        changes = {**changes, "config": json.dumps(changes["config"])}
    return {name: CHANNEL_CHANGES[name](value) for name, value in changes.items()}


#: What ``token_from_row`` reads: a token joined with its project (``t``, ``p``).
AUTH_COLUMNS = "t.id, t.project_id, t.revoked_at, t.ip_allow, p.active"


def token_info(row: Sequence[Any]) -> TokenInfo:
    return TokenInfo(token_id=row[0], project_id=row[1], revoked=row[2] is not None,
                     ip_allow=[ip for ip in row[3].split(",") if ip],
                     project_active=bool(row[4]))


def inbound_record(row: Sequence[Any]) -> InboundRecord:
    """An inbound message from its row: (id, project_id, channel_id, number, body, type,
    provider_id, media_url, name, application, …, raw at 13)."""
    raw = json.loads(row[13]) if len(row) > 13 and row[13] else None
    return InboundRecord(id=row[0], project_id=row[1], channel_id=row[2], number=row[3],
                         body=row[4], type=row[5], provider_id=row[6], media_url=row[7],
                         name=row[8], application=row[9], raw=raw)


#: The ``number_checks`` columns (as ``k``) ``check_report`` reads.
CHECK_COLUMNS = ("k.id, k.push_id, k.project_id, k.channel_id, k.number, k.on_whatsapp,"
                 " k.checked_by, k.chat_id, k.checked_at, k.reason, k.attempts")


def check_report(row: Sequence[Any]) -> CheckReport:
    """A number check from a row of ``CHECK_COLUMNS``; ``on_whatsapp`` None when not known."""
    return CheckReport(id=row[0], push_id=row[1], project_id=row[2], channel_id=row[3],
                       number=row[4], on_whatsapp=None if row[5] is None else bool(row[5]),
                       checked_by=row[6] or "", chat_id=row[7], checked_at=row[8],
                       reason=row[9], attempts=row[10])


def message_record(row: Sequence[Any]) -> MessageRecord:
    """A message for reports from a row of ``MESSAGE_COLUMNS`` (``MessageRecord``'s fields in
    order)."""
    return MessageRecord(row[0], row[1], State(row[2]), row[3], row[4], row[5], row[6],
                         row[7], row[8], row[9], row[10], row[11], row[12])


#: The ``messages`` columns ``message_record`` reads.
MESSAGE_COLUMNS = (
    "id, number, state, reference, error_code, error_message, updated_at, body, media,"
    " media_kind, credit_micro, channel_id, resends"
)

#: ``MESSAGE_COLUMNS`` of a query whose messages table is ``m``.
M_MESSAGE_COLUMNS = ", ".join(f"m.{name.strip()}" for name in MESSAGE_COLUMNS.split(","))

# What GET /api/v2/messages/{id} reads of a message: ``MESSAGE_COLUMNS``, the report's
# details, and the routine steps its history is rebuilt from (core/history.py).
MESSAGE_DETAIL_COLUMNS = (
    "id, number, state, reference, error_code, error_message, updated_at, body, media,"
    " media_kind, credit_micro, channel_id, resends, push_id, attempts, provider_id,"
    " created_at, priority, segments, parts, first_claim_at, first_claim_by, submitted_at,"
    " delivered_at, (SELECT p.send_at FROM pushes p WHERE p.id = messages.push_id)"
)


def message_detail(row: Sequence[Any],
                   events: Sequence[tuple[str, float, str | None]]) -> MessageDetail:
    """One message with its history, from a row of ``MESSAGE_DETAIL_COLUMNS`` and its event
    rows ``(state, at, detail)`` in the order they were written."""
    history = message_history(
        RoutineSteps(created_at=row[16], first_claim_at=row[20], first_claim_by=row[21],
                     submitted_at=row[22], provider_id=row[15], delivered_at=row[23],
                     send_at=row[24]),
        events)
    return MessageDetail(row[0], row[1], State(row[2]), row[3], row[4], row[5], row[6],
                         row[7], row[8], row[9], row[10], row[11], row[12], push_id=row[13],
                         attempts=row[14], provider_id=row[15], created_at=row[16],
                         priority=row[17], segments=row[18], parts=row[19], events=history)


#: The outbox columns joined with their message's that ``report_record`` reads, after the
#: outbox row's id, project_id and attempts.
REPORT_COLUMNS = (
    "o.state, o.at, o.error_code, o.error_message, m.push_id, m.id, m.number, m.reference,"
    " m.body, m.media, m.media_kind, m.channel_id"
)


#: What ``outbox_batches`` reads: an outbox row (``o``) joined with its message (``m``) and
#: its project (``p``).
OUTBOX_COLUMNS = (f"o.id, o.project_id, o.attempts, {REPORT_COLUMNS}, p.webhook_url,"
                  " p.webhook_secret")


def outbox_batches(rows: Sequence[Sequence[Any]]) -> tuple[list[OutboxBatch], list[int]]:
    """Claimed outbox rows of ``OUTBOX_COLUMNS`` as one batch per project, and the ids of
    those whose project removed its webhook since (to delete)."""
    batches: dict[int, OutboxBatch] = {}
    orphaned = []
    for r in rows:
        url = r[15]
        if not url:
            orphaned.append(r[0])
            continue
        batch = batches.get(r[1])
        if batch is None:
            batch = batches[r[1]] = OutboxBatch(project_id=r[1], url=url, secret=r[16] or "")
        batch.items.append(OutboxItem(id=r[0], project_id=r[1], attempts=r[2],
                                      report=report_record(r)))
    return list(batches.values()), orphaned


def report_record(row: Sequence[Any]) -> ReportRecord:
    """One event-webhook report from an outbox row joined with its message: (outbox id,
    project_id, attempts, then ``REPORT_COLUMNS``)."""
    return ReportRecord(state=State(row[3]), at=row[4], error_code=row[5],
                        error_message=row[6], push_id=row[7], message_id=row[8],
                        number=row[9], reference=row[10], body=row[11], media=row[12],
                        media_kind=row[13], channel_id=row[14])


#: The ``devices`` columns both stores read a ``Device`` from (``health`` as JSON text).
DEVICE_COLUMNS = ("id, channel_id, project_id, name, created_at, last_seen_at, revoked_at,"
                  " push_token, user_agent, health, ready_at, paused_until, reconnect_at")


def device_from_row(row: Sequence[Any], in_flight: int = 0) -> Device:
    """A phone from its ``DEVICE_COLUMNS``, with ``in_flight`` messages handed to it."""
    return Device(id=row[0], channel_id=row[1], project_id=row[2], name=row[3],
                  created_at=row[4], last_seen_at=row[5], revoked_at=row[6], push_token=row[7],
                  user_agent=row[8] or "", health=json.loads(row[9] or "{}") or None,
                  ready_at=row[10], paused_until=row[11], reconnect_at=row[12],
                  in_flight=in_flight)


def push_record(row: Sequence[Any], counts: dict[str, int]) -> PushRecord:
    """A push as ``Store.get_push`` returns it: its ``PUSH_COLUMNS`` and its messages counted
    by state."""
    return PushRecord(id=row[0], channel_id=row[1], priority=row[2], entries=row[3],
                      accepted=row[4], credit_micro=row[5], created_at=row[6], counts=counts,
                      send_at=row[7])
