"""Inbound user messages reach the project's incoming webhook: one signed POST each, in Picky's
global-webhook shape, retried on the schedule when the receiver fails."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tests.fakes.server import serve_app

from pushgate.core.models import InboundMessage
from pushgate.webhooks.deliverer import WebhookDeliverer
from pushgate.webhooks.signing import HEADER, verify


class Receiver:
    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.posts: list[tuple[dict[str, Any], bool]] = []
        self.secret = ""
        self.app = Starlette(routes=[Route("/in", self.incoming, methods=["POST"])])

    async def incoming(self, request: Request) -> Response:
        body = await request.body()
        self.posts.append((orjson.loads(body),
                           verify(self.secret, request.headers.get(HEADER, ""), body)))
        if len(self.posts) <= self.fail_first:
            return Response(status_code=500)
        return Response(b"{}", media_type="application/json")


async def test_inbound_message_is_forwarded_signed_in_picky_shape(store: Any, make: Any) -> None:
    project, _, secret = await make.project()
    channel = await make.channel(project.id, application=10)
    receiver = Receiver(fail_first=1)
    receiver.secret = secret
    with serve_app(receiver.app) as url:
        await store.set_incoming_webhook(project.id, f"{url}/in")
        await store.record_inbound([InboundMessage(
            channel_id=channel.id, number="919876543210", text="Ravi is sick today",
            provider_id="in-1", at=time.time(), type=1, name="Asha")], time.time())
        deliverer = WebhookDeliverer(store, "w", timeout=5, schedule=[0.0, 0.0],
                                     allow_private=True)   # the receiver is on 127.0.0.1
        try:
            assert await deliverer.deliver_once() == 1     # answered 500: retried
            assert await deliverer.deliver_once() == 1     # then 200
            assert await deliverer.deliver_once() == 0     # done, nothing left
        finally:
            await deliverer.client.aclose()
    [(first, signed), (second, _)] = receiver.posts
    assert signed and first == second
    assert first["number"] == "919876543210"
    assert first["message-in"] == "Ravi+is+sick+today"
    assert first["message_in_raw"] == "Ravi is sick today"
    assert first["application"] == "10"
    assert first["project-id"] == str(project.id)
    assert first["type"] == 1 and first["name"] == "Asha"
    assert first["unique-id"].isdigit()


async def test_one_users_messages_are_forwarded_in_order_others_side_by_side(
    store: Any, make: Any
) -> None:
    """Claimed together, a user's messages go out one after another, oldest first, even
    when the receiver is slow with the first; another user's does not wait for them."""
    project, _, _ = await make.project()
    channel = await make.channel(project.id, application=10)
    arrived: list[str] = []

    async def incoming(request: Request) -> Response:
        text = orjson.loads(await request.body())["message_in_raw"]
        if text == "first":
            await asyncio.sleep(0.3)
        arrived.append(text)
        return Response(b"{}", media_type="application/json")

    with serve_app(Starlette(routes=[Route("/in", incoming, methods=["POST"])])) as url:
        await store.set_incoming_webhook(project.id, f"{url}/in")
        now = time.time()
        await store.record_inbound([
            InboundMessage(channel_id=channel.id, number=number, text=text,
                           provider_id=f"in-{i}", at=now, type=1)
            for i, (number, text) in enumerate([("919876543210", "first"),
                                                ("919876543210", "second"),
                                                ("919811111111", "other user")])], now)
        deliverer = WebhookDeliverer(store, "w", timeout=5, schedule=[0.0],
                                     allow_private=True)
        try:
            assert await deliverer.deliver_once() == 3
        finally:
            await deliverer.client.aclose()
    assert arrived == ["other user", "first", "second"]
