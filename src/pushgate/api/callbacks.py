"""Provider callbacks: ``/channels/{id}/callback[/sub-path]``.

Status webhooks, delivery receipts and inbound messages are handed raw to the channel's
connector, which verifies (signature first) and parses them; the route records what it
returns and answers as the connector says. Not in the OpenAPI document: providers, not API
clients, call it (README, channels).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from pushgate.api import metrics
from pushgate.api.body import read_body
from pushgate.api.state import Gateway, gateway_of
from pushgate.channels.base import CallbackRejected, CallbackRequest, CallbackResult, Channel
from pushgate.core.channels import ChannelSpec
from pushgate.core.push import parse_int_field

log = logging.getLogger("pushgate.api")

router = APIRouter()


@router.api_route("/channels/{channel_id}/callback", methods=["GET", "POST"],
                  include_in_schema=False)
@router.api_route("/channels/{channel_id}/callback/{sub_path:path}", methods=["GET", "POST"],
                  tags=["Providers"], include_in_schema=False)
async def channel_callback(channel_id: int, request: Request, sub_path: str = "") -> Response:
    """Status webhooks, delivery receipts and inbound messages, verified by the channel's
    connector (signature first), recorded, then answered as the provider expects."""
    gateway = gateway_of(request)
    parse_int_field("channel_id", channel_id, maximum=2**31 - 1)
    spec = await gateway.store.get_channel(channel_id)
    if spec is None:
        return Response(b"no such channel", status_code=404, media_type="text/plain")
    try:
        channel = gateway.callback_channel(spec)
    except ValueError as exc:
        return Response(str(exc).encode(), status_code=404, media_type="text/plain")
    try:
        result = await hand_to_connector(
            channel, request, gateway.env.public_url,
            await read_body(request, gateway.settings.max_body_bytes), sub_path)
    except CallbackRejected as exc:
        metrics.CALLBACKS.labels(kind=spec.kind, outcome="rejected").inc()
        log.warning("channel %s: callback rejected (%s)", channel_id, exc.reason,
                    extra={"channel_id": channel_id})
        return rejection(exc)
    await record_result(gateway, spec, result)
    metrics.CALLBACKS.labels(kind=spec.kind, outcome="accepted").inc()
    return connector_answer(result)


async def record_result(gateway: Gateway, spec: ChannelSpec, result: CallbackResult) -> None:
    """What a connector made of a callback, recorded: status updates applied, users' messages
    stored for the incoming webhook, and the webhook deliverer woken. The one way in for
    inbound messages from the HTTP side (provider callbacks, the sandbox's users)."""
    for update in result.updates:
        update.channel_id = spec.id   # a connector answers for its own channel only
        drop_nul(update)
    for message in result.inbound:
        message.channel_id = spec.id
        drop_nul(message)
    await gateway.store.apply_status_updates(result.updates)
    await gateway.store.record_inbound(result.inbound, time.time())
    if result.updates or result.inbound:
        gateway.webhook_wake.set()


async def hand_to_connector(channel: Channel, request: Request, public_url: str, body: bytes,
                            sub_path: str = "") -> CallbackResult:
    """The request as the connector reads it, handed to it; raises ``CallbackRejected``."""
    # The URL as the provider called it, on the public base it was given (Twilio signs it).
    url = public_url + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    return await channel.handle_callback(CallbackRequest(
        method=request.method, url=url,
        headers={k.lower(): v for k, v in request.headers.items()},
        query=dict(request.query_params), body=body, sub_path=sub_path))


def rejection(exc: CallbackRejected) -> Response:
    return Response(exc.reason.encode(), status_code=exc.status_code, media_type="text/plain")


def connector_answer(result: CallbackResult) -> Response:
    """What the connector said the provider expects back."""
    return Response(result.body, status_code=result.status_code, media_type=result.content_type)


_TEXT_FIELDS = ("number", "text", "provider_id", "media_url", "name", "error_code",
                "error_message")


def drop_nul(record: Any) -> None:
    """Take NUL characters out of a callback record's text: PostgreSQL's text columns refuse
    them, and a user's message may hold one (a 500 would have the provider retry forever)."""
    for name in _TEXT_FIELDS:
        value = getattr(record, name, None)
        if isinstance(value, str) and "\x00" in value:
            setattr(record, name, value.replace("\x00", ""))
