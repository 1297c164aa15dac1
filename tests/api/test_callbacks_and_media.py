"""The provider-facing routes: per-channel callbacks (verified by the connector, recorded,
answered as the provider expects) and inline media by signed, expiring link."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from pushgate.channels.base import (
    CallbackRejected,
    CallbackRequest,
    CallbackResult,
    Channel,
    register,
)
from pushgate.channels.media import sign_media_url
from pushgate.core.lifecycle import State
from pushgate.core.models import InboundMessage, OutboundMessage, SendResult, StatusUpdate
from pushgate.core.policy import RetryPolicy
from pushgate.webhooks.payloads import inbound_payload

PNG = b"\x89PNG\r\n\x1a\n" + b"1" * 32


@register
class EchoCallbackChannel(Channel):
    """Accepts callbacks carrying ``X-Test-Key: good``; a JSON body lists status updates."""

    kind = "test-callbacks"
    seen: list[CallbackRequest] = []

    async def send(self, message: OutboundMessage) -> SendResult:
        return SendResult.sent(message.id, f"p-{message.id}")

    async def handle_callback(self, request: CallbackRequest) -> CallbackResult:
        type(self).seen.append(request)
        if request.headers.get("x-test-key") != "good":
            raise CallbackRejected(401, "bad signature")
        if request.method == "GET":
            return CallbackResult(body=request.query.get("challenge", "").encode())
        body = json.loads(request.body)
        return CallbackResult(
            status_code=202, body=b'{"ok":true}', content_type="application/json",
            updates=[StatusUpdate(state=State(s["state"]), at=time.time(),
                                  provider_id=s["id"], channel_id=999) for s in body["statuses"]],
            inbound=[InboundMessage(channel_id=999, number=m["from"], text=m["text"],
                                    provider_id=m["id"], at=time.time())
                     for m in body.get("messages", [])])


async def test_callback_updates_messages_and_stores_inbound(app_client: Any, make: Any,
                                                           store: Any) -> None:
    client, gateway = await app_client(public_url="https://gw.example")
    project, token, _ = await make.project()
    channel = await make.channel(project.id, kind="test-callbacks")
    answer = await client.post("/api/v2/push", json={
        "token": token, "application": channel.application, "globalmessage": "hi",
        "data": [{"number": "919876543210"}]})
    mid = int(answer.json()["data"][0]["msg_id"])
    [claimed] = await store.claim_messages(channel.id, "w", 1, time.time(), 30)
    await store.record_outcomes("w", [SendResult.sent(claimed.id, "p-1")],
                                time.time(), RetryPolicy())
    body = {"statuses": [{"id": "p-1", "state": "read"}, {"id": "p-1", "state": "delivered"}],
            "messages": [{"from": "919876543210", "text": "thanks", "id": "in-1"}]}
    response = await client.post(f"/channels/{channel.id}/callback/status?x=1", json=body,
                                 headers={"X-Test-Key": "good"})
    assert (response.status_code, response.json()) == (202, {"ok": True})
    request = EchoCallbackChannel.seen[-1]
    assert request.url == f"https://gw.example/channels/{channel.id}/callback/status?x=1"
    assert request.sub_path == "status"
    message = await store.get_message(project.id, mid)
    assert message.state == "read"          # the late "delivered" did not move it back
    await store.set_incoming_webhook(project.id, "http://127.0.0.1:9/in")
    # The repeat changes nothing and stores the inbound message once.
    await client.post(f"/channels/{channel.id}/callback", json=body,
                      headers={"X-Test-Key": "good"})
    [forward] = await store.claim_inbound(10, time.time() + 1, 30) or [None]
    assert forward is None   # recorded before the incoming webhook existed: not forwarded


async def test_rejected_callback_changes_nothing(app_client: Any, make: Any,
                                                 store: Any) -> None:
    client, _ = await app_client()
    project, _, _ = await make.project()
    channel = await make.channel(project.id, kind="test-callbacks")
    response = await client.post(
        f"/channels/{channel.id}/callback",
        json={"statuses": [], "messages": [{"from": "919876543210", "text": "x", "id": "i"}]},
        headers={"X-Test-Key": "forged"})
    assert (response.status_code, response.text) == (401, "bad signature")
    await store.set_incoming_webhook(project.id, "http://127.0.0.1:9/in")
    assert await store.record_inbound([InboundMessage(
        channel_id=channel.id, number="919876543210", text="x", provider_id="i",
        at=time.time())], time.time()) == 1    # "i" was never stored by the forged call


async def test_get_handshake_and_unknown_channels(app_client: Any, make: Any) -> None:
    client, _ = await app_client()
    project, _, _ = await make.project()
    channel = await make.channel(project.id, kind="test-callbacks")
    response = await client.get(f"/channels/{channel.id}/callback?challenge=42",
                                headers={"X-Test-Key": "good"})
    assert (response.status_code, response.text) == (200, "42")
    assert (await client.post("/channels/987654/callback")).status_code == 404
    sandbox = await make.channel(project.id, application=2)
    response = await client.post(f"/channels/{sandbox.id}/callback", content=b"{}")
    assert response.status_code == 404
    assert "takes no callbacks" in response.text


async def test_inline_media_is_served_by_signed_link_only(app_client: Any, make: Any,
                                                          store: Any) -> None:
    client, gateway = await app_client(secret_key="k" * 32)
    project, token, _ = await make.project()
    channel = await make.channel(project.id)
    answer = await client.post("/api/v2/push", json={
        "token": token, "application": channel.application, "globalmessage": "see",
        "globalmedia_code": base64.b64encode(PNG).decode(),
        "data": [{"number": "919876543210"}]})
    assert answer.json()["status"] == 100
    [claimed] = await store.claim_messages(channel.id, "w", 1, time.time(), 30)
    assert claimed.media_url is None and claimed.media_id is not None
    media_id = claimed.media_id
    link = sign_media_url(gateway.env, media_id, int(time.time()) + 60)
    path = link.split("://", 1)[1].split("/", 1)[1]
    response = await client.get(f"/{path}")
    assert (response.status_code, response.headers["content-type"], response.content) == (
        200, "image/png", PNG)
    assert (await client.get(f"/media/{media_id}")).status_code == 403
    expired = sign_media_url(gateway.env, media_id, int(time.time()) - 1)
    assert (await client.get("/" + expired.split("/", 3)[3])).status_code == 403
    other = sign_media_url(gateway.env, media_id + 1, int(time.time()) + 60)
    assert (await client.get("/" + other.split("/", 3)[3])).status_code == 404


async def test_a_users_whatsapp_media_reaches_the_incoming_webhook_as_a_working_link(
        app_client: Any, make: Any, store: Any) -> None:
    from urllib.parse import urlsplit

    from tests.fakes.graph_api import GraphFake
    from tests.fakes.server import serve_app

    fake = GraphFake()
    photo = b"\xff\xd8\xff" + b"x" * 2048
    media_id = fake.add_media(photo, "image/jpeg")
    with serve_app(fake.app) as graph_url:
        client, _ = await app_client(allow_private_media=True, public_url="http://gw.test")
        project, _, _ = await make.project()
        await store.set_incoming_webhook(project.id, "http://127.0.0.1:9/in")
        channel = await make.channel(project.id, application=101, kind="whatsapp_cloud",
                                     config={"phone_number_id": fake.phone_number_id,
                                             "access_token": fake.access_token,
                                             "app_secret": fake.app_secret,
                                             "verify_token": "v", "graph_base_url": graph_url})
        delivery = fake.delivery(fake.inbound_payload("919876543210", {
            "type": "image", "image": {"id": media_id, "mime_type": "image/jpeg",
                                       "caption": "meter reading"}}))
        answer = await client.post(f"/channels/{channel.id}/callback", content=delivery.body,
                                   headers=delivery.headers)
        assert answer.status_code == 200
        [forward] = await store.claim_inbound(10, time.time(), 30)
        assert inbound_payload(forward.message)["type"] == 2
        assert inbound_payload(forward.message)["message_in_raw"] == "meter reading"
        link = urlsplit(inbound_payload(forward.message)["media-url"])
        assert link.netloc == "gw.test"
        got = await client.get(f"{link.path}?{link.query}")
        assert (got.status_code, got.headers["content-type"], got.content) == (
            200, "image/jpeg", photo)
        forged = await client.get(f"{link.path}?{link.query.replace('sig=', 'sig=x')}")
        assert forged.status_code == 403
        del fake.media[media_id]                  # Meta dropped it (after 30 days)
        gone = await client.get(f"{link.path}?{link.query}")
        assert gone.status_code == 404
