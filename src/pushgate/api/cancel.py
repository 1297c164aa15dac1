"""``POST /api/v2/push-cancel``: the messages of a push no channel has taken yet, cancelled and
refunded (Picky status 5).

pushgate's own endpoint, not Picky's (Picky's API has no cancel), so it answers only under
``/api/v2``, not at Picky's older base paths. ``pushgate push cancel`` answers the same
fields through ``cancel_push``.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from pushgate.api import openapi
from pushgate.api.answers import success
from pushgate.api.auth import authenticate, token_from
from pushgate.api.body import json_payload
from pushgate.api.routing import raw_post
from pushgate.api.state import gateway_of
from pushgate.core.errors import ApiError, Code
from pushgate.core.lifecycle import FINAL_STATES, State
from pushgate.core.pricing import format_credits
from pushgate.core.push import decode_token_body, parse_int_field
from pushgate.store.base import Store

router = APIRouter()

_SENT = (State.SUBMITTED, State.DELIVERED, State.READ)


@raw_post(router, "/api/v2/push-cancel", tags=["Push API"], openapi_extra=openapi.PUSH_CANCEL,
          summary="Cancel and refund the messages of a push not yet handed to a channel")
async def push_cancel(request: Request) -> Response:
    gateway = gateway_of(request)
    body = decode_token_body(await json_payload(request, gateway.settings.max_body_bytes))
    token = await authenticate(gateway.lookups, request, token_from(request, body.token))
    push_id = parse_int_field("push_id", body.push_id)
    answer = await cancel_push(gateway.store, token.project_id, push_id, time.time())
    if answer is None:
        # Another project's push answers as an unknown one: a token learns nothing of others.
        raise ApiError(Code.NOT_FOUND, f"no push {push_id} in this project")
    return success(**answer)


async def cancel_push(store: Store, project_id: int, push_id: int,
                      now: float) -> dict[str, Any] | None:
    """Cancel what is left of the push and say what became of each of its messages; None
    when the project has no such push. Nothing left to cancel is no error: ``cancelled``
    is 0."""
    if await store.get_push(project_id, push_id) is None:
        return None
    cancelled, refunded = await store.cancel_push(project_id, push_id, now)
    after = await store.get_push(project_id, push_id)
    assert after is not None
    counts = after.counts
    sent = sum(counts.get(state.value, 0) for state in _SENT)
    ended = sum(counts.get(state.value, 0) for state in FINAL_STATES if state not in _SENT)
    return {
        "push_id": push_id,
        "cancelled": cancelled,
        "refunded": format_credits(refunded),
        # Left alone: taken by a worker at this moment (their send's outcome decides) ...
        # (PostgreSQL: or being promoted from `scheduled` at this moment.)
        "in_flight": sum(counts.get(state.value, 0)
                         for state in (State.SENDING, State.QUEUED, State.SCHEDULED)),
        # ... already handed to the channel ...
        "sent": sent,
        # ... or ended before this call (failed, expired, cancelled earlier).
        "already_ended": ended - cancelled,
    }
