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
from pushgate.api.answers import JSON, success
from pushgate.api.auth import authenticate, token_from
from pushgate.api.body import json_payload
from pushgate.api.routing import raw_post
from pushgate.api.state import gateway_of
from pushgate.core.errors import ApiError, Code
from pushgate.core.lifecycle import ERROR_STATES, State
from pushgate.core.pricing import format_credits
from pushgate.core.push import decode_token_body, parse_int_field

router = APIRouter()


@raw_post(router, "/api/v2/delivery-report", tags=["Push API"],
          openapi_extra=openapi.TOKEN_PUSH_ID, summary="Status of every message of a push")
async def delivery_report(request: Request) -> Response:
    gateway = gateway_of(request)
    body = decode_token_body(await json_payload(request, gateway.settings.max_body_bytes))
    token = await authenticate(gateway.lookups, request, token_from(request, body.token))
    push_id = parse_int_field("push_id", body.push_id)
    push_row = await gateway.store.get_push(token.project_id, push_id)
    if push_row is None:
        raise ApiError(Code.NOT_FOUND, f"no push {push_id} in this project")
    channel = await gateway.store.get_channel(push_row["channel_id"])
    head = {
        "status": int(Code.SUCCESS), "message": "Success", "error_message": "",
        "push_id": str(push_id), "project_id": str(token.project_id),
        "application": channel.application if channel else None,
        "channel_id": push_row["channel_id"],
        "time": time.strftime("%d-%m-%Y %I:%M %p", time.localtime(push_row["created_at"])),
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
            summary="One push with counts of its messages by state")
async def get_push(push_id: int, request: Request) -> Response:
    gateway = gateway_of(request)
    token = await authenticate(gateway.lookups, request, token_from(request, None))
    parse_int_field("push_id", push_id)   # in range for the database
    row = await gateway.store.get_push(token.project_id, push_id)
    if row is None:
        raise ApiError(Code.NOT_FOUND, f"no push {push_id} in this project")
    row["credit"] = format_credits(row.pop("credit_micro"))
    return success(data=row)


@router.get("/api/v2/messages/{msg_id}", tags=["Reports"],
            summary="One message with every transition")
async def get_message(msg_id: int, request: Request) -> Response:
    gateway = gateway_of(request)
    token = await authenticate(gateway.lookups, request, token_from(request, None))
    parse_int_field("msg_id", msg_id)   # in range for the database
    row = await gateway.store.get_message(token.project_id, msg_id)
    if row is None:
        raise ApiError(Code.NOT_FOUND, f"no message {msg_id} in this project")
    row["credit"] = format_credits(row.pop("credit_micro"))
    return success(data=row)


@router.get("/api/v2/sandbox/inbox", tags=["Sandbox"],
            summary="What the project's sandbox channels have 'sent', newest first")
async def sandbox_inbox(request: Request, limit: int = 100) -> Response:
    gateway = gateway_of(request)
    token = await authenticate(gateway.lookups, request, token_from(request, None))
    rows = await gateway.store.sandbox_inbox(token.project_id, max(1, min(limit, 1000)))
    for row in rows:
        row["credit"] = format_credits(row.pop("credit_micro"))
    return success(data=rows)


def report_item(row: dict[str, Any]) -> dict[str, Any]:
    """One message of a delivery report, as Picky lists it."""
    # Errors only for a failed or refunded message: a retried one's are in its history.
    failed = State(row["state"]) in ERROR_STATES
    return {
        "msg_id": str(row["msg_id"]),
        "number": row["number"],
        "status": row["status"],
        "state": row["state"],
        "reference_number": row["reference_number"],
        "error_code": row["error_code"] if failed else None,
        "error_message": (row["error_message"] or "") if failed else "",
        "credit": format_credits(row["credit_micro"]),
        "updated_at": row["updated_at"],
    }
