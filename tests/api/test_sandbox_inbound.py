"""Users write back: ``POST /api/v2/sandbox/inbound`` plays a user's message on the project's
sandbox channel, and it reaches the project's incoming webhook in Picky's shape, with the
webhook URL's custom variables merged in, through the same path as a real channel's provider
callback. The sender's profile name arrives from the WhatsApp channels that carry it (WAHA,
Evolution API, WhatsApp Cloud), each through its fake's documented webhook format."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_plus

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tests.fakes.server import serve_app

from pushgate.webhooks.signing import HEADER, verify

USER = "919876543210"


class IncomingReceiver:
    """The project's incoming webhook: keeps each POST's body, query and signature check."""

    def __init__(self) -> None:
        self.secret = ""
        self.posts: list[tuple[dict[str, Any], dict[str, str], bool]] = []
        self.lock = threading.Lock()
        self.app = Starlette(routes=[Route("/in", self.incoming, methods=["POST"])])

    async def incoming(self, request: Request) -> Response:
        body = await request.body()
        with self.lock:
            self.posts.append((orjson.loads(body), dict(request.query_params),
                               verify(self.secret, request.headers.get(HEADER, ""), body)))
        return Response(b"{}", media_type="application/json")

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.posts) >= count:
                    return [body for body, _, _ in self.posts]
            await asyncio.sleep(0.02)
        raise AssertionError(f"{len(self.posts)} of {count} incoming webhook POSTs arrived")


@pytest.fixture
def receiver() -> Iterator[tuple[IncomingReceiver, str]]:
    incoming = IncomingReceiver()
    with serve_app(incoming.app) as url:
        yield incoming, url


async def _project(make: Any, store: Any, receiver: IncomingReceiver, url: str,
                   query: str = "") -> tuple[Any, str]:
    project, token, secret = await make.project()
    receiver.secret = secret
    await store.set_incoming_webhook(project.id, f"{url}/in{query}")
    return project, token


async def test_a_sandbox_users_message_reaches_the_incoming_webhook_as_picky_sends_it(
        app_client: Any, make: Any, store: Any,
        receiver: tuple[IncomingReceiver, str]) -> None:
    incoming, url = receiver
    project, token = await _project(make, store, incoming, url,
                                    "?custom-variable=test&variable1=picky-newyork")
    channel = await make.channel(project.id, application=10)
    client, _ = await app_client(run_workers=True)

    answer = await client.post("/api/v2/sandbox/inbound", json={
        "token": token, "application": "10", "number": USER, "message": "Ravi is sick + late",
        "name": "Asha"})
    assert answer.status_code == 200
    reply = answer.json()
    assert (reply["status"], reply["message"], reply["channel_id"]) == (100, "Success",
                                                                        channel.id)
    photo = await client.post("/api/v2/sandbox/inbound", json={
        "token": token, "application": 10, "number": int(USER),
        "media": "https://cdn.example/meter.jpg"})
    assert photo.json()["status"] == 100

    first, second = await incoming.wait_for(2)
    assert first == {
        "custom-variable": "test", "variable1": "picky-newyork",
        "number": USER, "message-in": quote_plus("Ravi is sick + late"),
        "message_in_raw": "Ravi is sick + late", "type": 1, "application": "10",
        "unique-id": first["unique-id"], "project-id": str(project.id),
        "channel_id": channel.id, "provider_id": reply["provider_id"], "media-url": "",
        "direction": 0, "name": "Asha"}
    assert first["unique-id"].isdigit()
    assert second["type"] == 2 and second["media-url"] == "https://cdn.example/meter.jpg"
    assert second["message_in_raw"] == "" and "name" not in second
    assert second["custom-variable"] == "test"
    # The URL keeps its query too, and every POST is signed.
    assert all(query == {"custom-variable": "test", "variable1": "picky-newyork"} and signed
               for _, query, signed in incoming.posts)


async def test_custom_variables_never_pass_for_the_message_fields(
        app_client: Any, make: Any, store: Any,
        receiver: tuple[IncomingReceiver, str]) -> None:
    incoming, url = receiver
    project, token = await _project(make, store, incoming, url,
                                    "?number=000&message_in_raw=forged&shop=north")
    await make.channel(project.id, application=1)
    client, _ = await app_client(run_workers=True)
    answer = await client.post("/api/v2/sandbox/inbound", json={
        "token": token, "application": 1, "number": USER, "message": "hello"})
    assert answer.json()["status"] == 100
    [body] = await incoming.wait_for(1)
    assert (body["number"], body["message_in_raw"], body["shop"]) == (USER, "hello", "north")


async def test_sandbox_inbound_is_recorded_once_per_call_and_kept_without_a_webhook(
        app_client: Any, make: Any, store: Any) -> None:
    project, token, _ = await make.project()
    await make.channel(project.id, application=1)
    client, _ = await app_client()
    for _ in range(2):
        answer = await client.post("/api/v2/sandbox/inbound", json={
            "token": token, "application": 1, "number": USER, "message": "same words"})
        assert answer.json()["status"] == 100
    # No incoming webhook when they arrived: recorded, not forwarded (as for a provider's).
    await store.set_incoming_webhook(project.id, "http://127.0.0.1:9/in")
    assert await store.claim_inbound(10, time.time() + 1, 30) == []


@pytest.mark.parametrize(("body", "code", "words"), [
    ({"application": 1, "number": USER, "message": "hi"}, 401, "no token"),
    ({"token": "wrong", "application": 1, "number": USER, "message": "hi"}, 401, "unknown"),
    ({"number": USER, "message": "hi"}, 406, "`application` is required"),
    ({"application": "one", "number": USER, "message": "hi"}, 406, "`application`"),
    ({"application": 5, "number": USER, "message": "hi"}, 423, "no sandbox channel for"
                                                                " application 5"),
    ({"application": 8, "number": USER, "message": "hi"}, 423, "application 8"),
    ({"application": 1, "message": "hi"}, 201, "`number` is required"),
    ({"application": 1, "number": "+919876543210", "message": "hi"}, 201, "`number`"),
    ({"application": 1, "number": "0919876543210", "message": "hi"}, 201, "`number`"),
    ({"application": 1, "number": USER}, 202, "`message`"),
    ({"application": 1, "number": USER, "message": "  "}, 202, "`message`"),
    ({"application": 1, "number": USER, "message": "a\x00b"}, 209, "NUL"),
    ({"application": 1, "number": USER, "message": "x" * 5000}, 203, "5000 characters"),
    ({"application": 1, "number": USER, "media": "ftp://cdn.example/a.jpg"}, 206, "`media`"),
    ({"application": 1, "number": USER, "message": "hi", "media": 7}, 406, "media"),
    ({"application": 1, "number": USER, "message": ["hi"]}, 406, "message"),
    ({"application": 1, "number": USER, "message": "hi", "name": "n" * 300}, 406, "`name`"),
])
async def test_every_field_is_checked_with_its_own_code(
        app_client: Any, make: Any, body: dict[str, Any], code: int, words: str) -> None:
    project, token, _ = await make.project()
    await make.channel(project.id, application=1)
    # Application 8 is served, but by a real channel: its users write through its provider.
    await make.channel(project.id, application=8, kind="whatsapp_cloud",
                       config={"phone_number_id": "1", "access_token": "t", "app_secret": "s",
                               "verify_token": "v"})
    client, _ = await app_client()
    sent = body if "token" in body or words == "no token" else {"token": token, **body}
    answer = await client.post("/api/v2/sandbox/inbound", json=sent)
    reply = answer.json()
    assert set(reply) == {"status", "message"}
    assert reply["status"] == code and words in reply["message"], reply


async def test_malformed_bodies_and_other_base_paths(app_client: Any, make: Any) -> None:
    project, token, _ = await make.project()
    await make.channel(project.id, application=1)
    client, _ = await app_client()
    answer = await client.post("/api/v2/sandbox/inbound", content=b"{not json",
                               headers={"Content-Type": "application/json"})
    assert answer.json()["status"] == 400
    answer = await client.post("/api/v2/sandbox/inbound", json=[1])
    assert answer.json()["status"] == 400
    # pushgate's own endpoint: not at Picky's older base path (no Picky client sends it).
    answer = await client.post("/app/api/v2/sandbox/inbound", json={
        "token": token, "application": 1, "number": USER, "message": "hi"})
    assert answer.json()["status"] == 404


async def test_profile_names_from_waha_evolution_and_cloud_reach_the_incoming_webhook(
        app_client: Any, make: Any, store: Any,
        receiver: tuple[IncomingReceiver, str]) -> None:
    from tests.fakes.evolution import FakeEvolution
    from tests.fakes.graph_api import GraphFake
    from tests.fakes.waha import FakeWaha

    incoming, url = receiver
    project, _ = await _project(make, store, incoming, url, "?custom-variable=crm")
    waha, evolution, graph = FakeWaha(), FakeEvolution(), GraphFake()
    waha.webhook_hmac_key = "waha-hmac"
    waha_channel = await make.channel(
        project.id, application=10, kind="waha",
        config={"base_url": "http://127.0.0.1:9", "api_key": waha.api_key,
                "webhook_hmac_key": "waha-hmac"})
    evolution_channel = await make.channel(
        project.id, application=10, kind="evolution",
        config={"base_url": "http://127.0.0.1:9", "api_key": evolution.api_key,
                "instance": evolution.instance, "webhook_token": "evo-hook"})
    cloud_channel = await make.channel(
        project.id, application=8, kind="whatsapp_cloud",
        config={"phone_number_id": graph.phone_number_id, "access_token": graph.access_token,
                "app_secret": graph.app_secret, "verify_token": "v"})
    client, _ = await app_client(run_workers=True)

    event = waha.message_event(f"{USER}@c.us", "from waha", push_name="Ravi Kumar")
    body = orjson.dumps(event)
    answer = await client.post(f"/channels/{waha_channel.id}/callback", content=body,
                               headers=waha.signed_headers(event, body))
    assert answer.status_code == 200
    upsert = evolution.upsert_event("5511999999999", text="from evolution", push_name="Maria")
    answer = await client.post(f"/channels/{evolution_channel.id}/callback?token=evo-hook",
                               content=orjson.dumps(upsert),
                               headers={"Content-Type": "application/json"})
    assert answer.status_code == 200
    delivery = graph.delivery(graph.inbound_payload(
        "15551234567", {"type": "text", "text": {"body": "from cloud"}}, name="Ana"))
    answer = await client.post(f"/channels/{cloud_channel.id}/callback",
                               content=delivery.body, headers=delivery.headers)
    assert answer.status_code == 200

    bodies = {b["message_in_raw"]: b for b in await incoming.wait_for(3)}
    expected = {"from waha": ("Ravi Kumar", USER, "10", waha_channel.id),
                "from evolution": ("Maria", "5511999999999", "10", evolution_channel.id),
                "from cloud": ("Ana", "15551234567", "8", cloud_channel.id)}
    for text, (name, number, application, channel_id) in expected.items():
        body = bodies[text]
        assert (body["name"], body["number"], body["application"], body["channel_id"]) == (
            name, number, application, channel_id)
        assert body["custom-variable"] == "crm" and body["direction"] == 0
        assert body["type"] == 1 and body["project-id"] == str(project.id)


async def test_sandbox_inbound_counts_with_the_tokens_pushes(app_client: Any, make: Any) -> None:
    project, token, _ = await make.project()
    await make.channel(project.id, application=1)
    client, _ = await app_client(push_rate_per_minute=2)
    body = {"token": token, "application": 1, "number": USER, "message": "hi"}
    assert (await client.post("/api/v2/sandbox/inbound", json=body)).json()["status"] == 100
    push = await client.post("/api/v2/push", json={"token": token, "application": 1,
                                                    "globalmessage": "hi",
                                                    "data": [{"number": USER}]})
    assert push.json()["status"] == 100
    refused = await client.post("/api/v2/sandbox/inbound", json=body)
    assert refused.json()["status"] == 429 and refused.headers.get("Retry-After")
