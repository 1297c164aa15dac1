"""The WhatsApp Cloud API connector against the Graph fake over real HTTP: request bodies
(text, media captions, audio + text, templates), the error table, the pair limit, credentials,
the webhook handshake and signatures, status and inbound parsing, ``status()`` and config
validation. Webhooks go from the fake to a small receiver that hands them to the connector the
way the gateway's callback route does."""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from pushgate.channels.base import (
    CallbackRejected,
    CallbackRequest,
    CallbackResult,
    ChannelConfigError,
    ChannelEnv,
    channel_class,
)
from pushgate.channels.media import (
    MediaFetchError,
    inbound_media_subject,
    verify_media_signature,
)
from pushgate.channels.transport import HttpxTransport
from pushgate.channels.whatsapp_cloud import ERROR_RULES, WhatsAppCloudChannel
from pushgate.core.channels import ChannelSpec, PriceUnit
from pushgate.core.lifecycle import State
from pushgate.core.models import OutboundMessage, Outcome
from tests.fakes.graph_api import GraphFake
from tests.fakes.server import free_port, serve_app

VERSION = "v21.0"
NUMBER = "15551234567"
OTHER = "15557654321"
VERIFY_TOKEN = "verify-me"
CHANNEL_ID = 7


@dataclass
class Servers:
    """One Graph fake server and one callback receiver per module; each test swaps in a fresh
    fake and its own channel."""

    graph_url: str
    receiver_url: str
    fake: GraphFake = field(default_factory=GraphFake)
    channel: WhatsAppCloudChannel | None = None
    results: list[CallbackResult] = field(default_factory=list)


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    holder: list[Servers] = []

    async def graph(scope: Any, receive: Any, send: Any) -> None:
        await holder[0].fake.app(scope, receive, send)

    async def receiver(scope: Any, receive: Any, send: Any) -> None:
        """What the gateway's callback route does: raw request in, the channel's answer out."""
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        state = holder[0]
        assert state.channel is not None
        callback = CallbackRequest(
            method=request.method, url=str(request.url),
            headers={k.lower(): v for k, v in request.headers.items()},
            query=dict(request.query_params), body=await request.body())
        try:
            result = await state.channel.handle_callback(callback)
        except CallbackRejected as exc:
            response: Response = PlainTextResponse(exc.reason, status_code=exc.status_code)
        else:
            state.results.append(result)
            response = Response(result.body, status_code=result.status_code,
                                media_type=result.content_type)
        await response(scope, receive, send)

    with serve_app(graph) as graph_url, serve_app(receiver) as receiver_url:
        holder.append(Servers(graph_url, f"{receiver_url}/channels/{CHANNEL_ID}/callback"))
        yield holder[0]


@pytest.fixture
def fake(servers: Servers) -> GraphFake:
    servers.fake = GraphFake()
    servers.results = []
    return servers.fake


def config(servers: Servers, **overrides: Any) -> dict[str, Any]:
    return {"phone_number_id": servers.fake.phone_number_id,
            "access_token": servers.fake.access_token, "app_secret": servers.fake.app_secret,
            "verify_token": VERIFY_TOKEN, "graph_base_url": servers.graph_url,
            "graph_version": VERSION, "pair_interval_seconds": 0, **overrides}


@pytest.fixture
async def make_channel(
    servers: Servers, fake: GraphFake
) -> AsyncIterator[Callable[..., WhatsAppCloudChannel]]:
    started: list[WhatsAppCloudChannel] = []

    def make(**overrides: Any) -> WhatsAppCloudChannel:
        spec = ChannelSpec(id=CHANNEL_ID, project_id=1, kind="whatsapp_cloud", application=101,
                           price_micro=5000, price_unit=PriceUnit.MESSAGE,
                           config=config(servers, **overrides))
        # The fake is on loopback, which media downloads refuse unless told otherwise.
        channel = WhatsAppCloudChannel(spec, ChannelEnv(allow_private_media=True))
        servers.channel = channel
        started.append(channel)
        return channel

    yield make
    for channel in started:
        await channel.stop()


@pytest.fixture
async def channel(make_channel: Callable[..., WhatsAppCloudChannel]) -> WhatsAppCloudChannel:
    channel = make_channel()
    await channel.start()
    return channel


def message(mid: int = 1, number: str = NUMBER, text: str = "Hi Ana, your order #12 shipped",
            media_url: str | None = None, media_kind: str | None = None, parts: int = 1,
            extra: dict[str, object] | None = None) -> OutboundMessage:
    return OutboundMessage(id=mid, push_id=1, project_id=1, channel_id=CHANNEL_ID,
                           number=number, text=text, media_url=media_url, media_kind=media_kind,
                           parts=parts, priority=0, attempts=0, extra=extra)


