"""A campaign from a CSV: ``send_campaign`` accepts each push of a ``core/campaign.py``
campaign the way ``POST /api/v2/push`` does (``push.accept_body``), under each push's
idempotency key, so sending the same file again sends nothing twice; ``pushgate send`` and
``POST /api/v2/push-csv`` both use it.

``POST /api/v2/push-csv`` is pushgate's own endpoint, so it answers only under ``/api/v2``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from pushgate.api import openapi
from pushgate.api.answers import answer
from pushgate.api.auth import authenticate, resolve_channel, token_from
from pushgate.api.body import multipart_form, read_body
from pushgate.api.devices import resume_stopped_queue
from pushgate.api.push import accept_body, entries
from pushgate.api.routing import raw_post
from pushgate.api.state import Gateway, gateway_of
from pushgate.config import Settings
from pushgate.core.campaign import DEFAULT_NUMBER_COLUMN, Campaign, Chunk, Options, plan_campaign
from pushgate.core.channels import ChannelSpec
from pushgate.core.errors import ApiError, Code
from pushgate.core.pricing import format_credits
from pushgate.core.push import Limits, PushBody, parse_priority
from pushgate.core.schedule import parse_send_at
from pushgate.outbound import NameVerdicts
from pushgate.store.base import Store

router = APIRouter()


@dataclass(slots=True)
class Sent:
    """What became of a campaign: per row of the file (``Table.rows`` order), the push
    answer's item for it with its ``row`` (the file's record number) and, once accepted, its
    ``push_id``."""

    push_ids: list[int] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)
    accepted: int = 0
    rejected: int = 0
    credit_total_micro: int = 0
    balance_micro: int | None = None

    def refused_rows(self) -> list[tuple[int, dict[str, Any]]]:
        """(``Table.rows`` index, item) of every refused row, in file order."""
        return [(i, item) for i, item in enumerate(self.items) if "msg_id" not in item]


OnPush = Callable[[Chunk, int, int], None]


async def send_campaign(store: Store, settings: Settings, names: NameVerdicts,
                        project_id: int, channel: ChannelSpec, campaign: Campaign,
                        on_push: OnPush | None = None) -> tuple[Sent, bool]:
    """Accept the campaign's pushes in order; returns what became of each row, and whether
    a push was newly accepted (not replayed). A push the balance cannot cover stops the
    campaign: its rows and the later ones are refused with ``INSUFFICIENT_CREDIT``, and
    sending the file again once credited goes on from there. A request-level refusal (the
    channel takes no media, say) is raised. ``on_push(chunk, accepted, refused)`` follows
    each push."""
    limits = Limits(max_recipients=settings.max_recipients)
    rows: list[dict[str, Any] | None] = [None] * len(campaign.table.rows)
    for refusal in campaign.refused:
        rows[refusal.row] = {"number": refusal.number, "credit": "0",
                             "status": int(refusal.code), "message": refusal.message}
    sent = Sent()
    fresh = False
    for position, chunk in enumerate(campaign.chunks):
        try:
            plan, result, _ = await accept_body(store, settings, limits, names, project_id,
                                                channel, chunk.body, chunk.key)
        except ApiError as exc:
            if exc.code is Code.INSUFFICIENT_CREDIT:
                for later in campaign.chunks[position:]:
                    assert later.body.data is not None
                    for row, entry in zip(later.rows, later.body.data, strict=True):
                        rows[row] = {"number": str(entry.number), "credit": "0",
                                     "status": int(exc.code), "message": exc.message}
                break
            data = exc.extra.get("data")
            if not isinstance(data, list):
                raise
            for row, item in zip(chunk.rows, data, strict=True):
                rows[row] = item
            if on_push is not None:
                on_push(chunk, 0, len(chunk.rows))
            continue
        if not result.replayed:
            fresh = True
            if channel.paused:
                await resume_stopped_queue(store, channel)
        sent.push_ids.append(result.push_id)
        sent.credit_total_micro += plan.credit_total
        sent.balance_micro = result.balance_micro
        for row, item in zip(chunk.rows, entries(plan, result.message_ids), strict=True):
            if "msg_id" in item:
                item["push_id"] = str(result.push_id)
            rows[row] = item
        if on_push is not None:
            on_push(chunk, len(plan.accepted), len(plan.refused))
    for index, item in enumerate(rows):
        assert item is not None
        item["row"] = index + 2
        sent.items.append(item)
        if "msg_id" in item:
            sent.accepted += 1
        else:
            sent.rejected += 1
    return sent, fresh


async def send_and_wake(gateway: Gateway, project_id: int, channel: ChannelSpec,
                        campaign: Campaign) -> Sent:
    """``send_campaign`` for a request (``POST /api/v2/push-csv``, the dashboard's CSV
    form): the dispatcher woken when a push was newly accepted."""
    sent, fresh = await send_campaign(gateway.store, gateway.settings, gateway.media_names,
                                      project_id, channel, campaign)
    if fresh:
        gateway.lookups.forget()
        gateway.queued(channel.id)
    return sent


def send_at_field(fields: dict[str, Any], settings: Settings) -> str | None:
    """The form's ``send_at`` (or ``at``, the command's name for it), checked now so a wrong
    one is refused (``INVALID_SEND_AT``) before any push is sent; None when empty."""
    value = (fields.get("send_at") or fields.get("at") or "").strip()
    if not value:
        return None
    parse_send_at(value, time.time(), settings.max_schedule_seconds)
    return value


@raw_post(router, "/api/v2/push-csv", tags=["Push API"], openapi_extra=openapi.PUSH_CSV,
          summary="Send a campaign from a CSV file: one push per PUSHGATE_MAX_RECIPIENTS rows")
async def push_csv(request: Request) -> Response:
    gateway = gateway_of(request)
    settings = gateway.settings
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        raise ApiError(Code.MALFORMED_BODY, "send the CSV as a multipart/form-data `file`")
    fields, files = await multipart_form(request,
                                         await read_body(request, settings.max_body_bytes))
    token = await authenticate(gateway.lookups, request, token_from(request, fields.get("token")))
    gateway.rate_limiter.check(token.token_id)
    channel = await resolve_channel(gateway.lookups, token.project_id,
                                    fields.get("application"), fields.get("channel_id"))
    data = files.get("file")
    if data is None:
        raise ApiError(Code.INVALID_FIELD, "`file` (the CSV) is required")
    options = Options(
        application=str(channel.application), channel_id=channel.id,
        message=fields.get("message") or None,
        number_column=(fields.get("number_column") or "").strip() or DEFAULT_NUMBER_COLUMN,
        priority=parse_priority(PushBody(priority=fields.get("priority"))),
        media=(fields.get("media") or "").strip() or None,
        send_at=send_at_field(fields, settings))
    campaign = plan_campaign(data, options, settings.max_recipients)
    sent = await send_and_wake(gateway, token.project_id, channel, campaign)
    if not sent.push_ids:
        codes = {item["status"] for item in sent.items}
        code = Code(codes.pop()) if len(codes) == 1 else Code.NO_VALID_ENTRIES
        raise ApiError(code, "no row of the file can be sent", data=sent.items)
    return answer({
        "status": int(Code.SUCCESS),
        "push_id": str(sent.push_ids[0]),
        "push_ids": [str(p) for p in sent.push_ids],
        "message": "Success",
        "data": sent.items,
        "accepted": sent.accepted,
        "rejected": sent.rejected,
        "credit_total": format_credits(sent.credit_total_micro),
        "balance": format_credits(sent.balance_micro or 0),
    })
