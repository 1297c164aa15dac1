"""Delivering the outbox: one signed POST per project batch, retried on a schedule.

Reports are rows in ``outbox`` written in the same transaction as the state change they report,
so none is lost if a process dies; a claimed batch comes back after its lease if the deliverer
dies mid-POST (the receiver may then see a report twice — reports are idempotent by
``msg_id`` + ``state``).

Inbound user messages go the same way to the project's incoming webhook (Picky's global
webhook): one signed POST per message, in Picky's shape, with the same retry schedule
(``unique-id`` makes a repeat recognisable).

Webhook URLs are checked when set (``pushgate project webhook``), and again at every send: the
host is resolved, refused if any address is not public (unless ``allow_private``,
``PUSHGATE_ALLOW_PRIVATE_WEBHOOKS``), and the POST goes to the vetted address itself
(``pushgate.outbound``), so a DNS answer changed since cannot turn a webhook into a request to
the gateway's own network. A refused target is a failed attempt like any other: logged with
its reason and retried on the schedule (the operator may fix the URL or its DNS meanwhile).
Redirects are not followed, and proxies from the environment are not used (they would
connect from elsewhere than the addresses vouched for).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import httpx
import orjson

from pushgate.core.models import InboundForward, OutboxBatch
from pushgate.outbound import AddressRefused, default_port, resolve_public, send_pinned
from pushgate.store.base import Store
from pushgate.webhooks.signing import HEADER, sign

log = logging.getLogger("pushgate.webhooks")

EVENT_DELIVERY_REPORT = 1


def render(batch: OutboxBatch) -> bytes:
    return orjson.dumps({
        "project_id": batch.project_id,
        "event_id": EVENT_DELIVERY_REPORT,
        "data": [item.payload for item in batch.items],
    })


class WebhookDeliverer:
    def __init__(
        self,
        store: Store,
        worker_id: str,
        timeout: float,
        schedule: list[float],
        batch_size: int = 500,
        idle_poll: float = 0.2,
        wake: asyncio.Event | None = None,
        allow_private: bool = False,
    ) -> None:
        self.store = store
        self.worker_id = worker_id
        self.timeout = timeout
        self.schedule = schedule
        self.batch_size = batch_size
        self.idle_poll = idle_poll
        self.wake = wake or asyncio.Event()
        self.allow_private = allow_private
        self._stopping = asyncio.Event()
        self.client = httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False)

    async def run(self) -> None:
        try:
            while not self._stopping.is_set():
                delivered = await self.deliver_once()
                if not delivered:
                    await self._idle()
        finally:
            await self.client.aclose()

    def stop(self) -> None:
        self._stopping.set()
        self.wake.set()

    async def _idle(self) -> None:
        self.wake.clear()
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.idle_poll):
                await self.wake.wait()

    async def deliver_once(self) -> int:
        """Claim what is due, POST it, record the outcome; returns the items handled."""
        now = time.time()
        batches = await self.store.claim_outbox(
            self.worker_id, self.batch_size, now, lease_seconds=self.timeout + 30)
        inbound = await self.store.claim_inbound(self.batch_size, now, self.timeout + 30)
        if not batches and not inbound:
            return 0
        await asyncio.gather(*(self._post(batch) for batch in batches),
                             *(self._forward(item) for item in inbound))
        return sum(len(b.items) for b in batches) + len(inbound)

    async def _forward(self, item: InboundForward) -> None:
        if not item.url:   # the project removed its incoming webhook since
            await self.store.complete_inbound([item.id])
            return
        body = orjson.dumps(item.payload)
        ok, reason = await self._send(item.url, item.secret, body)
        if ok:
            await self.store.complete_inbound([item.id])
        else:
            log.warning("incoming webhook of project %s failed (%s); will retry",
                        item.project_id, reason)
            await self.store.retry_inbound([item.id], time.time(), self.schedule)

    async def _send(self, url: str, secret: str, body: bytes) -> tuple[bool, str]:
        headers = {"Content-Type": "application/json", HEADER: sign(secret, body),
                   "User-Agent": "pushgate-webhook/1"}
        try:
            target = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            return False, f"invalid webhook URL: {exc}"
        if target.scheme not in ("http", "https") or not target.raw_host:
            return False, f"webhook URL {url!r} is not an http(s) URL"
        try:
            addresses = await resolve_public(target.raw_host.decode("ascii"),
                                             default_port(target), self.allow_private)
            response = await send_pinned(self.client, "POST", target, addresses, self.timeout,
                                         headers=headers, content=body)
        except AddressRefused as exc:
            hint = "" if exc.retryable else " (PUSHGATE_ALLOW_PRIVATE_WEBHOOKS=true allows it)"
            return False, f"target refused: {exc.reason}{hint}"
        except httpx.HTTPError as exc:
            return False, f"{type(exc).__name__}: {exc}"
        return 200 <= response.status_code < 300, f"HTTP {response.status_code}"

    async def _post(self, batch: OutboxBatch) -> None:
        body = render(batch)
        ids = [item.id for item in batch.items]
        ok, reason = await self._send(batch.url, batch.secret, body)
        if ok:
            await self.store.complete_outbox(ids)
        else:
            log.warning("webhook to project %s failed (%s); %d reports will be retried",
                        batch.project_id, reason, len(ids))
            await self.store.retry_outbox(ids, time.time(), self.schedule)