def bodies(fake: GraphFake) -> list[dict[str, Any]]:
    return [r.body for r in fake.posts]


# --- sending ----------------------------------------------------------------------------------

async def test_text_is_sent_and_its_wamid_kept(channel: WhatsAppCloudChannel,
                                               fake: GraphFake) -> None:
    result = await channel.send(message())
    assert result.kind is Outcome.SENT and result.provider_id == fake.sent[0].wamid
    assert result.provider_id.startswith("wamid.")
    [request] = fake.posts
    assert request.path == f"/{VERSION}/{fake.phone_number_id}/messages"
    assert request.headers["authorization"] == f"Bearer {fake.access_token}"
    assert request.body == {"messaging_product": "whatsapp", "recipient_type": "individual",
                            "to": NUMBER, "type": "text",
                            "text": {"preview_url": False,
                                     "body": "Hi Ana, your order #12 shipped"}}


async def test_sends_reuse_one_connection(channel: WhatsAppCloudChannel,
                                          fake: GraphFake) -> None:
    for mid in range(3):
        assert (await channel.send(message(mid, number=f"1555000000{mid}"))).kind is Outcome.SENT
    assert len({r.peer for r in fake.posts}) == 1


async def test_sends_do_not_go_through_httpx(channel: WhatsAppCloudChannel, fake: GraphFake,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The send path uses the lean keep-alive pool (channels/http1.py): httpx's CPU cost per
    request, not the channels' rates, capped a worker's sends (bench/http_channel.py)."""
    async def no_httpx(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a send went through httpx")

    monkeypatch.setattr(httpx.AsyncClient, "send", no_httpx)
    results = [await channel.send(message(mid, number=f"1555000000{mid}")) for mid in range(3)]
    assert all(r.kind is Outcome.SENT and r.provider_id.startswith("wamid.") for r in results)
    assert len(fake.posts) == 3 and len({r.peer for r in fake.posts}) == 1


async def test_sends_use_httpx_behind_a_proxy(make_channel: Callable[..., WhatsAppCloudChannel],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    channel = make_channel()
    sender = channel._sender()
    assert isinstance(sender, HttpxTransport)   # only httpx honours proxies
    assert sender.client is channel._http()


@pytest.mark.parametrize("kind", ["image", "video", "document"])
async def test_caption_goes_on_image_video_document(channel: WhatsAppCloudChannel,
                                                    fake: GraphFake, kind: str) -> None:
    url = "https://cdn.example.com/files/Invoice%2012.pdf?sig=abc"
    result = await channel.send(message(text="Spring sale", media_url=url, media_kind=kind))
    assert result.kind is Outcome.SENT and result.provider_refs == []
    [body] = bodies(fake)
    expected: dict[str, Any] = {"link": url, "caption": "Spring sale"}
    if kind == "document":
        expected["filename"] = "Invoice 12.pdf"
    assert body["type"] == kind and body[kind] == expected


async def test_media_kind_from_the_url_when_not_given(channel: WhatsAppCloudChannel,
                                                      fake: GraphFake) -> None:
    sent = await channel.send(message(media_url="https://cdn.example.com/p.jpg"))
    assert sent.kind is Outcome.SENT
    assert bodies(fake)[0]["type"] == "image"


async def test_audio_text_goes_as_a_second_message(channel: WhatsAppCloudChannel,
                                                   fake: GraphFake) -> None:
    url = "https://cdn.example.com/a.ogg"
    result = await channel.send(message(text="Listen", media_url=url, media_kind="audio",
                                        parts=2))
    audio, text = fake.sent
    assert [b["type"] for b in bodies(fake)] == ["audio", "text"]
    assert bodies(fake)[0]["audio"] == {"link": url}           # no caption on audio
    assert bodies(fake)[1]["text"]["body"] == "Listen"
    assert result.kind is Outcome.SENT and result.provider_id == audio.wamid
    assert result.provider_refs == [(0, audio.wamid), (1, text.wamid)]


async def test_audio_text_is_never_a_caption_even_as_one_part(
        channel: WhatsAppCloudChannel, fake: GraphFake) -> None:
    result = await channel.send(message(text="Listen", media_url="https://c.example/a.ogg",
                                        media_kind="audio", parts=1))
    audio, text = bodies(fake)
    assert audio["audio"] == {"link": "https://c.example/a.ogg"}
    assert text["text"]["body"] == "Listen" and result.kind is Outcome.SENT
    assert len(result.provider_refs) == 2


async def test_audio_without_text_is_one_send(channel: WhatsAppCloudChannel,
                                              fake: GraphFake) -> None:
    result = await channel.send(message(text="", media_url="https://cdn.example.com/a.mp3",
                                        media_kind="audio"))
    assert result.kind is Outcome.SENT and len(fake.posts) == 1 and result.provider_refs == []


async def test_document_charged_as_two_parts_sends_its_text_apart(
        channel: WhatsAppCloudChannel, fake: GraphFake) -> None:
    url = "https://cdn.example.com/inv-12.pdf"
    result = await channel.send(message(text="Invoice", media_url=url, media_kind="document",
                                        parts=2))
    document, text = bodies(fake)
    assert document["document"] == {"link": url, "filename": "inv-12.pdf"}
    assert text["text"]["body"] == "Invoice"
    assert [i for i, _ in result.provider_refs] == [0, 1]


async def test_caption_too_long_goes_as_text(channel: WhatsAppCloudChannel,
                                             fake: GraphFake) -> None:
    long_text = "x" * 1500
    result = await channel.send(message(text=long_text, media_url="https://c.example/p.png",
                                        media_kind="image"))
    image, text = bodies(fake)
    assert "caption" not in image["image"] and text["text"]["body"] == long_text
    assert result.kind is Outcome.SENT and len(result.provider_refs) == 2


async def test_audio_failing_sends_no_text(channel: WhatsAppCloudChannel,
                                           fake: GraphFake) -> None:
    fake.server_error(message_type="audio")
    result = await channel.send(message(text="Listen", media_url="https://c.example/a.ogg",
                                        media_kind="audio", parts=2))
    assert result.kind is Outcome.RETRY and result.error_code == "131000"
    assert len(fake.posts) == 1 and fake.sent == []


async def test_text_after_audio_refused_keeps_the_audio_and_sends_nothing_again(
        channel: WhatsAppCloudChannel, fake: GraphFake) -> None:
    fake.fail_next(131026, message_type="text")
    result = await channel.send(message(text="Listen", media_url="https://c.example/a.ogg",
                                        media_kind="audio", parts=2))
    [audio] = fake.sent
    # Reported sent with the audio's id only, so the dispatcher never re-sends the audio; the
    # error says the text part was lost.
    assert result.kind is Outcome.SENT and result.provider_id == audio.wamid
    assert result.provider_refs == [(0, audio.wamid)]
    assert result.error_code == "131026" and "text part was not" in (result.error_message or "")
    assert len(fake.posts) == 2          # a permanent refusal is not tried again


async def test_text_after_audio_throttled_is_retried_once(channel: WhatsAppCloudChannel,
                                                          fake: GraphFake) -> None:
    fake.fail_next(130429, message_type="text")
    channel.text_retry_max_pause = 0.05
    result = await channel.send(message(text="Listen", media_url="https://c.example/a.ogg",
                                        media_kind="audio", parts=2))
    audio, text = fake.sent
    assert [b["type"] for b in bodies(fake)] == ["audio", "text", "text"]
    assert result.kind is Outcome.SENT
    assert result.provider_refs == [(0, audio.wamid), (1, text.wamid)]
    assert result.error_code is None


async def test_empty_message_is_refused_without_a_call(channel: WhatsAppCloudChannel,
                                                       fake: GraphFake) -> None:
    result = await channel.send(message(text="  "))
    assert result.kind is Outcome.FAILED and fake.posts == []


# --- templates --------------------------------------------------------------------------------

def template(**fields: Any) -> dict[str, object]:
    return {"template": {"name": "order_update", "language": "en_US", "header": None,
                         "values": ["Ana", "#12"], **fields}}


async def test_template_body_parameters_in_order(channel: WhatsAppCloudChannel,
                                                 fake: GraphFake) -> None:
    fake.templates = {("order_update", "en_US"): 2}
    result = await channel.send(message(text="Hi Ana, your order #12 shipped",
                                        extra=template(header="Order 12")))
    assert result.kind is Outcome.SENT
    [body] = bodies(fake)
    assert body == {
        "messaging_product": "whatsapp", "recipient_type": "individual", "to": NUMBER,
        "type": "template",
        "template": {"name": "order_update",
                     "language": {"policy": "deterministic", "code": "en_US"},
                     "components": [
                         {"type": "header", "parameters": [{"type": "text", "text": "Order 12"}]},
                         {"type": "body", "parameters": [{"type": "text", "text": "Ana"},
                                                         {"type": "text", "text": "#12"}]}]}}


async def test_template_with_document_header(channel: WhatsAppCloudChannel,
                                             fake: GraphFake) -> None:
    url = "https://cdn.example.com/inv.pdf"
    result = await channel.send(message(media_url=url, media_kind="document", parts=2,
                                        extra=template(header="Invoice 12.pdf")))
    # Never a free-form text beside a template.
    assert result.kind is Outcome.SENT and len(fake.posts) == 1
    header, body = bodies(fake)[0]["template"]["components"]
    assert header == {"type": "header", "parameters": [
        {"type": "document", "document": {"link": url, "filename": "Invoice 12.pdf"}}]}
    assert body["type"] == "body"


@pytest.mark.parametrize("kind", ["image", "video"])
async def test_template_with_image_or_video_header(channel: WhatsAppCloudChannel,
                                                   fake: GraphFake, kind: str) -> None:
    url = f"https://cdn.example.com/x.{'jpg' if kind == 'image' else 'mp4'}"
    await channel.send(message(media_url=url, media_kind=kind, extra=template(values=[])))
    components = bodies(fake)[0]["template"]["components"]
    assert components == [{"type": "header",
                           "parameters": [{"type": kind, kind: {"link": url}}]}]


async def test_template_named_by_id_and_without_values(channel: WhatsAppCloudChannel,
                                                       fake: GraphFake) -> None:
    extra = {"template": {"id": "hello_world", "language": "en_GB", "values": []}}
    assert (await channel.send(message(extra=extra))).kind is Outcome.SENT
    assert bodies(fake)[0]["template"] == {
        "name": "hello_world", "language": {"policy": "deterministic", "code": "en_GB"}}


async def test_template_parameter_mismatch_is_permanent(channel: WhatsAppCloudChannel,
                                                        fake: GraphFake) -> None:
    fake.templates = {("order_update", "en_US"): 3}
    result = await channel.send(message(extra=template()))
    assert result.kind is Outcome.FAILED and result.error_code == "132000"


async def test_template_without_language_fails_without_a_call(channel: WhatsAppCloudChannel,
                                                              fake: GraphFake) -> None:
    result = await channel.send(message(extra=template(language=None)))
    assert result.kind is Outcome.FAILED and "language" in (result.error_message or "")
    assert fake.posts == []


# --- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("code", "http_status", "details"), [
    (130429, None, None), (80007, None, None), (131048, None, None), (4, None, None),
    (131000, 500, None), (131016, 503, None)])
async def test_retryable_codes(channel: WhatsAppCloudChannel, fake: GraphFake, code: int,
                               http_status: int | None, details: str | None) -> None:
    fake.fail_next(code, http_status=http_status, details=details)
    result = await channel.send(message())
    assert result.kind is Outcome.RETRY
    assert result.error_code == str(code) and f"(#{code})" in (result.error_message or "")
    assert result.retry_after == ERROR_RULES[code].retry_after


@pytest.mark.parametrize(("code", "details"), [
    (131026, None), (131047, None), (131051, None), (131008, None), (131009, None),
    (131030, None), (100, "Invalid parameter value for 'to'")])
async def test_permanent_codes(channel: WhatsAppCloudChannel, fake: GraphFake, code: int,
                               details: str | None) -> None:
    fake.fail_next(code, details=details)
    result = await channel.send(message())
    assert result.kind is Outcome.FAILED and result.error_code == str(code)
    if details:
        assert details in (result.error_message or "")


async def test_code_decides_not_http_status(channel: WhatsAppCloudChannel,
                                            fake: GraphFake) -> None:
    fake.fail_next(131026, http_status=500)     # permanent code behind a 5xx: still permanent
    result = await channel.send(message())
    assert result.kind is Outcome.FAILED


async def test_invalid_recipient_is_permanent(channel: WhatsAppCloudChannel,
                                              fake: GraphFake) -> None:
    result = await channel.send(message(number="not-a-number"))
    assert result.kind is Outcome.FAILED and result.error_code == "100"
    assert "to" in (result.error_message or "")


async def test_undeliverable_number(channel: WhatsAppCloudChannel, fake: GraphFake) -> None:
    fake.undeliverable.add(OTHER)
    assert (await channel.send(message(1))).kind is Outcome.SENT
    result = await channel.send(message(2, number=OTHER))
    assert result.kind is Outcome.FAILED and result.error_code == "131026"


async def test_proxy_error_page_is_retryable(channel: WhatsAppCloudChannel,
                                             fake: GraphFake) -> None:
    fake.plain_error(http_status=502)
    result = await channel.send(message())
    assert result.kind is Outcome.RETRY and result.error_code == "http-502"


async def test_unreachable_graph_is_retryable(make_channel: Callable[..., WhatsAppCloudChannel],
                                              fake: GraphFake) -> None:
    channel = make_channel(graph_base_url=f"http://127.0.0.1:{free_port()}")
    result = await channel.send(message())
    assert result.kind is Outcome.RETRY and result.error_code == "network"


async def test_timeout_is_retryable_and_keeps_the_pair_slot(
        make_channel: Callable[..., WhatsAppCloudChannel], fake: GraphFake) -> None:
    channel = make_channel(timeout_seconds=0.2, pair_interval_seconds=30)
    fake.response_delay = 1.0
    result = await channel.send(message(1))
    assert result.kind is Outcome.RETRY and result.error_code == "timeout"
    # Meta may have taken it: the recipient's pair interval is not given back.
    again = await channel.send(message(2))
    assert again.kind is Outcome.DEFER and again.retry_after is not None and again.retry_after > 25


@pytest.mark.parametrize(("fault", "code"), [("wrong-token", "190"), ("expired", "190"),
                                           ("permission", "200"), ("bare-401", "http-401")])
async def test_refused_credentials_pause_the_channel(
        make_channel: Callable[..., WhatsAppCloudChannel], fake: GraphFake, fault: str,
        code: str) -> None:
    channel = make_channel(access_token="EAAG-revoked" if fault == "wrong-token"
                           else fake.access_token)
    fake.token_expired = fault == "expired"
    if fault == "permission":
        fake.fail_next(200, http_status=403)
    if fault == "bare-401":
        fake.plain_error(http_status=401)      # a 401 without a Graph error body
    result = await channel.send(message())
    assert result.kind is Outcome.PAUSE_CHANNEL
    assert result.error_code == code
    if code == "190":
        assert "access token" in (result.error_message or "")


# --- pair limit -----------------------------------------------------------------------------

async def test_pair_limit_defers_the_same_recipient_only(
        make_channel: Callable[..., WhatsAppCloudChannel], fake: GraphFake) -> None:
    interval = 0.3
    channel = make_channel(pair_interval_seconds=interval)
    assert (await channel.send(message(1))).kind is Outcome.SENT
    waiting = await channel.send(message(2))
    assert waiting.kind is Outcome.DEFER
    assert waiting.retry_after is not None and 0 < waiting.retry_after <= interval
    assert "one message per" in (waiting.error_message or "")
    assert (await channel.send(message(3, number=OTHER))).kind is Outcome.SENT       # others go on
    assert len(fake.posts) == 2                                    # the deferred one waited
    await asyncio.sleep(waiting.retry_after + 0.02)   # the loop may wake a hair early
    assert (await channel.send(message(2))).kind is Outcome.SENT
    first, second = fake.sends_to(NUMBER)
    assert second.at - first.at >= interval - 0.05


async def test_a_refused_send_gives_the_pair_slot_back(
        make_channel: Callable[..., WhatsAppCloudChannel], fake: GraphFake) -> None:
    channel = make_channel(pair_interval_seconds=30)
    fake.throttle()
    assert (await channel.send(message(1))).kind is Outcome.RETRY
    # Nothing reached the user: no wait.
    assert (await channel.send(message(1))).kind is Outcome.SENT


async def test_pair_limit_in_a_batch_keeps_order(
        make_channel: Callable[..., WhatsAppCloudChannel], fake: GraphFake) -> None:
    channel = make_channel(pair_interval_seconds=5)
    results = await channel.send_batch([message(1), message(2), message(3, number=OTHER)])
    assert [(r.message_id, r.kind) for r in results] == [
        (1, Outcome.SENT), (2, Outcome.DEFER), (3, Outcome.SENT)]


async def test_meta_pair_limit_defers_and_holds_the_recipient(
        make_channel: Callable[..., WhatsAppCloudChannel], fake: GraphFake) -> None:
    interval = 0.2
    channel = make_channel(pair_interval_seconds=interval)
    fake.pair_interval = 10.0            # Meta is stricter than our pacing
    assert (await channel.send(message(1))).kind is Outcome.SENT
    await asyncio.sleep(interval)
    refused = await channel.send(message(2))
    assert refused.kind is Outcome.DEFER and refused.error_code == "131056"
    assert refused.retry_after == interval
    held = await channel.send(message(3))
    assert held.kind is Outcome.DEFER and held.error_code == "pair-limit" and len(fake.posts) == 2
    await asyncio.sleep(interval)
    fake.pair_interval = None
    assert (await channel.send(message(2))).kind is Outcome.SENT


async def test_audio_and_text_fit_a_burst_of_two(
        make_channel: Callable[..., WhatsAppCloudChannel], fake: GraphFake) -> None:
    fake.pair_interval, fake.pair_burst = 10.0, 2
    channel = make_channel(pair_interval_seconds=0.2)
    result = await channel.send(message(text="Listen", media_url="https://c.example/a.ogg",
                                        media_kind="audio", parts=2))
    assert result.kind is Outcome.SENT and len(result.provider_refs) == 2


# --- webhooks ---------------------------------------------------------------------------------

async def test_handshake(servers: Servers, channel: WhatsAppCloudChannel,
                         fake: GraphFake) -> None:
    ok = await fake.averify(servers.receiver_url, VERIFY_TOKEN, challenge="1158201444")
    assert ok.status_code == 200 and ok.text == "1158201444"
    assert ok.headers["content-type"].startswith("text/plain")
    wrong = await fake.averify(servers.receiver_url, "guess")
    assert wrong.status_code == 403
    bad_mode = await fake.averify(servers.receiver_url, VERIFY_TOKEN, mode="unsubscribe")
    assert bad_mode.status_code == 403


@pytest.mark.parametrize(("signature", "status"), [("valid", 200), ("invalid", 403),
                                                   ("missing", 401)])
async def test_signature_checked(servers: Servers, channel: WhatsAppCloudChannel,
                                 fake: GraphFake, signature: str, status: int) -> None:
    payload = fake.status_payload("wamid.abc", "delivered", NUMBER)
    [response] = await fake.apost(servers.receiver_url,
                                  [fake.delivery(payload, signature=signature)])
    assert response.status_code == status
    if status == 200:
        assert response.content == b""
        [result] = servers.results
        assert [(u.state, u.provider_id) for u in result.updates] == [
            (State.DELIVERED, "wamid.abc")]
    else:
        assert servers.results == []


async def test_body_changed_after_signing_is_refused(channel: WhatsAppCloudChannel,
                                                     fake: GraphFake) -> None:
    delivery = fake.delivery(fake.status_payload("wamid.abc", "read", NUMBER))
    tampered = delivery.body.replace(b"read", b"sent")
    with pytest.raises(CallbackRejected) as refused:
        await channel.handle_callback(CallbackRequest(
            "POST", "http://x/cb", {k.lower(): v for k, v in delivery.headers.items()}, {},
            tampered))
    assert refused.value.status_code == 403


async def test_status_mapping(servers: Servers, channel: WhatsAppCloudChannel,
                              fake: GraphFake) -> None:
    sent = await channel.send(message())
    assert sent.provider_id
    deliveries = fake.lifecycle(sent.provider_id, NUMBER, ("sent", "delivered", "read"))
    deliveries += fake.lifecycle("wamid.other", OTHER, ("failed",), error_code=131047)
    responses = await fake.apost(servers.receiver_url, deliveries)
    assert [r.status_code for r in responses] == [200] * 4
    updates = [u for result in servers.results for u in result.updates]
    assert [(u.state, u.provider_id, u.channel_id) for u in updates] == [
        (State.SUBMITTED, sent.provider_id, CHANNEL_ID),
        (State.DELIVERED, sent.provider_id, CHANNEL_ID),
        (State.READ, sent.provider_id, CHANNEL_ID),
        (State.FAILED, "wamid.other", CHANNEL_ID)]
    assert updates[0].at < updates[1].at < updates[2].at
    assert abs(updates[0].at - time.time()) < 60
    assert updates[3].error_code == "131047" and updates[3].refund
    assert not any(u.refund for u in updates[:3])
    assert (updates[3].error_message or "").startswith("Re-engagement message: ")
    assert all(u.error_code is None for u in updates[:3])


async def test_duplicated_and_reordered_statuses_are_reported_as_received(
        servers: Servers, channel: WhatsAppCloudChannel, fake: GraphFake) -> None:
    deliveries = fake.lifecycle("wamid.x", NUMBER, ("delivered", "read"), reorder=True,
                                duplicate=True)
    await fake.apost(servers.receiver_url, deliveries)
    states = [u.state for result in servers.results for u in result.updates]
    assert states == [State.READ, State.READ, State.DELIVERED, State.DELIVERED]


async def test_inbound_messages(channel: WhatsAppCloudChannel, fake: GraphFake) -> None:
    kinds: list[dict[str, Any]] = [
        {"type": "text", "text": {"body": "STOP"}},
        {"type": "image", "image": {"id": "1479537139650973", "mime_type": "image/jpeg",
                                    "sha256": "abc", "caption": "my receipt"}},
        {"type": "button", "button": {"payload": "yes-payload", "text": "Yes"},
         "context": {"from": "15550001111", "id": "wamid.ours"}},
        {"type": "interactive", "interactive": {
            "type": "button_reply", "button_reply": {"id": "opt-2", "title": "Not Sure"}}},
        {"type": "location", "location": {"latitude": 38.9, "longitude": -77.0,
                                          "name": "Office", "address": "1 Main St"}},
    ]
    parsed = []
    for kind in kinds:
        delivery = fake.delivery(fake.inbound_payload(OTHER, kind, name="Ana", timestamp=1.7e9))
        result = await channel.handle_callback(CallbackRequest(
            "POST", "http://x/cb", {"x-hub-signature-256": delivery.headers[
                "X-Hub-Signature-256"]}, {}, delivery.body))
        assert result.status_code == 200 and result.body == b"" and result.updates == []
        parsed.extend(result.inbound)
    assert [(m.type, m.text, m.media_url is not None) for m in parsed] == [
        (1, "STOP", False), (2, "my receipt", True), (9, "Yes", False),
        (9, "Not Sure", False), (7, "Office, 1 Main St", False)]
    # The image's media id becomes a signed link of the gateway that fetches it when followed.
    link = urllib.parse.urlsplit(parsed[1].media_url or "")
    assert link.path == f"/channels/{CHANNEL_ID}/inbound-media/1479537139650973"
    query = dict(urllib.parse.parse_qsl(link.query))
    assert verify_media_signature(channel.env.secret_key,
                                  inbound_media_subject(CHANNEL_ID, "1479537139650973"),
                                  query["expires"], query["sig"], time.time())
    for m in parsed:
        assert m.channel_id == CHANNEL_ID and m.number == OTHER and m.name == "Ana"
        assert m.at == 1.7e9 and m.provider_id == m.raw["id"]
        assert m.provider_id.startswith("wamid.")
    assert parsed[2].raw["button"] == {"payload": "yes-payload", "text": "Yes"}


async def test_other_phone_number_ids_are_ignored(channel: WhatsAppCloudChannel,
                                                  fake: GraphFake) -> None:
    for payload in (fake.status_payload("wamid.a", "read", NUMBER, phone_number_id="999"),
                    fake.inbound_payload(NUMBER, {"type": "text", "text": {"body": "hi"}},
                                         phone_number_id="999")):
        delivery = fake.delivery(payload)
        result = await channel.handle_callback(CallbackRequest(
            "POST", "http://x/cb", {"x-hub-signature-256": delivery.headers[
                "X-Hub-Signature-256"]}, {}, delivery.body))
        assert result.status_code == 200 and result.updates == [] and result.inbound == []


async def test_signed_body_that_is_not_json(channel: WhatsAppCloudChannel,
                                            fake: GraphFake) -> None:
    body = b"not json"
    with pytest.raises(CallbackRejected) as refused:
        await channel.handle_callback(CallbackRequest(
            "POST", "http://x/cb", {"x-hub-signature-256": fake.sign(body)}, {}, body))
    assert refused.value.status_code == 400


async def wait_for_updates(servers: Servers, count: int) -> list[Any]:
    """The updates of the fake's own webhooks, once it has seen ``count`` answers."""
    deadline = time.monotonic() + 5
    while len(servers.fake.webhook_responses) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {count} webhooks, got "
                        f"{servers.fake.webhook_responses}")
        await asyncio.sleep(0.02)
    return [u for result in servers.results for u in result.updates]


