"""Row shapes both store implementations read and write: one mapping, two SQL dialects."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote_plus

from pushgate.core.channels import ChannelSpec, MediaKind, PriceUnit, caption_kinds_for
from pushgate.core.history import RoutineSteps, message_history
from pushgate.core.lifecycle import ERROR_STATES, PICKY_STATUS, State
from pushgate.core.models import Project

CHANNEL_COLUMNS = (
    "id, project_id, kind, application, price_micro, price_unit, max_chars, max_segments, "
    "media_allowed, rate_per_second, delay_ms, jitter_ms, paused, name, config, paused_reason"
)
PROJECT_COLUMNS = "id, name, balance_micro, webhook_url, active, incoming_webhook_url"
#: The ``pushes`` columns ``push_record`` reads.
PUSH_COLUMNS = "id, channel_id, priority, entries, accepted, credit_micro, created_at"


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


def inbound_payload(row: Sequence[Any]) -> dict[str, Any]:
    """Picky's global (incoming) webhook body for an inbound message row: (id, project_id,
    channel_id, number, body, type, provider_id, media_url, name, application, …, raw at 13)."""
    payload: dict[str, Any] = {
        "number": row[3],
        "message-in": quote_plus(row[4]),
        "message_in_raw": row[4],
        "type": row[5],
        "application": str(row[9]),
        "unique-id": str(row[0]),
        "project-id": str(row[1]),
        "channel_id": row[2],
        "provider_id": row[6],
        "media-url": row[7] or "",
    }
    if row[8]:
        payload["name"] = row[8]
    # A user's multi-part SMS forwarded without all its parts (SMPP, after its wait): said so.
    raw = json.loads(row[13]) if len(row) > 13 and row[13] else {}
    if isinstance(raw, dict) and raw.get("incomplete"):
        payload["incomplete"] = True
        payload["parts_received"] = raw.get("parts_received", [])
        payload["parts_total"] = raw.get("parts_total")
    return payload


def message_dict(row: Sequence[Any]) -> dict[str, Any]:
    """A message for reports: (id, number, state, reference, error_code, error_message,
    updated_at, body, media, media_kind, credit_micro, channel_id, resends, …)."""
    state = State(row[2])
    return {
        "msg_id": row[0], "number": row[1], "state": state.value,
        "status": PICKY_STATUS[state], "reference_number": row[3], "error_code": row[4],
        "error_message": row[5], "updated_at": row[6], "message": row[7], "media": row[8],
        "media_kind": row[9], "credit_micro": row[10], "channel_id": row[11],
        "resends": row[12],
    }


# What GET /api/v2/messages/{id} reads of a message: message_dict's columns, the report's
# details, and the routine steps its history is rebuilt from (core/history.py).
MESSAGE_DETAIL_COLUMNS = (
    "id, number, state, reference, error_code, error_message, updated_at, body, media,"
    " media_kind, credit_micro, channel_id, resends, push_id, attempts, provider_id,"
    " created_at, priority, segments, parts, first_claim_at, first_claim_by, submitted_at,"
    " delivered_at"
)


def message_detail(row: Sequence[Any],
                   events: Sequence[tuple[str, float, str | None]]) -> dict[str, Any]:
    """One message with its history, from a row of ``MESSAGE_DETAIL_COLUMNS`` and its event
    rows ``(state, at, detail)`` in the order they were written."""
    result = message_dict(row)
    result.update(push_id=row[13], attempts=row[14], provider_id=row[15],
                  created_at=row[16], priority=row[17], segments=row[18], parts=row[19])
    result["events"] = message_history(
        RoutineSteps(created_at=row[16], first_claim_at=row[20], first_claim_by=row[21],
                     submitted_at=row[22], provider_id=row[15], delivered_at=row[23]),
        events)
    return result


def message_type(media_kind: str | None) -> str:
    """Picky's ``message_type`` in reports: Text, Image, Video, Audio, Document."""
    if not media_kind:
        return "Text"
    return MediaKind(media_kind).value.capitalize()


def report_payload(row: Sequence[Any]) -> dict[str, Any]:
    """One event-webhook report from an outbox row joined with its message: (outbox id,
    project_id, attempts, state, at, error_code, error_message, push_id, msg_id, number,
    reference, body, media, media_kind, channel_id, …)."""
    state = State(row[3])
    failed = state in ERROR_STATES   # a report of another state carries no error
    return {
        "push_id": str(row[7]),
        "msg_id": str(row[8]),
        "number": row[9],
        "status": PICKY_STATUS[state],
        "state": state.value,
        "reference_number": row[10],
        "error_code": row[5] if failed else None,
        "error_message": (row[6] or "") if failed else "",
        "message": row[11],
        "message_type": message_type(row[13]),
        "media": row[12],
        "channel_id": row[14],
        "time": row[4],
    }


#: The ``devices`` columns both stores read a ``Device`` from (``health`` as JSON text).
DEVICE_COLUMNS = ("id, channel_id, project_id, name, created_at, last_seen_at, revoked_at,"
                  " push_token, user_agent, health, ready_at, paused_until, reconnect_at")


def push_record(row: Sequence[Any], counts: dict[str, int]) -> dict[str, Any]:
    """A push as ``Store.get_push`` returns it: its ``PUSH_COLUMNS`` and its messages counted
    by state."""
    return {"push_id": row[0], "channel_id": row[1], "priority": row[2], "entries": row[3],
            "accepted": row[4], "credit_micro": row[5], "created_at": row[6],
            "counts": counts}
