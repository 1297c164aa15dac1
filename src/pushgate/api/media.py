"""Media behind signed, expiring links: a push's inline media (``/media/{id}``, for
providers to fetch) and users' media a provider keeps behind the channel's credentials
(``/channels/{id}/inbound-media/{ref}``, the ``media-url`` of incoming webhooks)."""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Request
from starlette.responses import Response

from pushgate.api.state import gateway_of
from pushgate.channels.media import (
    MediaFetchError,
    inbound_media_subject,
    verify_media_signature,
)
from pushgate.core.push import parse_int_field

log = logging.getLogger("pushgate.api")

router = APIRouter()


def _signed(request: Request, secret_key: str, subject: int | str) -> bool:
    return verify_media_signature(secret_key, subject, request.query_params.get("expires", ""),
                                  request.query_params.get("sig", ""), time.time())


@router.get("/channels/{channel_id}/inbound-media/{ref}", tags=["Providers"],
            summary="A user's media received on a channel, by signed link")
async def inbound_media(channel_id: int, ref: str, request: Request) -> Response:
    """The ``media-url`` of an incoming-webhook message whose provider keeps the file
    behind the channel's credentials: fetched from the provider when followed."""
    gateway = gateway_of(request)
    parse_int_field("channel_id", channel_id, maximum=2**31 - 1)
    if not _signed(request, gateway.settings.secret_key, inbound_media_subject(channel_id, ref)):
        return Response(b"link expired or not signed", status_code=403,
                        media_type="text/plain")
    spec = await gateway.store.get_channel(channel_id)
    if spec is None:
        return Response(b"no such channel", status_code=404, media_type="text/plain")
    try:
        content_type, data = await gateway.callback_channel(spec).fetch_inbound_media(ref)
    except LookupError as exc:
        return Response(str(exc).encode(), status_code=404, media_type="text/plain")
    except MediaFetchError as exc:
        log.warning("channel %s: inbound media %s: %s", channel_id, ref, exc,
                    extra={"channel_id": channel_id})
        return Response(str(exc).encode(), status_code=503 if exc.retryable else 502,
                        media_type="text/plain")
    return Response(data, media_type=content_type,
                    headers={"Cache-Control": "private, max-age=3600"})


@router.get("/media/{media_id}", tags=["Providers"],
            summary="Inline media of a push, for providers, by signed expiring link")
async def media(media_id: int, request: Request) -> Response:
    gateway = gateway_of(request)
    parse_int_field("media_id", media_id)
    if not _signed(request, gateway.settings.secret_key, media_id):
        return Response(b"link expired or not signed", status_code=403,
                        media_type="text/plain")
    found = await gateway.store.get_media(media_id)
    if found is None:
        return Response(b"no such media", status_code=404, media_type="text/plain")
    content_type, data = found
    return Response(data, media_type=content_type,
                    headers={"Cache-Control": "private, max-age=3600"})
