"""``POST /api/v2/push``: one push with many recipients, accepted in one store transaction.

The route reads the raw body and decodes it with msgspec instead of letting FastAPI build
pydantic models, which would cost more than the whole rest of the accept path for a
10,000-entry push; its schema is still published in the OpenAPI document (``openapi.PUSH``).
It is served as a ``RawRoute`` and through ``FastRoutes`` (``api/routing.py``).
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from fastapi import APIRouter, Request
from starlette.responses import Response

from pushgate.api import metrics, openapi
from pushgate.api.answers import accepted_answer, short_of_credit
from pushgate.api.auth import authenticate_from, resolve_channel, token_from
from pushgate.api.body import json_payload
from pushgate.api.devices import resume_stopped_queue
from pushgate.api.media_hosts import plan_with_media_hosts
from pushgate.api.number_filter import number_filter
from pushgate.api.routing import raw_post
from pushgate.api.state import Gateway, gateway_of
from pushgate.config import Settings
from pushgate.core.channels import ChannelSpec
from pushgate.core.checks import ACTION_NUMBER_FILTER, parse_action
from pushgate.core.errors import ApiError, Code
from pushgate.core.models import AcceptResult
from pushgate.core.optouts import without_opted_out
from pushgate.core.pricing import credit_text
from pushgate.core.push import (
    ROW_CREDIT,
    ROW_INDEX,
    ROW_NUMBER,
    Limits,
    PushBody,
    PushPlan,
    decode_push,
    plan_digest,
)
from pushgate.core.schedule import parse_send_at, send_at_instant, starts_at
from pushgate.outbound import NameVerdicts
from pushgate.store.base import Store
from pushgate.store.errors import AllOptedOut, IdempotencyKeyReused, InsufficientCredit

router = APIRouter()


@raw_post(router, "/api/v2/push", tags=["Push API"], openapi_extra=openapi.PUSH,
          summary="Send one push with many recipients")
async def push(request: Request) -> Response:
    started = time.perf_counter()
    gateway = gateway_of(request)
    body = decode_push(await json_payload(request, gateway.settings.max_body_bytes))
    return await answer_push(gateway, body, request.client.host if request.client else None,
                             token_from(request, body.token), started, idempotency_key(request))


async def answer_push(gateway: Gateway, body: PushBody, client_ip: str | None,
                      token_text: str | None, started: float,
                      key: str | None = None) -> Response:
    """Everything after the body is read and decoded: the route above and the fast path
    (``api/fastpush.py``) both end here, so a body field handled here (or in
    ``accept_body``) is handled by both."""
    settings = gateway.settings
    token = await authenticate_from(gateway.lookups, client_ip, token_text)
    gateway.rate_limiter.check(token.token_id)
    channel = await resolve_channel(gateway.lookups, token.project_id, body.application,
                                    body.channel_id)
    if parse_action(body) == ACTION_NUMBER_FILTER:
        return await number_filter(gateway, token.project_id, channel, body, time.time())
    accepted = await accept_body(
        gateway.store, settings, gateway.limits, gateway.media_names, token.project_id, channel,
        body, key)
    plan, result = accepted.plan, accepted.result
    if result.replayed:
        return accepted_answer(result.push_id, entries(plan, result.message_ids),
                               len(plan.accepted), len(plan.refused), plan.credit_total,
                               result.balance_micro)
    await start_sending(gateway, channel, accepted)
    metrics.ACCEPT_SECONDS_TALLY.observe(time.perf_counter() - started)
    return accepted_answer(result.push_id, entries(plan, result.message_ids), len(plan.accepted),
                           len(plan.refused), plan.credit_total, result.balance_micro)


async def start_sending(gateway: Gateway, channel: ChannelSpec, accepted: Accepted) -> None:
    """What follows a newly accepted push (the route's and the dashboard's form): Picky's
    restart of a queue stopped by device-action, the dispatcher woken, the counters."""
    if channel.paused and await resume_stopped_queue(gateway.store, channel):
        gateway.lookups.forget()
    if accepted.send_at is None:
        gateway.queued(channel.id)
    elif gateway.dispatcher is not None:
        # Other processes' promoters find it within a second (dispatch/worker.py).
        gateway.dispatcher.scheduled()
    metrics.PUSHES_TALLY.inc()
    metrics.MESSAGES_TALLY.inc(len(accepted.plan.accepted))


#: Longest ``Idempotency-Key`` accepted.
MAX_IDEMPOTENCY_KEY = 255


def idempotency_key(request: Request) -> str | None:
    """The request's ``Idempotency-Key`` header, or None (the common case: no key)."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isascii() or not key.isprintable():
        raise ApiError(Code.INVALID_FIELD,
                       f"`Idempotency-Key` must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII "
                       "characters")
    return key


