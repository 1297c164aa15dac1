"""``POST /api/v2/sandbox/inbound``: a user writing to the project's sandbox channel.

pushgate's own endpoint, not Picky's (Picky's sandbox has no such call), so it answers only
under ``/api/v2`` like the sandbox inbox, not at Picky's older base paths. What the user wrote
goes the way a real channel's provider callback goes (``callbacks.record_result``): stored,
then forwarded to the project's incoming webhook.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.responses import Response

from pushgate.api import openapi
from pushgate.api.answers import success
from pushgate.api.auth import MAX_CHANNEL_FIELD, authenticate, token_from
from pushgate.api.body import json_payload
from pushgate.api.callbacks import record_result
from pushgate.api.routing import raw_post
from pushgate.api.state import gateway_of
from pushgate.channels.sandbox import SandboxChannel
from pushgate.core.channels import APPLICATION_CODES
from pushgate.core.errors import ApiError, Code
from pushgate.core.push import parse_int_field
from pushgate.core.sandbox import check_user_message, decode_sandbox_inbound

router = APIRouter()


@raw_post(router, "/api/v2/sandbox/inbound", tags=["Sandbox"],
          openapi_extra=openapi.SANDBOX_INBOUND,
          summary="A user's message arriving on the project's sandbox channel")
async def sandbox_inbound(request: Request) -> Response:
    gateway = gateway_of(request)
    body = decode_sandbox_inbound(await json_payload(request, gateway.settings.max_body_bytes))
    token = await authenticate(gateway.lookups, request, token_from(request, body.token))
    # Each call stores a row and posts to the project's webhook: it shares the push budget.
    gateway.rate_limiter.check(token.token_id)
    code = parse_int_field("application", body.application, maximum=MAX_CHANNEL_FIELD)
    sandboxes = [c for c in await gateway.store.list_channels(token.project_id)
                 if c.kind == SandboxChannel.kind and c.application == code]
    if not sandboxes:
        name = APPLICATION_CODES.get(code)
        hint = f" ({name})" if name else ""
        raise ApiError(Code.NO_SANDBOX_CHANNEL,
                       f"the project has no sandbox channel for application {code}{hint}")
    spec = min(sandboxes, key=lambda c: c.id)   # of several, one rule: the oldest
    message = check_user_message(body, spec.max_chars)
    channel = gateway.callback_channel(spec)
    assert isinstance(channel, SandboxChannel)
    result = channel.user_writes(message, time.time())
    await record_result(gateway, spec, result)
    return success(channel_id=spec.id, provider_id=result.inbound[0].provider_id)
