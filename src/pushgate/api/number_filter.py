"""Picky's WhatsApp number filter: ``POST /api/v2/push`` with ``action: 1`` (``api/push.py``
hands it here). Nothing is sent; each number becomes a queued check (``core/checks.py``)
charged the channel's ``check_price``, and the answers reach the event webhook as event 2."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from pushgate.api.answers import accepted_answer, short_of_credit
from pushgate.api.state import Gateway
from pushgate.core.channels import ChannelSpec
from pushgate.core.checks import CheckPlan, plan_checks
from pushgate.core.pricing import format_credits
from pushgate.core.push import PushBody
from pushgate.store.errors import InsufficientCredit


async def number_filter(gateway: Gateway, project_id: int, channel: ChannelSpec,
                        body: PushBody, now: float) -> Response:
    plan = plan_checks(body, channel, gateway.limits)
    if not plan.accepted:
        error = plan.refusal_only_error()
        error.extra["data"] = entries(plan, [])
        raise error
    try:
        result = await gateway.store.accept_checks(project_id, channel, plan, now)
    except InsufficientCredit as exc:
        raise short_of_credit("the number filter", exc) from None
    gateway.queued(channel.id)
    return accepted_answer(result.push_id, entries(plan, result.message_ids), len(plan.accepted),
                           len(plan.refused), plan.credit_total, result.balance_micro)


def entries(plan: CheckPlan, check_ids: list[int]) -> list[dict[str, Any]]:
    """One item per request entry, in request order: an accepted number with its check id as
    ``msg_id`` and Picky's ``status`` "0" (not checked yet); a refused one with its code."""
    credit = format_credits(plan.price_micro)
    items: list[dict[str, Any] | None] = [None] * plan.total_entries
    for (index, number), check_id in zip(plan.accepted, check_ids, strict=False):
        items[index] = {"msg_id": str(check_id), "number": number, "credit": credit,
                        "status": "0"}
    id_of = {index: check_id
             for (index, _number), check_id in zip(plan.accepted, check_ids, strict=False)}
    for refusal in plan.refused:
        item: dict[str, Any] = {"number": refusal.number, "credit": "0",
                                "status": int(refusal.code), "message": refusal.message}
        if refusal.duplicate_of in id_of:
            item["duplicate_of"] = str(id_of[refusal.duplicate_of])
        items[refusal.index] = item
    return [item for item in items if item is not None]
