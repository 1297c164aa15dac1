"""Picky's webhook bodies rendered from the store's records (webhooks/payloads.py)."""

from __future__ import annotations

import orjson

from pushgate.core.lifecycle import State
from pushgate.core.records import InboundRecord, ReportRecord
from pushgate.webhooks.payloads import inbound_body, reports_body


def _report(state: State, media_kind: str | None = None) -> ReportRecord:
    return ReportRecord(push_id=4, message_id=17, number="919876543210", state=state,
                        reference="ref-1", error_code="E1", error_message="busy", body="hi",
                        media=None, media_kind=media_kind, channel_id=3, at=1700000000.5)


def test_reports_body_keeps_picky_key_order_and_errors_only_for_failures() -> None:
    body = reports_body(9, [_report(State.DELIVERED), _report(State.FAILED, "image")])
    assert body == orjson.dumps({"project_id": 9, "event_id": 1, "data": [
        {"push_id": "4", "msg_id": "17", "number": "919876543210", "status": 1,
         "state": "delivered", "reference_number": "ref-1", "error_code": None,
         "error_message": "", "message": "hi", "message_type": "Text", "media": None,
         "channel_id": 3, "time": 1700000000.5},
        {"push_id": "4", "msg_id": "17", "number": "919876543210", "status": 2,
         "state": "failed", "reference_number": "ref-1", "error_code": "E1",
         "error_message": "busy", "message": "hi", "message_type": "Image", "media": None,
         "channel_id": 3, "time": 1700000000.5}]})


def test_inbound_body_says_when_parts_are_missing() -> None:
    message = InboundRecord(id=5, project_id=2, channel_id=3, number="919876543210",
                            body="a+b c", type=1, provider_id="p5", media_url=None, name=None,
                            application=8, raw={"incomplete": True, "parts_received": [1],
                                                "parts_total": 2})
    assert orjson.loads(inbound_body(message)) == {
        "number": "919876543210", "message-in": "a%2Bb+c", "message_in_raw": "a+b c",
        "type": 1, "application": "8", "unique-id": "5", "project-id": "2", "channel_id": 3,
        "provider_id": "p5", "media-url": "", "direction": 0, "incomplete": True,
        "parts_received": [1], "parts_total": 2}