class Accepted(NamedTuple):
    """What ``accept_body`` accepted: the plan as answered (opted-out entries refused in
    place), the store's result, and when the push is to be sent (None: now)."""

    plan: PushPlan
    result: AcceptResult
    send_at: float | None


async def accept_body(store: Store, settings: Settings, limits: Limits, names: NameVerdicts,
                      project_id: int, channel: ChannelSpec, body: PushBody,
                      key: str | None = None) -> Accepted:
    """Plan ``body`` for ``channel`` and accept it: the push route's way, which ``pushgate
    send`` and ``POST /api/v2/push-csv`` take for each of their pushes. ``ApiError`` when no
    entry can be sent (its ``data`` lists why, entry by entry) or the balance is short. With
    ``key``, a push accepted under it before is answered again (``result.replayed``). A
    ``send_at`` (pushgate's own scheduling) is refused before any planning when wrong."""
    send_at = None if body.send_at is None else parse_send_at(
        body.send_at, time.time(), settings.max_schedule_seconds)
    plan = await plan_with_media_hosts(body, channel, limits, settings.allow_private_media,
                                       names)
    if not plan.accepted:
        error = plan.refusal_only_error()
        error.extra["data"] = entries(plan, [])
        raise error
    now = time.time()
    validity = settings.message_validity_seconds
    # Validity counts from when the push is to be sent: a scheduled one's from its send_at.
    start = starts_at(send_at, now)
    # Only a keyed push pays for its digest: the hot path (no key) computes nothing more.
    digest = None if key is None else plan_digest(
        plan, None if body.send_at is None else send_at_instant(body.send_at))
    try:
        result = await store.accept_push(project_id, channel, plan, now,
                                         start + validity if validity else None,
                                         send_at=send_at, idempotency_key=key,
                                         idempotency_digest=digest)
    except IdempotencyKeyReused as exc:
        raise ApiError(Code.IDEMPOTENCY_KEY_REUSED,
                       f"the idempotency key was used for push {exc.push_id}, with other "
                       "messages (numbers, texts or send_at); use a new key for a new "
                       "push") from None
    except InsufficientCredit as exc:
        raise short_of_credit("the push", exc) from None
    except AllOptedOut as exc:
        plan = without_opted_out(plan, exc.numbers)
        error = plan.refusal_only_error()
        error.extra["data"] = entries(plan, [])
        raise error from None
    if result.opted_out:
        plan = without_opted_out(plan, result.opted_out)
    if result.replayed and len(result.message_ids) != len(plan.accepted):
        # Not the push the key was first used for: its answer would pair other entries
        # with that push's message ids.
        raise ApiError(Code.IDEMPOTENCY_KEY_REUSED,
                       f"the idempotency key was used for push {result.push_id}, which "
                       f"accepted {len(result.message_ids)} entries, not {len(plan.accepted)}")
    return Accepted(plan, result, send_at)


def entries(plan: PushPlan, message_ids: list[int]) -> list[dict[str, Any]]:
    """The answer's ``data``: one item per request entry, in request order."""
    # Hot path (one dict per recipient). Each distinct credit is formatted once (a push's
    # entries mostly cost the same, push after push: ``credit_text``), rows are indexed
    # rather than star-unpacked, and when nothing was refused the accepted items are already
    # in request order (docs/benchmarks.md).
    accepted: list[dict[str, Any]] = []
    credit: int | None = None
    text = ""
    for row, msg_id in zip(plan.accepted, message_ids, strict=False):
        if row[ROW_CREDIT] != credit:
            credit = row[ROW_CREDIT]
            text = credit_text(credit)
        accepted.append({"msg_id": str(msg_id), "number": row[ROW_NUMBER], "credit": text})
    if not plan.refused:
        return accepted
    items: list[dict[str, Any] | None] = [None] * plan.total_entries
    for row, placed in zip(plan.accepted, accepted, strict=False):
        items[row[ROW_INDEX]] = placed
    id_of = {row[ROW_INDEX]: msg_id
             for row, msg_id in zip(plan.accepted, message_ids, strict=False)}
    for refusal in plan.refused:
        item: dict[str, Any] = {"number": refusal.number, "credit": "0",
                                "status": int(refusal.code), "message": refusal.message}
        if refusal.duplicate_of is not None and refusal.duplicate_of in id_of:
            item["duplicate_of"] = str(id_of[refusal.duplicate_of])
        items[refusal.index] = item
    return [item for item in items if item is not None]