async def test_fake_posts_statuses_after_a_send(servers: Servers, channel: WhatsAppCloudChannel,
                                                fake: GraphFake) -> None:
    fake.webhook_url, fake.auto_statuses = servers.receiver_url, ("sent", "delivered")
    result = await channel.send(message())
    updates = await wait_for_updates(servers, 2)
    assert [(u.state, u.provider_id) for u in updates] == [
        (State.SUBMITTED, result.provider_id), (State.DELIVERED, result.provider_id)]
    assert fake.webhook_responses == [200, 200]


async def test_closed_window_fails_later_by_webhook(servers: Servers,
                                                    channel: WhatsAppCloudChannel,
                                                    fake: GraphFake) -> None:
    fake.webhook_url = servers.receiver_url
    fake.window_closed.add(NUMBER)
    fake.window_closed_async = True
    result = await channel.send(message())
    assert result.kind is Outcome.SENT    # Meta takes it, then reports the failure
    [update] = await wait_for_updates(servers, 1)
    assert servers.fake.webhook_responses == [200]
    assert (update.state, update.provider_id, update.error_code) == (
        State.FAILED, result.provider_id, "131047")
    # Templates go.
    assert (await channel.send(message(2, number=NUMBER, extra=template()))).kind is Outcome.SENT


# --- status and config ------------------------------------------------------------------------

