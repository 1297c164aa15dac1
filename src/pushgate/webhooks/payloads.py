"""Picky's webhook bodies, rendered from the store's typed records: the event webhook's
delivery reports (one body per project batch) and number filter answers (event 2), and the
incoming webhook's user messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urlsplit

import orjson

from pushgate.core.channels import MediaKind
from pushgate.core.checks import check_status
from pushgate.core.lifecycle import ERROR_STATES, PICKY_STATUS
from pushgate.core.records import CheckReport, InboundRecord, ReportRecord

EVENT_DELIVERY_REPORT = 1
EVENT_NUMBER_FILTER = 2


def message_type(media_kind: str | None) -> str:
    """Picky's ``message_type`` in reports: Text, Image, Video, Audio, Document."""
    if not media_kind:
        return "Text"
    return MediaKind(media_kind).value.capitalize()


def report_payload(report: ReportRecord) -> dict[str, Any]:
    """One report of the event webhook, as Picky sends it."""
    failed = report.state in ERROR_STATES   # a report of another state carries no error
    return {
        "push_id": str(report.push_id),
        "msg_id": str(report.message_id),
        "number": report.number,
        "status": PICKY_STATUS[report.state],
        "state": report.state.value,
        "reference_number": report.reference,
        "error_code": report.error_code if failed else None,
        "error_message": (report.error_message or "") if failed else "",
        "message": report.body,
        "message_type": message_type(report.media_kind),
        "media": report.media,
        "channel_id": report.channel_id,
        "time": report.at,
    }


def reports_body(project_id: int, reports: Sequence[ReportRecord]) -> bytes:
    """The signed body of one POST to a project's event webhook."""
    return orjson.dumps({
        "project_id": project_id,
        "event_id": EVENT_DELIVERY_REPORT,
        "data": [report_payload(report) for report in reports],
    })


def check_payload(report: CheckReport) -> dict[str, Any]:
    """One number's answer of the number filter. Picky names ``push_id``, ``number`` and
    ``msg_id`` (here the check's id, as the push answer listed it); the rest is pushgate's:
    ``status`` 1 on WhatsApp, 0 not, ``is_whatsapp`` the same as a boolean (both null when not
    known: a check that gave up), ``checked_by`` who answered (the bridge's kind,
    ``validity``, ``sandbox`` or ``gave_up``), ``reason`` why it gave up."""
    return {
        "push_id": str(report.push_id),
        "msg_id": str(report.id),
        "number": report.number,
        "status": check_status(report.on_whatsapp),
        "is_whatsapp": report.on_whatsapp,
        "checked_by": report.checked_by,
        "chat_id": report.chat_id,
        "reason": report.reason,
        "channel_id": report.channel_id,
        "time": report.checked_at,
    }


def checks_body(project_id: int, reports: Sequence[CheckReport]) -> bytes:
    """The signed body of one POST of number filter answers (event 2) to the event webhook."""
    return orjson.dumps({
        "project_id": project_id,
        "event_id": EVENT_NUMBER_FILTER,
        "data": [check_payload(report) for report in reports],
    })


def url_variables(url: str) -> dict[str, str]:
    """The query parameters of a project's incoming webhook URL: Picky's custom variables,
    passed through in every body (a name given twice keeps its last value)."""
    try:
        query = urlsplit(url).query
    except ValueError:
        return {}
    return dict(parse_qsl(query, keep_blank_values=True))


def inbound_payload(message: InboundRecord, url: str = "") -> dict[str, Any]:
    """Picky's global (incoming) webhook body for a user's message, with the webhook URL's
    custom variables merged in; the message's own fields win a name clash, so a variable
    cannot pass for the sender or the text."""
    payload: dict[str, Any] = url_variables(url)
    payload.update({
        "number": message.number,
        "message-in": quote_plus(message.body),
        "message_in_raw": message.body,
        "type": message.type,
        "application": str(message.application),
        "unique-id": str(message.id),
        "project-id": str(message.project_id),
        "channel_id": message.channel_id,
        "provider_id": message.provider_id,
        "media-url": message.media_url or "",
        "direction": 0,   # Picky's 0: from the user (1 is an outbound copy, never sent here)
    })
    if message.name:
        payload["name"] = message.name
    # A user's multi-part SMS forwarded without all its parts (SMPP, after its wait): said so.
    raw = message.raw
    if isinstance(raw, dict) and raw.get("incomplete"):
        payload["incomplete"] = True
        payload["parts_received"] = raw.get("parts_received", [])
        payload["parts_total"] = raw.get("parts_total")
    return payload


def inbound_body(message: InboundRecord, url: str = "") -> bytes:
    """The signed body of one POST to a project's incoming webhook at ``url``."""
    return orjson.dumps(inbound_payload(message, url))
