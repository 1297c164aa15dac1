"""Instant replies: the incoming webhook's answer sent back to the user who wrote.

The answer is read (``core/instant_reply.py``) as a push to that number on the channel the
message came in on, planned by ``plan_push`` and taken by the store's ``accept_reply``, the
push's own transaction plus the loop guard: it is validated, charged, queued, dispatched and
reported exactly like a pushed message, with a push id. Whatever keeps a reply from going
(no reply in the answer, a faulty answer, a refused text, short credit, the loop guard, the
store away) is one log line and never a retry of the webhook: the webhook was delivered.
"""

from __future__ import annotations

import logging
import time
from collections import ChainMap
from collections.abc import MutableMapping
from typing import cast

from pushgate.core.channels import ChannelSpec
from pushgate.core.errors import ApiError
from pushgate.core.instant_reply import MAX_REPLY_MESSAGES, NoReply, reply_push
from pushgate.core.models import AcceptResult, InboundForward
from pushgate.core.pricing import format_credits
from pushgate.core.push import Limits, MediaHosts, PushBody, PushPlan, plan_push
from pushgate.outbound import NameVerdicts
from pushgate.store.base import Store
from pushgate.store.errors import AllOptedOut, InsufficientCredit

log = logging.getLogger("pushgate.webhooks")


class InstantReplies:
    def __init__(self, store: Store, max_bytes: int, interval: float,
                 validity: float | None, allow_private_media: bool,
                 names: NameVerdicts | None = None) -> None:
        self.store = store
        self.max_bytes = max_bytes   # 0: instant replies are off
        self.interval = interval
        self.validity = validity
        self.allow_private_media = allow_private_media
        self.names = names or NameVerdicts()
        self.limits = Limits(max_recipients=MAX_REPLY_MESSAGES)

    async def answer(self, item: InboundForward, answer: bytes) -> AcceptResult | None:
        """Send the reply ``answer`` carries, if any; never raises for a reply not sent."""
        ids = {"project_id": item.project_id, "channel_id": item.message.channel_id}
        number = item.message.number
        try:
            body = reply_push(answer, number)
        except NoReply as no:
            log.log(logging.WARNING if no.faulty else logging.INFO,
                    "no instant reply to %s from the incoming webhook of project %s: %s",
                    number, item.project_id, no.reason, extra=ids)
            return None
        try:
            return await self._send(item, body, ids)
        except ApiError as exc:
            log.warning("instant reply to %s refused: %s (%s)", number, exc.message,
                        int(exc.code), extra=ids)
        except AllOptedOut:
            log.info("instant reply to %s not sent: the number has opted out", number,
                     extra=ids)
        except InsufficientCredit as exc:
            log.warning("instant reply to %s not sent: it costs %s, the balance is %s",
                        number, format_credits(exc.needed_micro),
                        format_credits(exc.balance_micro), extra=ids)
        except Exception as exc:   # the store away, a bug: the webhook stays delivered
            log.warning("instant reply to %s not sent: %s: %s", number, type(exc).__name__,
                        exc, extra=ids)
        return None

    async def _send(self, item: InboundForward, body: PushBody,
                    ids: dict[str, int]) -> AcceptResult | None:
        number = item.message.number
        channel = await self.store.get_channel(item.message.channel_id)
        if channel is None or channel.project_id != item.project_id:
            log.warning("instant reply to %s not sent: its channel is gone", number, extra=ids)
            return None
        plan = await self._plan(body, channel)
        if not plan.accepted:   # every entry refused: the first says why
            refusal = plan.refused[0]
            raise ApiError(refusal.code, refusal.message)
        now = time.time()
        result = await self.store.accept_reply(
            item.project_id, channel, plan, number, now,
            now + self.validity if self.validity else None, now - self.interval)
        if result is None:
            log.info("instant reply to %s not sent: one was sent less than %gs ago",
                     number, self.interval, extra=ids)
            return None
        log.info("instant reply to %s accepted as push %s, messages: %d", number,
                 result.push_id, len(result.message_ids),
                 extra={**ids, "push_id": result.push_id})
        return result

    async def _plan(self, body: PushBody, channel: ChannelSpec) -> PushPlan:
        """``plan_push`` with the media host check of the push route: names the plan could
        not judge are resolved, then planned again."""
        known = self.names.known()
        plan = plan_push(body, channel, self.limits, MediaHosts(self.allow_private_media, known))
        if not plan.media_hosts_to_resolve:
            return plan
        judged: dict[str, str | None] = await self.names.judge(plan.media_hosts_to_resolve)
        return plan_push(body, channel, self.limits, MediaHosts(
            self.allow_private_media,
            ChainMap(judged, cast(MutableMapping[str, str | None], known))))