async def test_status_connected(channel: WhatsAppCloudChannel, fake: GraphFake) -> None:
    status = await channel.status()
    assert status.connected and status.state == "CONNECTED"
    assert status.connected_number == fake.display_phone_number
    assert status.extra == {"verified_name": "Pushgate Test", "quality_rating": "GREEN"}
    [request] = fake.requests
    assert request.method == "GET" and request.path == f"/{VERSION}/{fake.phone_number_id}"


async def test_status_with_a_bad_token_is_offline(
        make_channel: Callable[..., WhatsAppCloudChannel], fake: GraphFake) -> None:
    status = await make_channel(access_token="EAAG-revoked").status()
    assert not status.connected and status.state == "OFFLINE"
    assert "Invalid OAuth access token" in status.detail and status.extra["error_code"] == "190"


async def test_status_of_an_unknown_number_is_offline(
        make_channel: Callable[..., WhatsAppCloudChannel], fake: GraphFake) -> None:
    status = await make_channel(phone_number_id="42").status()
    assert status.state == "OFFLINE" and "does not exist" in status.detail


async def test_status_unreachable(make_channel: Callable[..., WhatsAppCloudChannel],
                                  fake: GraphFake) -> None:
    status = await make_channel(graph_base_url=f"http://127.0.0.1:{free_port()}").status()
    assert not status.connected and status.state == "TIMEOUT"


