"""Reports: ``POST /api/v2/delivery-report`` (Picky's, every message of a push, streamed),
``GET /api/v2/pushes/{id}``, ``GET /api/v2/messages/{id}`` and the sandbox inbox."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.responses import Response

from pushgate.api import openapi
from pushgate.api.answers import JSON, iso_time, success
from pushgate.api.auth import authenticate, token_from
from pushgate.api.body import json_payload
from pushgate.api.routing import raw_post
from pushgate.api.state import gateway_of
from pushgate.core.checks import check_state, check_status
from pushgate.core.errors import ApiError, Code
from pushgate.core.lifecycle import ERROR_STATES
from pushgate.core.pricing import format_credits
from pushgate.core.push import decode_token_body, parse_int_field
from pushgate.core.records import CheckReport, MessageDetail, MessageRecord, PushRecord

router = APIRouter()


@raw_post(router, "/api/v2/delivery-report", tags=["Push API"],
          openapi_extra=openapi.TOKEN_PUSH_ID, summary="Status of every message of a push")
async def delivery_report(request: Request) -> Response:
    gateway = gateway_of(request)
    body = decode_token_body(await json_payload(request, gateway.settings.max_body_bytes))
    token = await authenticate(gateway.lookups, request, token_from(request, body.token))
    push_id = parse_int_field("push_id", body.push_id)
    push = await gateway.store.get_push(token.project_id, push_id)
    if push is None:
        raise ApiError(Code.NOT_FOUND, f"no push {push_id} in this project")
    channel = await gateway.store.get_channel(push.channel_id)
    head = {
        "status": int(Code.SUCCESS), "message": "Success", "error_message": "",
        "push_id": str(push_id), "project_id": str(token.project_id),
        "application": channel.application if channel else None,
        "channel_id": push.channel_id,
        "time": time.strftime("%d-%m-%Y %I:%M %p", time.localtime(push.created_at)),
    }

    async def stream() -> AsyncIterator[bytes]:
        # Streams chunk by chunk, so a 10,000-message report never sits in memory whole.
        yield orjson.dumps(head)[:-1] + b',"data":['
        first = True
        async for rows in gateway.store.iter_push_messages(token.project_id, push_id):
            items = [report_item(r) for r in rows]
            chunk = orjson.dumps(items)[1:-1]
            if chunk:
                yield (b"" if first else b",") + chunk
                first = False
        yield b"]}"

    return StreamingResponse(stream(), media_type=JSON)


@router.get("/api/v2/pushes/{push_id}", tags=["Reports"],
            summary="One push with counts of its messages by state; a number filter push"
                    " with its checks")
async def get_push(push_id: int, request: Request) -> Response:
    gateway = gateway_of(request)
    token = await authenticate(gateway.lookups, request, token_from(request, None))
    parse_int_field("push_id", push_id)   # in range for the database
    push = await gateway.store.get_push(token.project_id, push_id)
    if push is None:
        raise ApiError(Code.NOT_FOUND, f"no push {push_id} in this project")
    checks = gateway.store.iter_push_checks(token.project_id, push_id)
    first = await anext(checks, None)
    if first is None:
        return success(data=push_json(push))
    # A number filter push (``action: 1``): its checks, streamed chunk by chunk as the
    # delivery report streams messages, last in ``data`` so the head can be cut before them.
    head = orjson.dumps({"status": int(Code.SUCCESS), "message": "Success",
                         "data": {**push_json(push), "action": 1, "checks": []}})

    async def stream() -> AsyncIterator[bytes]:
        yield head[:-len(b"]}}")]
        yield orjson.dumps([check_json(c) for c in first])[1:-1]
        async for rows in checks:
            yield b"," + orjson.dumps([check_json(c) for c in rows])[1:-1]
        yield b"]}}"

    return StreamingResponse(stream(), media_type=JSON)


@router.get("/api/v2/messages/{msg_id}", tags=["Reports"],
            summary="One message with every transition")
async def get_message(msg_id: int, request: Request) -> Response:
    gateway = gateway_of(request)
    token = await authenticate(gateway.lookups, request, token_from(request, None))
    parse_int_field("msg_id", msg_id)   # in range for the database
    message = await gateway.store.get_message(token.project_id, msg_id)
    if message is None:
        raise ApiError(Code.NOT_FOUND, f"no message {msg_id} in this project")
    return success(data=message_detail_json(message))


@router.get("/api/v2/sandbox/inbox", tags=["Sandbox"],
            summary="What the project's sandbox channels have 'sent', newest first")
async def sandbox_inbox(request: Request, limit: int = 100) -> Response:
    gateway = gateway_of(request)
    token = await authenticate(gateway.lookups, request, token_from(request, None))
    messages = await gateway.store.sandbox_inbox(token.project_id, max(1, min(limit, 1000)))
    return success(data=[message_json(message) for message in messages])


def report_item(message: MessageRecord) -> dict[str, Any]:
    """One message of a delivery report, as Picky lists it."""
    # Errors only for a failed or refunded message: a retried one's are in its history.
    failed = message.state in ERROR_STATES
    return {
        "msg_id": str(message.id),
        "number": message.number,
        "status": message.status,
        "state": message.state.value,
        "reference_number": message.reference,
        "error_code": message.error_code if failed else None,
        "error_message": (message.error_message or "") if failed else "",
        "credit": format_credits(message.credit_micro),
        "updated_at": message.updated_at,
    }


def check_json(check: CheckReport) -> dict[str, Any]:
    """One number check as ``GET /api/v2/pushes/{id}`` lists a filter push's: the answer the
    event webhook gets (event 2), or its state while it waits."""
    return {
        "msg_id": check.id, "number": check.number,
        "state": check_state(check.checked_by, check.checked_at, check.attempts),
        "status": check_status(check.on_whatsapp), "is_whatsapp": check.on_whatsapp,
        "checked_by": check.checked_by or None, "chat_id": check.chat_id,
        "reason": check.reason, "attempts": check.attempts,
        "checked_at": iso_time(check.checked_at),
    }


def message_json(message: MessageRecord) -> dict[str, Any]:
    """A message as the sandbox inbox lists it (and the start of ``message_detail_json``)."""
    return {
        "msg_id": message.id, "number": message.number, "state": message.state.value,
        "status": message.status, "reference_number": message.reference,
        "error_code": message.error_code, "error_message": message.error_message,
        "updated_at": iso_time(message.updated_at), "message": message.body,
        "media": message.media,
        "media_kind": message.media_kind, "channel_id": message.channel_id,
        "resends": message.resends, "credit": format_credits(message.credit_micro),
    }


def message_detail_json(message: MessageDetail) -> dict[str, Any]:
    """``GET /api/v2/messages/{id}``'s ``data``: the message, its details and history."""
    data = message_json(message)
    credit = data.pop("credit")   # last, after the history, as it always came
    data.update(push_id=message.push_id, attempts=message.attempts,
                provider_id=message.provider_id, created_at=iso_time(message.created_at),
                priority=message.priority, segments=message.segments, parts=message.parts,
                events=[{**event, "at": iso_time(event["at"])} for event in message.events],
                credit=credit)
    return data


def push_json(push: PushRecord) -> dict[str, Any]:
    """``GET /api/v2/pushes/{id}``'s ``data``; ``send_at`` only for a scheduled push."""
    data: dict[str, Any] = {
        "push_id": push.id, "channel_id": push.channel_id, "priority": push.priority,
        "entries": push.entries, "accepted": push.accepted,
        "created_at": iso_time(push.created_at),
        "counts": push.counts, "credit": format_credits(push.credit_micro),
    }
    if push.send_at is not None:
        data["send_at"] = iso_time(push.send_at)
    return data
