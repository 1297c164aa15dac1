"""Users' STOP / START keywords, after the store applied them: the confirmation answered to the
user, and Picky's event 4 body for the project's event webhook.

The confirmation goes out as an instant reply does (``plan_push`` and ``store.accept_reply``),
flagged ``confirmation``: the answer to the STOP the user just wrote is the one message an
opted-out number may get. It is tried once, when the event is first claimed; a webhook that
fails and is retried does not send it again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import orjson

from pushgate.core.models import AcceptResult
from pushgate.core.optouts import EVENT_SUBSCRIBER, OptoutEvent, event_payload
from pushgate.core.push import Limits, MediaHosts, PushBody, PushEntry, plan_push
from pushgate.store.base import Store

log = logging.getLogger("pushgate.webhooks")


def optouts_body(project_id: int, events: Sequence[OptoutEvent]) -> bytes:
    """Picky's event webhook body for users' keywords: ``event_id`` 4."""
    return orjson.dumps({"project_id": project_id, "event_id": EVENT_SUBSCRIBER,
                         "data": [event_payload(e) for e in events]})


async def confirm(store: Store, event: OptoutEvent,
                  validity: float | None) -> AcceptResult | None:
    """The project's confirmation for ``event`` queued to its number (None: none to send, or
    it could not go: a log line says why, nothing is retried)."""
    ids = {"project_id": event.project_id, "channel_id": event.channel_id}
    if event.reply is None or event.attempts:
        return None
    try:
        channel = await store.get_channel(event.channel_id)
        if channel is None or channel.project_id != event.project_id:
            return None
        plan = plan_push(PushBody(data=[PushEntry(number=event.number, message=event.reply)]),
                         channel, Limits(max_recipients=1), MediaHosts())
        if not plan.accepted:
            log.warning("%s confirmation to %s refused: %s", event.action, event.number,
                        plan.refused[0].message, extra=ids)
            return None
        now = time.time()
        return await store.accept_reply(event.project_id, channel, plan, event.number, now,
                                        now + validity if validity else None, now,
                                        confirmation=True)
    except Exception as exc:   # short of credit, the store away: the event still goes
        log.warning("%s confirmation to %s not sent: %s: %s", event.action, event.number,
                    type(exc).__name__, exc, extra=ids)
        return None