def test_registered_with_rate_defaults() -> None:
    cls = channel_class("whatsapp_cloud")
    assert cls is WhatsAppCloudChannel
    assert (cls.default_rate_per_second, cls.max_rate_per_second) == (80.0, 1000.0)


def test_config_defaults() -> None:
    out = WhatsAppCloudChannel.validate_config({
        "phone_number_id": 1122334455667, "access_token": "t", "app_secret": "s",
        "verify_token": "v"})
    assert out == {"phone_number_id": "1122334455667", "access_token": "t", "app_secret": "s",
                   "verify_token": "v", "graph_base_url": "https://graph.facebook.com",
                   "graph_version": "v21.0", "pair_interval_seconds": 6.0,
                   "timeout_seconds": 20.0, "max_in_flight": 64}


@pytest.mark.parametrize(("change", "key"), [
    ({"phone_number_id": None}, "phone_number_id"),
    ({"phone_number_id": "abc"}, "phone_number_id"),
    ({"access_token": ""}, "access_token"),
    ({"app_secret": None}, "app_secret"),
    ({"verify_token": 5}, "verify_token"),
    ({"graph_base_url": "graph.facebook.com"}, "graph_base_url"),
    ({"graph_version": "21"}, "graph_version"),
    ({"pair_interval_seconds": -1}, "pair_interval_seconds"),
    ({"pair_interval_seconds": "6"}, "pair_interval_seconds"),
    ({"timeout_seconds": 0}, "timeout_seconds"),
    ({"max_in_flight": 0}, "max_in_flight"),
    ({"max_in_flight": 1001}, "max_in_flight"),
    ({"max_in_flight": 2.5}, "max_in_flight"),
    ({"max_in_flight": True}, "max_in_flight"),
    ({"phone_numberid": "1"}, "phone_numberid"),
])
def test_config_errors_name_the_key(change: dict[str, Any], key: str) -> None:
    config = {"phone_number_id": "1", "access_token": "t", "app_secret": "s",
              "verify_token": "v", **change}
    config = {k: v for k, v in config.items() if v is not None}
    with pytest.raises(ChannelConfigError, match=key):
        WhatsAppCloudChannel.validate_config(config)


