"""The deliverer checks a webhook's address at every send: a non-public target (unless
allowed) or a non-http(s) URL is a failed attempt, logged with its reason and retried on the
schedule, and the POST goes to the address that was checked, never to a second DNS answer."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tests.fakes.server import serve_app
from tests.store.contract.test_store_outbox import queue, send

from pushgate.core.models import InboundMessage
from pushgate.webhooks.deliverer import WebhookDeliverer


class Receiver:
    def __init__(self) -> None:
        self.posts: list[tuple[str, bytes]] = []   # (Host header, body)
        self.app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        self.posts.append((request.headers["host"], await request.body()))
        return Response("ok")


def _deliverer(store: Any, allow_private: bool) -> WebhookDeliverer:
    return WebhookDeliverer(store, "w", timeout=5, schedule=[60.0], allow_private=allow_private)


async def _fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> list[str]:
    asked: list[str] = []

    async def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in answers[host]]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    return asked


async def _inbound(store: Any, channel_id: int) -> None:
    await store.record_inbound([InboundMessage(
        channel_id=channel_id, number="919876543210", text="hello", provider_id="in-1",
        at=time.time(), type=1)], time.time())


async def test_event_webhook_on_loopback_is_refused_by_default_and_retried(
        store: Any, make: Any, query: Any, caplog: pytest.LogCaptureFixture) -> None:
    receiver = Receiver()
    with serve_app(receiver.app) as url:
        project, _, _ = await make.project(webhook_url=f"{url}/hook")
        channel = await make.channel(project.id)
        now = time.time()
        await queue(store, channel, 2, now)
        await send(store, channel, now)   # two "submitted" reports in the outbox
        deliverer = _deliverer(store, allow_private=False)
        try:
            with caplog.at_level(logging.WARNING, "pushgate.webhooks"):
                assert await deliverer.deliver_once() == 2
            assert receiver.posts == []
            # Not lost: both reports wait for their next try, one attempt counted.
            assert query("SELECT attempts, dead FROM outbox ORDER BY id") == [(1, 0), (1, 0)]
            assert "non-public address 127.0.0.1" in caplog.text
            assert "PUSHGATE_ALLOW_PRIVATE_WEBHOOKS" in caplog.text
        finally:
            await deliverer.client.aclose()


async def test_incoming_webhook_resolving_to_a_private_address_is_refused(
        store: Any, make: Any, query: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    asked = await _fake_dns(monkeypatch, {"hooks.example": ["93.184.216.34", "10.0.0.7"]})
    project, _, _ = await make.project()
    channel = await make.channel(project.id, application=10)
    await store.set_incoming_webhook(project.id, "https://hooks.example/in")
    await _inbound(store, channel.id)
    deliverer = _deliverer(store, allow_private=False)
    try:
        with caplog.at_level(logging.WARNING, "pushgate.webhooks"):
            assert await deliverer.deliver_once() == 1
    finally:
        await deliverer.client.aclose()
    assert asked == ["hooks.example"]
    assert "non-public address 10.0.0.7" in caplog.text
    assert query("SELECT forward_attempts FROM inbound_messages") == [(1,)]


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/in", "file:///etc/passwd", "gopher://x/"])
async def test_a_non_http_webhook_is_refused_even_when_private_targets_are_allowed(
        store: Any, make: Any, query: Any, url: str, caplog: pytest.LogCaptureFixture) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id, application=10)
    await store.set_incoming_webhook(project.id, url)
    await _inbound(store, channel.id)
    deliverer = _deliverer(store, allow_private=True)
    try:
        with caplog.at_level(logging.WARNING, "pushgate.webhooks"):
            assert await deliverer.deliver_once() == 1
    finally:
        await deliverer.client.aclose()
    assert "not an http(s) URL" in caplog.text
    assert query("SELECT forward_attempts FROM inbound_messages") == [(1,)]


async def test_the_post_goes_to_the_checked_address_with_the_name_as_host(
        store: Any, make: Any, query: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``hooks.example`` exists only in the fake DNS: the POST reaching the receiver proves it
    went to the address the check saw, not to a name httpx resolved again."""
    receiver = Receiver()
    with serve_app(receiver.app) as url:
        port = int(url.rsplit(":", 1)[1])
        asked = await _fake_dns(monkeypatch, {"hooks.example": ["127.0.0.1"]})
        project, _, _ = await make.project()
        channel = await make.channel(project.id, application=10)
        await store.set_incoming_webhook(project.id, f"http://hooks.example:{port}/hook")
        await _inbound(store, channel.id)
        deliverer = _deliverer(store, allow_private=True)
        try:
            assert await deliverer.deliver_once() == 1
        finally:
            await deliverer.client.aclose()
    assert asked == ["hooks.example"]
    [(host, body)] = receiver.posts
    assert host == f"hooks.example:{port}"
    assert b"hello" in body
    assert query("SELECT forward_at FROM inbound_messages") == [(None,)]   # done
