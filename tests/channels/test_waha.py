"""The WAHA connector against a fake WAHA over real HTTP: sends, session gating, error classes,
device states, signed ack webhooks and inbound messages."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest

from pushgate.channels.base import (
    CallbackRejected,
    CallbackRequest,
    ChannelConfigError,
    channel_class,
)
from pushgate.channels.waha import WahaChannel
from pushgate.core.channels import ChannelSpec, PriceUnit
from pushgate.core.lifecycle import State
from pushgate.core.models import OutboundMessage, Outcome
from tests.fakes.callback_route import CallbackRoute
from tests.fakes.server import free_port, serve_app
from tests.fakes.waha import FakeWaha

KEY = "waha-test-key"
HMAC_KEY = "hook-secret"
NUMBER = "919876543210"
CHANNEL_ID = 7


@pytest.fixture(scope="module")
def waha_server() -> Iterator[tuple[FakeWaha, str]]:
    fake = FakeWaha(api_key=KEY)
    with serve_app(fake.app) as url:
        yield fake, url


@pytest.fixture(scope="module")
def gateway_server() -> Iterator[tuple[CallbackRoute, str]]:
    gateway = CallbackRoute()
    with serve_app(gateway.app) as url:
        yield gateway, f"{url}/channels/{CHANNEL_ID}/callback"


@pytest.fixture
def fake(waha_server: tuple[FakeWaha, str]) -> FakeWaha:
    waha_server[0].reset()
    waha_server[0].webhook_hmac_key = HMAC_KEY   # signs as the channels' default key
    return waha_server[0]


@pytest.fixture
def gateway(gateway_server: tuple[CallbackRoute, str]) -> CallbackRoute:
    gateway_server[0].updates.clear()
    gateway_server[0].inbound.clear()
    return gateway_server[0]


@pytest.fixture
def hook_url(gateway_server: tuple[CallbackRoute, str]) -> str:
    return gateway_server[1]


@pytest.fixture
async def make(waha_server: tuple[FakeWaha, str]) -> AsyncIterator[Any]:
    channels: list[WahaChannel] = []

    async def make_channel(**config: Any) -> WahaChannel:
        base = {"base_url": waha_server[1], "api_key": KEY, "session_cache_seconds": 0,
                "webhook_hmac_key": HMAC_KEY}
        spec = ChannelSpec(id=CHANNEL_ID, project_id=1, kind="waha", application=10,
                           price_micro=1000, price_unit=PriceUnit.MESSAGE,
                           config={**base, **config})
        channel = WahaChannel(spec)
        await channel.start()
        channels.append(channel)
        return channel

    yield make_channel
    for channel in channels:
        await channel.stop()


@pytest.fixture
async def channel(make: Any) -> WahaChannel:
    return await make()


def outbound(message_id: int = 1, text: str = "Hi!", media_url: str | None = None,
             media_kind: str | None = None, parts: int = 1,
             number: str = NUMBER) -> OutboundMessage:
    return OutboundMessage(id=message_id, push_id=1, project_id=1, channel_id=CHANNEL_ID,
                           number=number, text=text, media_url=media_url,
                           media_kind=media_kind, parts=parts, priority=0, attempts=0)


# -- sending ---------------------------------------------------------------------------------


async def test_text_goes_to_send_text_with_key_session_and_chat_id(fake: FakeWaha,
                                                                   channel: WahaChannel) -> None:
    result = await channel.send(outbound(text="Hi!"))

    assert result.kind is Outcome.SENT and result.provider_id == fake.sent[0].msg_id
    assert result.provider_refs == []
    [check] = fake.requests_to("/api/contacts/check-exists")
    assert check.query == {"phone": NUMBER, "session": "default"}
    [request] = fake.requests_to("/api/sendText")
    assert request.headers["x-api-key"] == KEY
    assert request.json == {"session": "default", "chatId": f"{NUMBER}@c.us", "text": "Hi!",
                            "linkPreview": False}


@pytest.mark.parametrize(("kind", "url", "path", "file", "extra"), [
    ("image", "https://cdn.example/x.jpg", "/api/sendImage",
     {"mimetype": "image/jpeg", "filename": "x.jpg"}, {}),
    ("video", "https://cdn.example/v.mp4", "/api/sendVideo",
     {"mimetype": "video/mp4", "filename": "v.mp4"}, {"asNote": False}),
    # A document whose channel allows captions (parts == 1) keeps its caption.
    ("document", "https://cdn.example/i.pdf", "/api/sendFile",
     {"mimetype": "application/pdf", "filename": "i.pdf"}, {}),
    # A signed gateway URL has no extension: the kind decides the type.
    ("image", "https://gw.example/media/abc?sig=1", "/api/sendImage",
     {"mimetype": "image/jpeg", "filename": "abc.jpg"}, {}),
])
async def test_media_with_caption(fake: FakeWaha, channel: WahaChannel, kind: str, url: str,
                                  path: str, file: dict[str, str], extra: dict[str, Any]) -> None:
    result = await channel.send(outbound(text="Sale", media_url=url, media_kind=kind))

    assert result.kind is Outcome.SENT and result.provider_id == fake.sent[0].msg_id
    [request] = fake.requests_to(path)
    assert request.json == {"session": "default", "chatId": f"{NUMBER}@c.us", "caption": "Sale",
                            "file": {**file, "url": url}, **extra}
    assert fake.requests_to("/api/sendText") == []


@pytest.mark.parametrize(("kind", "url", "path", "file"), [
    ("document", "https://cdn.example/i.pdf", "/api/sendFile",
     {"mimetype": "application/pdf", "filename": "i.pdf"}),
    ("audio", "https://cdn.example/note.ogg", "/api/sendVoice",
     {"mimetype": "audio/ogg; codecs=opus"}),
    ("audio", "https://cdn.example/song.mp3", "/api/sendFile",
     {"mimetype": "audio/mpeg", "filename": "song.mp3"}),
])
async def test_text_beside_captionless_media_is_a_second_message(
        fake: FakeWaha, channel: WahaChannel, kind: str, url: str, path: str,
        file: dict[str, str]) -> None:
    result = await channel.send(outbound(text="Your invoice", media_url=url, media_kind=kind,
                                         parts=2))

    assert result.kind is Outcome.SENT
    media, text = fake.sent
    assert fake.requests[-2].path == path and fake.requests[-1].path == "/api/sendText"
    assert media.body == {"session": "default", "chatId": f"{NUMBER}@c.us",
                          "file": {**file, "url": url}}
    assert text.body["text"] == "Your invoice"
    assert result.provider_id == media.msg_id
    assert result.provider_refs == [(0, media.msg_id), (1, text.msg_id)]


async def test_audio_never_carries_a_caption(fake: FakeWaha, channel: WahaChannel) -> None:
    # Even when the accept path did not split it, an audio's text must not be lost.
    result = await channel.send(outbound(text="Listen", media_url="https://cdn.example/a.ogg",
                                         media_kind="audio", parts=1))

    assert result.kind is Outcome.SENT
    assert [s.action for s in fake.sent] == ["sendVoice", "sendText"]
    assert "caption" not in fake.sent[0].body


@pytest.mark.parametrize("shape", ["webjs", "webjs-object", "noweb"])
async def test_every_engine_answer_gives_the_id_its_acks_carry(
        fake: FakeWaha, channel: WahaChannel, shape: str) -> None:
    fake.response_shape = shape
    result = await channel.send(outbound())
    sent = fake.sent[0]

    callback = await channel.handle_callback(callback_request(fake.ack_event(sent, 2)))

    assert result.kind is Outcome.SENT and result.provider_id == sent.msg_id
    assert [u.provider_id for u in callback.updates] == [sent.msg_id]


async def test_empty_answer_is_a_success_without_id(fake: FakeWaha,
                                                    channel: WahaChannel) -> None:
    fake.response_shape = "empty"
    result = await channel.send(outbound())

    assert result.kind is Outcome.SENT and result.provider_id is None and result.provider_refs == []
    assert len(fake.sent) == 1


async def test_check_exists_chat_id_is_used(fake: FakeWaha, channel: WahaChannel) -> None:
    # Brazilian mobile numbers: WhatsApp may know the number without its ninth digit.
    fake.chat_ids["5511912345678"] = "551112345678@c.us"
    result = await channel.send(outbound(number="5511912345678"))

    assert result.kind is Outcome.SENT and fake.sent[0].chat_id == "551112345678@c.us"


async def test_number_not_on_whatsapp_fails_permanently_without_sending(
        fake: FakeWaha, channel: WahaChannel) -> None:
    fake.not_on_whatsapp.add(NUMBER)
    first = await channel.send(outbound(1))
    second = await channel.send(outbound(2))

    for result in (first, second):
        assert result.kind is Outcome.FAILED
        assert result.error_code == "not-on-whatsapp"
    assert len(fake.requests_to("/api/contacts/check-exists")) == 1   # remembered
    assert fake.sent == []


async def test_unchecked_numbers_go_straight_to_send(fake: FakeWaha, make: Any) -> None:
    channel = await make(check_numbers=False)
    result = await channel.send(outbound())

    assert result.kind is Outcome.SENT and fake.requests_to("/api/contacts/check-exists") == []


# -- session gating --------------------------------------------------------------------------


async def test_session_down_defers_without_sending_then_sends(fake: FakeWaha,
                                                              channel: WahaChannel) -> None:
    fake.session_status = "STARTING"
    waiting = await channel.send(outbound())

    assert waiting.kind is Outcome.DEFER
    assert waiting.retry_after == 5.0
    assert "STARTING" in (waiting.error_message or "")
    assert fake.requests_to("/api/sendText") == []

    fake.session_status = "WORKING"
    sent = await channel.send(outbound())
    assert sent.kind is Outcome.SENT and len(fake.sent) == 1


async def test_session_state_is_cached_between_sends(fake: FakeWaha, make: Any) -> None:
    channel = await make(session_cache_seconds=60)
    results = [await channel.send(outbound(i)) for i in range(3)]

    assert all(r.kind is Outcome.SENT for r in results)
    assert len(fake.requests_to("/api/sessions/default")) == 1


async def test_session_dropped_since_the_cached_look_up_defers(fake: FakeWaha,
                                                               make: Any) -> None:
    channel = await make(session_cache_seconds=60)
    assert (await channel.send(outbound(1))).kind is Outcome.SENT
    fake.session_status = "SCAN_QR_CODE"

    result = await channel.send(outbound(2))

    # WAHA refused the send with a 422; the fresh look-up shows why: the message waits.
    assert result.kind is Outcome.DEFER and "SCAN_QR_CODE" in (result.error_message or "")
    assert len(fake.requests_to("/api/sessions/default")) == 2


async def test_unreachable_bridge_defers(make: Any) -> None:
    channel = await make(base_url=f"http://127.0.0.1:{free_port()}")
    result = await channel.send(outbound())
    status = await channel.status()

    assert result.kind is Outcome.DEFER and "unreachable" in (result.error_message or "")
    assert status.state == "OFFLINE" and not status.connected
    assert "unreachable" in status.detail


# -- error classes ---------------------------------------------------------------------------


async def test_wrong_api_key_pauses_the_channel(fake: FakeWaha, make: Any) -> None:
    channel = await make(api_key="wrong")
    result = await channel.send(outbound())

    assert result.kind is Outcome.PAUSE_CHANNEL
    assert result.error_code == "401"
    assert fake.requests_to("/api/sendText") == []


async def test_401_on_send_pauses_the_channel(fake: FakeWaha, make: Any) -> None:
    channel = await make(check_numbers=False)
    fake.fail_next(1, 401)
    result = await channel.send(outbound())

    assert result.kind is Outcome.PAUSE_CHANNEL and result.error_code == "401"


async def test_server_error_is_retryable(fake: FakeWaha, make: Any) -> None:
    channel = await make(check_numbers=False)
    fake.fail_next(1, 503)
    failed = await channel.send(outbound())

    assert failed.kind is Outcome.RETRY
    assert failed.error_code == "503"
    assert (await channel.send(outbound())).kind is Outcome.SENT


async def test_bad_request_is_permanent(fake: FakeWaha, make: Any) -> None:
    channel = await make(check_numbers=False)
    fake.fail_next(1, 400)
    result = await channel.send(outbound())

    assert result.kind is Outcome.FAILED
    assert result.error_code == "400" and "Bad Request" in (result.error_message or "")


async def test_timeout_is_retryable(fake: FakeWaha, make: Any) -> None:
    channel = await make(check_numbers=False, timeout_seconds=0.3)
    fake.stall_next(1, 1.0)
    result = await channel.send(outbound())

    assert result.kind is Outcome.RETRY
    assert result.error_code == "network"


async def test_retry_after_a_failed_second_part_sends_only_that_part(fake: FakeWaha,
                                                                     make: Any) -> None:
    channel = await make(check_numbers=False)
    fake.fail_next(1, 500, after=1)   # the document goes out, its text does not
    message = outbound(text="Your invoice", media_url="https://cdn.example/i.pdf",
                       media_kind="document", parts=2)

    failed = await channel.send(message)
    retried = await channel.send(message)

    assert failed.kind is Outcome.RETRY
    assert [s.action for s in fake.sent] == ["sendFile", "sendText"]
    media, text = fake.sent
    assert retried.kind is Outcome.SENT
    assert retried.provider_refs == [(0, media.msg_id), (1, text.msg_id)]


# -- device status ---------------------------------------------------------------------------


@pytest.mark.parametrize(("waha_status", "state"), [
    ("WORKING", "CONNECTED"),
    ("STARTING", "TIMEOUT"),
    ("SCAN_QR_CODE", "UNPAIRED"),
    ("PASSKEY_REQUIRED", "UNPAIRED"),
    ("STOPPED", "OFFLINE"),
    ("FAILED", "OFFLINE"),
])
async def test_status_maps_the_session(fake: FakeWaha, channel: WahaChannel, waha_status: str,
                                       state: str) -> None:
    fake.session_status = waha_status
    status = await channel.status()

    assert status.state == state and status.connected == (state == "CONNECTED")
    assert waha_status in status.detail
    assert status.extra == {"bridge_status": waha_status}
    assert status.connected_number == ("79110000000" if state == "CONNECTED" else None)


async def test_status_names_bad_key_and_unknown_session(fake: FakeWaha, make: Any) -> None:
    bad_key = await (await make(api_key="wrong")).status()
    unknown = await (await make(session="other")).status()

    assert bad_key.state == "OFFLINE" and "401" in bad_key.detail
    assert unknown.state == "OFFLINE" and "not found" in unknown.detail


# -- webhooks --------------------------------------------------------------------------------


def callback_request(event: dict[str, Any], headers: dict[str, str] | None = None,
                     body: bytes | None = None) -> CallbackRequest:
    """A callback as the route hands it over, signed with ``HMAC_KEY`` unless ``headers``
    are given."""
    raw = orjson.dumps(event) if body is None else body
    if headers is None:
        headers = {"x-webhook-hmac": hmac.new(HMAC_KEY.encode(), raw, hashlib.sha512).hexdigest(),
                   "x-webhook-hmac-algorithm": "sha512"}
    return CallbackRequest("POST", "http://gw/channels/7/callback", headers, {}, raw)


async def test_acks_map_to_the_lifecycle_whatever_the_order(
        fake: FakeWaha, make: Any, gateway: CallbackRoute, hook_url: str) -> None:
    gateway.channel = channel = await make(webhook_hmac_key=HMAC_KEY)
    fake.webhook_hmac_key = HMAC_KEY
    await channel.send(outbound())
    sent = fake.sent[0]

    answers = await fake.emit(hook_url, [fake.ack_event(sent, level) for level in range(5)],
                              reorder=True, duplicate=True)

    assert answers == [200] * 10
    # Reversed (4, 3, 2, 1, 0), each twice; PENDING (0) says nothing. The store keeps the
    # furthest state and ignores repeats.
    assert [u.state for u in gateway.updates] == [State.READ] * 4 + [
        State.DELIVERED, State.DELIVERED, State.SUBMITTED, State.SUBMITTED]
    assert {(u.channel_id, u.provider_id) for u in gateway.updates} == {(CHANNEL_ID,
                                                                         sent.msg_id)}


async def test_ack_error_fails_the_message(fake: FakeWaha, channel: WahaChannel) -> None:
    await channel.send(outbound())
    event = fake.ack_event(fake.sent[0], -1)

    [update] = (await channel.handle_callback(callback_request(event))).updates

    assert update.state is State.FAILED and update.error_code == "ERROR"
    assert update.at == event["timestamp"] / 1000


@pytest.mark.parametrize(("signing_key", "answer"), [
    (HMAC_KEY, 200), ("not-the-key", 401), (None, 401),
])
async def test_webhook_hmac_is_required_when_configured(
        fake: FakeWaha, make: Any, gateway: CallbackRoute, hook_url: str, signing_key: str | None,
        answer: int) -> None:
    gateway.channel = channel = await make(webhook_hmac_key=HMAC_KEY)
    await channel.send(outbound())
    fake.webhook_hmac_key = signing_key

    answers = await fake.emit(hook_url, [fake.ack_event(fake.sent[0], 3)])

    assert answers == [answer]
    assert len(gateway.updates) == (1 if answer == 200 else 0)


async def test_other_hmac_algorithm_is_refused(fake: FakeWaha, make: Any) -> None:
    channel = await make(webhook_hmac_key=HMAC_KEY)
    fake.webhook_hmac_key = HMAC_KEY
    event = fake.session_event("WORKING")
    body = orjson.dumps(event)
    headers = {k.lower(): v for k, v in fake.signed_headers(event, body).items()}
    headers["x-webhook-hmac-algorithm"] = "sha256"

    with pytest.raises(CallbackRejected) as refused:
        await channel.handle_callback(callback_request(event, headers, body))
    assert refused.value.status_code == 401


async def test_a_channel_without_a_key_refuses_every_webhook(
        fake: FakeWaha, make: Any, gateway: CallbackRoute, hook_url: str,
        caplog: pytest.LogCaptureFixture) -> None:
    gateway.channel = channel = await make(webhook_hmac_key=None)
    assert "has no webhook_hmac_key: its callbacks are refused" in caplog.text
    await channel.send(outbound())
    ack = fake.ack_event(fake.sent[0], 1)

    fake.webhook_hmac_key = None
    unsigned = await fake.emit(hook_url, [ack])
    fake.webhook_hmac_key = "whatever-an-attacker-picks"
    signed = await fake.emit(hook_url, [ack])

    assert unsigned == signed == [403]
    assert gateway.updates == []
    with pytest.raises(CallbackRejected) as refused:
        await channel.handle_callback(callback_request(ack, headers={}))
    assert "pushgate channel callback-secret 7" in refused.value.reason


async def test_insecure_callbacks_accepts_unsigned_webhooks_and_says_so(
        fake: FakeWaha, make: Any, gateway: CallbackRoute, hook_url: str,
        caplog: pytest.LogCaptureFixture) -> None:
    gateway.channel = channel = await make(webhook_hmac_key=None, insecure_callbacks=True)
    assert "insecure_callbacks is on" in caplog.text
    await channel.send(outbound())
    fake.webhook_hmac_key = None

    assert await fake.emit(hook_url, [fake.ack_event(fake.sent[0], 1)]) == [200]
    assert [u.state for u in gateway.updates] == [State.SUBMITTED]


async def test_inbound_messages_from_people(fake: FakeWaha, channel: WahaChannel,
                                            gateway: CallbackRoute, hook_url: str) -> None:
    gateway.channel = channel
    text = fake.message_event("919812345678@c.us", "hello")
    photo = fake.message_event("919812345678@c.us", "look",
                               media={"url": "http://waha/api/files/a.jpg",
                                      "mimetype": "image/jpeg", "filename": "a.jpg"})
    own = fake.message_event("919812345678@c.us", "echo", from_me=True)
    group = fake.message_event("120363000000@g.us", "group chatter")

    answers = await fake.emit(hook_url, [text, photo, own, group])

    assert answers == [200] * 4
    first, second = gateway.inbound
    assert (first.number, first.text, first.type, first.media_url) == (
        "919812345678", "hello", 1, None)
    assert first.provider_id == text["payload"]["id"] and first.channel_id == CHANNEL_ID
    assert first.at == text["payload"]["timestamp"]
    assert (second.text, second.type, second.media_url) == (
        "look", 2, "http://waha/api/files/a.jpg")
    assert first.name == second.name == "Ravi"   # WEBJS: ``_data.notifyName``


async def test_inbound_profile_name_by_engine(fake: FakeWaha, channel: WahaChannel,
                                              gateway: CallbackRoute, hook_url: str) -> None:
    """WEBJS names the sender ``_data.notifyName``, NOWEB (Baileys' message) ``pushName``;
    without either (or blank) the message has no name."""
    gateway.channel = channel
    webjs = fake.message_event(f"{NUMBER}@c.us", "webjs", push_name="Asha")
    noweb = fake.message_event(f"{NUMBER}@c.us", "noweb")
    noweb["engine"] = "NOWEB"
    noweb["payload"]["_data"] = {
        "key": {"remoteJid": f"{NUMBER}@s.whatsapp.net", "fromMe": False, "id": "3EB0AB"},
        "messageTimestamp": noweb["payload"]["timestamp"], "pushName": "Ravi N",
        "message": {"conversation": "noweb"}}
    blank = fake.message_event(f"{NUMBER}@c.us", "blank", push_name=" ")
    bare = fake.message_event(f"{NUMBER}@c.us", "bare")
    del bare["payload"]["_data"]

    assert await fake.emit(hook_url, [webjs, noweb, blank, bare]) == [200] * 4
    assert [(m.text, m.name) for m in gateway.inbound] == [
        ("webjs", "Asha"), ("noweb", "Ravi N"), ("blank", None), ("bare", None)]


async def test_session_and_unknown_events_change_nothing(
        fake: FakeWaha, channel: WahaChannel, gateway: CallbackRoute, hook_url: str) -> None:
    gateway.channel = channel
    events = [fake.session_event("STOPPED"),
              fake.envelope("presence.update", {"id": f"{NUMBER}@c.us", "presences": []})]

    assert await fake.emit(hook_url, events) == [200, 200]
    assert gateway.updates == [] and gateway.inbound == []


async def test_body_that_is_not_json_is_refused(channel: WahaChannel) -> None:
    with pytest.raises(CallbackRejected) as refused:
        await channel.handle_callback(callback_request({}, body=b"<html>"))
    assert refused.value.status_code == 400


# -- config ----------------------------------------------------------------------------------


def test_config_defaults_are_filled() -> None:
    config = WahaChannel.validate_config({"base_url": "http://127.0.0.1:3000/",
                                          "api_key": "k"})

    assert config == {"base_url": "http://127.0.0.1:3000", "api_key": "k",
                      "timeout_seconds": 30.0, "session_cache_seconds": 2.0,
                      "session_retry_seconds": 5.0, "link_preview": False,
                      "insecure_callbacks": False, "session": "default",
                      "webhook_hmac_key": None, "check_numbers": True}


@pytest.mark.parametrize(("config", "named"), [
    ({"api_key": "k"}, "base_url"),
    ({"base_url": "ftp://host", "api_key": "k"}, "base_url"),
    ({"base_url": "http://host"}, "api_key"),
    ({"base_url": "http://host", "api_key": " "}, "api_key"),
    ({"base_url": "http://host", "api_key": "k", "session": ""}, "session"),
    ({"base_url": "http://host", "api_key": "k", "timeout_seconds": "soon"}, "timeout_seconds"),
    ({"base_url": "http://host", "apikey": "k", "api_key": "k"}, "apikey"),
    ({"base_url": "http://host", "api_key": "k", "webhook_hmac_key": "s",
      "insecure_callbacks": True}, "insecure_callbacks"),
])
def test_bad_config_names_the_key(config: dict[str, Any], named: str) -> None:
    with pytest.raises(ChannelConfigError, match=named):
        WahaChannel.validate_config(config)


def test_kind_is_registered_with_bridge_pacing_defaults() -> None:
    cls = channel_class("waha")

    assert cls is WahaChannel
    assert (cls.default_delay_ms, cls.default_jitter_ms) == (15_000, 30_000)  # type: ignore[attr-defined]


async def test_secrets_stay_out_of_the_config_repr(make: Any) -> None:
    channel = await make(webhook_hmac_key=HMAC_KEY)

    assert KEY not in repr(channel.config) and HMAC_KEY not in repr(channel.config)


def test_a_new_channel_gets_a_random_key_unless_given_or_opted_out() -> None:
    base = {"base_url": "http://127.0.0.1:3000", "api_key": "k"}

    config, made = WahaChannel.with_callback_secret(base)
    again, made_again = WahaChannel.with_callback_secret(base)

    assert made and made_again and made != made_again and len(made) >= 40
    assert config == {**base, "webhook_hmac_key": made}
    assert WahaChannel.with_callback_secret({**base, "webhook_hmac_key": "mine"})[1] is None
    assert WahaChannel.with_callback_secret({**base, "insecure_callbacks": True}) == (
        {**base, "insecure_callbacks": True}, None)


async def test_the_printed_setting_is_what_the_channel_checks(
        fake: FakeWaha, make: Any, gateway: CallbackRoute, hook_url: str) -> None:
    config, key = WahaChannel.with_callback_secret({"session": "shop"})
    setup = "\n".join(WahaChannel.callback_setup(config, hook_url))
    # The session config line, as WAHA takes it, and the environment variables.
    webhooks = orjson.loads(setup.split('"webhooks": ', 1)[1].split("\n", 1)[0])
    assert webhooks == [{"url": hook_url, "events": ["message", "message.ack", "session.status"],
                         "hmac": {"key": key}}]
    assert f"WHATSAPP_HOOK_HMAC_KEY={key}" in setup and f"WHATSAPP_HOOK_URL={hook_url}" in setup

    gateway.channel = channel = await make(webhook_hmac_key=key)
    await channel.send(outbound())
    fake.webhook_hmac_key = webhooks[0]["hmac"]["key"]
    assert await fake.emit(hook_url, [fake.ack_event(fake.sent[0], 2)]) == [200]
    assert [u.state for u in gateway.updates] == [State.DELIVERED]