async def test_inbound_media_is_fetched_with_the_channel_token(
        channel: WhatsAppCloudChannel, fake: GraphFake) -> None:
    media_id = fake.add_media(b"\xff\xd8\xff" + b"jpeg" * 100, "image/jpeg")
    content_type, data = await channel.fetch_inbound_media(media_id)
    assert (content_type, data) == ("image/jpeg", b"\xff\xd8\xff" + b"jpeg" * 100)
    # Both steps carried the token; an unknown or expired id is "not found".
    assert all(r.headers.get("authorization") == f"Bearer {fake.access_token}"
               for r in fake.requests if r.method == "GET")
    with pytest.raises(LookupError):
        await channel.fetch_inbound_media("999999")


async def test_inbound_media_on_a_private_address_is_refused(
        make_channel: Callable[..., WhatsAppCloudChannel], fake: GraphFake) -> None:
    channel = make_channel()
    channel.env = ChannelEnv(allow_private_media=False)
    media_id = fake.add_media(b"%PDF-1.4", "application/pdf")
    with pytest.raises(MediaFetchError) as info:
        await channel.fetch_inbound_media(media_id)
    assert not info.value.retryable and "127.0.0.1" in str(info.value)


async def test_max_in_flight_bounds_the_sends_awaiting_graph(
        make_channel: Callable[..., WhatsAppCloudChannel], fake: GraphFake) -> None:
    """An upgraded number (1,000/s) needs more sends awaiting Graph's answer than the default
    64: at ~200 ms a call, 64 reach only ~300/s."""
    assert make_channel().in_flight_limit == 64
    channel = make_channel(max_in_flight=3)
    assert channel.in_flight_limit == 3
    results = await channel.send_batch(
        [message(mid, number=f"1555000{mid:04d}") for mid in range(10)])
    assert all(r.kind is Outcome.SENT for r in results)
    # Never more than 3 connections, so never more than 3 sends at once.
    assert len({r.peer for r in fake.posts}) <= 3
