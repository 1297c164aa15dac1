"""The Evolution API connector against a fake Evolution over real HTTP: sends, instance gating,
error classes, device states, ``messages.update`` / ``messages.upsert`` webhooks and the token."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest

from pushgate.channels.base import (
    CallbackRequest,
    ChannelConfigError,
    channel_class,
)
from pushgate.channels.evolution import EvolutionChannel
from pushgate.core.channels import ChannelSpec, PriceUnit
from pushgate.core.lifecycle import State
from pushgate.core.models import OutboundMessage, Outcome
from tests.fakes.callback_route import CallbackRoute
from tests.fakes.evolution import FakeEvolution
from tests.fakes.server import free_port, serve_app

KEY = "evo-test-key"
INSTANCE = "shop"
TOKEN = "hook-token"
NUMBER = "5511999999999"
CHANNEL_ID = 9


@pytest.fixture(scope="module")
def evolution_server() -> Iterator[tuple[FakeEvolution, str]]:
    fake = FakeEvolution(api_key=KEY, instance=INSTANCE)
    with serve_app(fake.app) as url:
        yield fake, url


@pytest.fixture(scope="module")
def gateway_server() -> Iterator[tuple[CallbackRoute, str]]:
    gateway = CallbackRoute()
    with serve_app(gateway.app) as url:
        yield gateway, f"{url}/channels/{CHANNEL_ID}/callback"


@pytest.fixture
def fake(evolution_server: tuple[FakeEvolution, str]) -> FakeEvolution:
    evolution_server[0].reset()
    return evolution_server[0]


@pytest.fixture
def gateway(gateway_server: tuple[CallbackRoute, str]) -> CallbackRoute:
    gateway_server[0].updates.clear()
    gateway_server[0].inbound.clear()
    return gateway_server[0]


@pytest.fixture
def bare_hook_url(gateway_server: tuple[CallbackRoute, str]) -> str:
    return gateway_server[1]


@pytest.fixture
def hook_url(bare_hook_url: str) -> str:
    """The callback URL as registered on Evolution, with the channels' default token."""
    return f"{bare_hook_url}?token={TOKEN}"


@pytest.fixture
async def make(evolution_server: tuple[FakeEvolution, str]) -> AsyncIterator[Any]:
    channels: list[EvolutionChannel] = []

    async def make_channel(**config: Any) -> EvolutionChannel:
        base = {"base_url": evolution_server[1], "api_key": KEY, "instance": INSTANCE,
                "session_cache_seconds": 0, "webhook_token": TOKEN}
        spec = ChannelSpec(id=CHANNEL_ID, project_id=1, kind="evolution", application=1,
                           price_micro=1000, price_unit=PriceUnit.MESSAGE,
                           config={**base, **config})
        channel = EvolutionChannel(spec)
        await channel.start()
        channels.append(channel)
        return channel

    yield make_channel
    for channel in channels:
        await channel.stop()


@pytest.fixture
async def channel(make: Any) -> EvolutionChannel:
    return await make()


def outbound(message_id: int = 1, text: str = "Hi", media_url: str | None = None,
             media_kind: str | None = None, parts: int = 1,
             number: str = NUMBER) -> OutboundMessage:
    return OutboundMessage(id=message_id, push_id=1, project_id=1, channel_id=CHANNEL_ID,
                           number=number, text=text, media_url=media_url,
                           media_kind=media_kind, parts=parts, priority=0, attempts=0)


def callback_request(event: dict[str, Any], query: dict[str, str] | None = None,
                     headers: dict[str, str] | None = None) -> CallbackRequest:
    """A callback as the route hands it over, with ``TOKEN`` unless ``query`` is given."""
    return CallbackRequest("POST", "http://gw/channels/9/callback", headers or {},
                           {"token": TOKEN} if query is None else query, orjson.dumps(event))


# -- sending ---------------------------------------------------------------------------------


async def test_text_goes_to_send_text_with_apikey_and_digits(fake: FakeEvolution,
                                                             channel: EvolutionChannel) -> None:
    result = await channel.send(outbound(text="Hi"))

    assert result.kind is Outcome.SENT and result.provider_id == fake.sent[0].key_id
    assert result.provider_refs == []
    [request] = fake.requests_to(f"/message/sendText/{INSTANCE}")
    assert request.headers["apikey"] == KEY
    assert request.json == {"number": NUMBER, "text": "Hi", "linkPreview": False}


async def test_typing_delay_is_sent_as_delay(fake: FakeEvolution, make: Any) -> None:
    channel = await make(typing_delay_ms=1200)
    assert (await channel.send(outbound())).kind is Outcome.SENT

    assert fake.sent[0].body["delay"] == 1200


@pytest.mark.parametrize(("kind", "url", "mimetype", "filename"), [
    ("image", "https://cdn.example/x.jpg", "image/jpeg", "x.jpg"),
    ("video", "https://cdn.example/v.mp4", "video/mp4", "v.mp4"),
    ("document", "https://cdn.example/i.pdf", "application/pdf", "i.pdf"),
])
async def test_media_with_caption(fake: FakeEvolution, channel: EvolutionChannel, kind: str,
                                  url: str, mimetype: str, filename: str) -> None:
    result = await channel.send(outbound(text="Sale", media_url=url, media_kind=kind))

    assert result.kind is Outcome.SENT and result.provider_id == fake.sent[0].key_id
    [request] = fake.requests_to(f"/message/sendMedia/{INSTANCE}")
    assert request.json == {"number": NUMBER, "mediatype": kind, "mimetype": mimetype,
                            "caption": "Sale", "media": url, "fileName": filename}
    assert len(fake.sent) == 1


@pytest.mark.parametrize(("kind", "url", "parts"), [
    ("document", "https://cdn.example/i.pdf", 2),
    ("audio", "https://cdn.example/a.mp3", 2),
    ("audio", "https://cdn.example/a.ogg", 1),   # audio never shows a caption
])
async def test_text_beside_captionless_media_is_a_second_message(
        fake: FakeEvolution, channel: EvolutionChannel, kind: str, url: str, parts: int) -> None:
    result = await channel.send(outbound(text="Read this", media_url=url, media_kind=kind,
                                         parts=parts))

    media, text = fake.sent
    assert (media.action, text.action) == ("sendMedia", "sendText")
    assert media.body["mediatype"] == kind and "caption" not in media.body
    assert text.body["text"] == "Read this"
    assert result.kind is Outcome.SENT and result.provider_id == media.key_id
    assert result.provider_refs == [(0, media.key_id), (1, text.key_id)]


async def test_number_not_on_whatsapp_fails_permanently(fake: FakeEvolution,
                                                        channel: EvolutionChannel) -> None:
    fake.not_on_whatsapp.add(NUMBER)
    result = await channel.send(outbound())

    assert result.kind is Outcome.FAILED
    assert result.error_code == "not-on-whatsapp" and '"exists":false' in (
        result.error_message or "")


# -- instance gating -------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["close", "connecting"])
async def test_instance_not_open_defers_without_sending_then_sends(
        fake: FakeEvolution, channel: EvolutionChannel, state: str) -> None:
    fake.connection_state = state
    waiting = await channel.send(outbound())

    assert waiting.kind is Outcome.DEFER
    assert waiting.retry_after == 5.0 and state in (waiting.error_message or "")
    assert fake.requests_to(f"/message/sendText/{INSTANCE}") == []

    fake.connection_state = "open"
    assert (await channel.send(outbound())).kind is Outcome.SENT


async def test_state_is_cached_between_sends(fake: FakeEvolution, make: Any) -> None:
    channel = await make(session_cache_seconds=60)
    assert all([(await channel.send(outbound(i))).kind is Outcome.SENT for i in range(3)])

    assert len(fake.requests_to(f"/instance/connectionState/{INSTANCE}")) == 1


async def test_instance_closed_since_the_cached_look_up_defers(fake: FakeEvolution,
                                                               make: Any) -> None:
    channel = await make(session_cache_seconds=60)
    assert (await channel.send(outbound(1))).kind is Outcome.SENT
    fake.connection_state = "close"

    result = await channel.send(outbound(2))

    # Evolution answered 400 "Connection Closed": not the message's fault, so it waits.
    assert result.kind is Outcome.DEFER
    assert "close" in (result.error_message or "")


async def test_unknown_instance_defers_and_reports_offline(fake: FakeEvolution,
                                                          make: Any) -> None:
    channel = await make(instance="nope")
    result = await channel.send(outbound())
    status = await channel.status()

    assert result.kind is Outcome.DEFER and "not found" in (result.error_message or "")
    assert status.state == "OFFLINE" and "not found" in status.detail


# -- error classes ---------------------------------------------------------------------------


async def test_wrong_api_key_pauses_the_channel(fake: FakeEvolution, make: Any) -> None:
    channel = await make(api_key="wrong")
    result = await channel.send(outbound())

    assert result.kind is Outcome.PAUSE_CHANNEL and result.error_code == "401"
    assert fake.sent == []


async def test_401_on_send_pauses_the_channel(fake: FakeEvolution,
                                              channel: EvolutionChannel) -> None:
    fake.fail_next(1, 401)
    result = await channel.send(outbound())

    assert result.kind is Outcome.PAUSE_CHANNEL


async def test_server_error_is_retryable(fake: FakeEvolution, channel: EvolutionChannel) -> None:
    fake.fail_next(1, 500)
    failed = await channel.send(outbound())

    assert failed.kind is Outcome.RETRY
    assert failed.error_code == "500"
    assert (await channel.send(outbound())).kind is Outcome.SENT


async def test_retry_after_a_failed_second_part_sends_only_that_part(
        fake: FakeEvolution, channel: EvolutionChannel) -> None:
    fake.fail_next(1, 502, after=1)
    message = outbound(text="Listen", media_url="https://cdn.example/a.mp3",
                       media_kind="audio", parts=2)

    failed = await channel.send(message)
    retried = await channel.send(message)

    assert failed.kind is Outcome.RETRY
    media, text = fake.sent
    assert (media.action, text.action) == ("sendMedia", "sendText")
    assert retried.kind is Outcome.SENT
    assert retried.provider_refs == [(0, media.key_id), (1, text.key_id)]


# -- device status ---------------------------------------------------------------------------


@pytest.mark.parametrize(("state", "picky"), [
    ("open", "CONNECTED"), ("connecting", "TIMEOUT"), ("close", "UNPAIRED"),
])
async def test_status_maps_the_connection_state(fake: FakeEvolution, channel: EvolutionChannel,
                                                state: str, picky: str) -> None:
    fake.connection_state = state
    status = await channel.status()

    assert status.state == picky and status.connected == (picky == "CONNECTED")
    assert state in status.detail and status.extra == {"bridge_status": state}


async def test_status_of_an_unreachable_bridge(make: Any) -> None:
    status = await (await make(base_url=f"http://127.0.0.1:{free_port()}")).status()

    assert status.state == "OFFLINE" and "unreachable" in status.detail


# -- webhooks --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["keyId", "key"])
async def test_updates_map_to_the_lifecycle_whatever_the_order(
        fake: FakeEvolution, channel: EvolutionChannel, gateway: CallbackRoute, hook_url: str,
        shape: str) -> None:
    gateway.channel = channel
    await channel.send(outbound())
    sent = fake.sent[0]
    statuses = ["PENDING", "SERVER_ACK", "DELIVERY_ACK", "READ", "PLAYED"]

    answers = await fake.emit(hook_url, [fake.update_event(sent, s, shape=shape)
                                         for s in statuses], reorder=True, duplicate=True)

    assert answers == [200] * 10
    assert [u.state for u in gateway.updates] == [State.READ] * 4 + [
        State.DELIVERED, State.DELIVERED, State.SUBMITTED, State.SUBMITTED]
    assert {(u.channel_id, u.provider_id) for u in gateway.updates} == {(CHANNEL_ID,
                                                                         sent.key_id)}


async def test_error_status_fails_the_message(fake: FakeEvolution,
                                              channel: EvolutionChannel) -> None:
    await channel.send(outbound())
    event = fake.update_event(fake.sent[0], "ERROR")

    [update] = (await channel.handle_callback(callback_request(event))).updates

    assert update.state is State.FAILED and update.error_code == "ERROR"
    assert update.provider_id == fake.sent[0].key_id


async def test_numeric_statuses_of_older_versions(fake: FakeEvolution,
                                                  channel: EvolutionChannel) -> None:
    await channel.send(outbound())
    events = [fake.update_event(fake.sent[0], level, shape="key") for level in range(6)]

    states = [u.state for e in events
              for u in (await channel.handle_callback(callback_request(e))).updates]

    assert states == [State.FAILED, State.SUBMITTED, State.DELIVERED, State.READ, State.READ]


@pytest.mark.parametrize(("query", "headers", "answer"), [
    ({"token": TOKEN}, {}, 200),
    ({}, {"X-Webhook-Token": TOKEN}, 200),
    ({"token": "guess"}, {}, 401),
    ({}, {}, 401),
])
async def test_webhook_token_is_required_when_configured(
        fake: FakeEvolution, make: Any, gateway: CallbackRoute, bare_hook_url: str,
        query: dict[str, str], headers: dict[str, str], answer: int) -> None:
    gateway.channel = channel = await make(webhook_token=TOKEN)
    await channel.send(outbound())
    url = f"{bare_hook_url}?token={query['token']}" if query else bare_hook_url

    answers = await fake.emit(url, [fake.update_event(fake.sent[0], "READ")], headers=headers)

    assert answers == [answer]
    assert len(gateway.updates) == (1 if answer == 200 else 0)


async def test_a_channel_without_a_token_refuses_every_webhook(
        fake: FakeEvolution, make: Any, gateway: CallbackRoute, bare_hook_url: str,
        caplog: pytest.LogCaptureFixture) -> None:
    gateway.channel = channel = await make(webhook_token=None)
    assert "has no webhook_token: its callbacks are refused" in caplog.text
    await channel.send(outbound())
    update = fake.update_event(fake.sent[0], "DELIVERY_ACK")

    answers = [*await fake.emit(bare_hook_url, [update]),
               *await fake.emit(f"{bare_hook_url}?token=anything", [update]),
               *await fake.emit(bare_hook_url, [update], headers={"X-Webhook-Token": "x"})]

    assert answers == [403, 403, 403]
    assert gateway.updates == []


async def test_insecure_callbacks_accepts_webhooks_without_a_token_and_says_so(
        fake: FakeEvolution, make: Any, gateway: CallbackRoute, bare_hook_url: str,
        caplog: pytest.LogCaptureFixture) -> None:
    gateway.channel = channel = await make(webhook_token=None, insecure_callbacks=True)
    assert "insecure_callbacks is on" in caplog.text
    await channel.send(outbound())

    update = fake.update_event(fake.sent[0], "DELIVERY_ACK")
    assert await fake.emit(bare_hook_url, [update]) == [200]
    assert [u.state for u in gateway.updates] == [State.DELIVERED]


async def test_inbound_messages_from_people(fake: FakeEvolution, channel: EvolutionChannel,
                                            gateway: CallbackRoute, hook_url: str) -> None:
    gateway.channel = channel
    text = fake.upsert_event("5511988887777", text="oi")
    extended = fake.upsert_event("5511988887777",
                                 message={"extendedTextMessage": {"text": "see http://x"}})
    photo = fake.upsert_event("5511988887777", message={
        "imageMessage": {"caption": "look", "mimetype": "image/jpeg"},
        "mediaUrl": "https://s3.example/a.jpg"})
    place = fake.upsert_event("5511988887777", message={
        "locationMessage": {"degreesLatitude": -23.5, "degreesLongitude": -46.6}})
    own = fake.upsert_event("5511988887777", text="echo", from_me=True)
    group = fake.upsert_event("5511988887777", text="hi all", jid="120363000000@g.us")

    answers = await fake.emit(hook_url, [text, extended, photo, place, own, group])

    assert answers == [200] * 6
    got = [(m.number, m.text, m.type, m.media_url, m.name) for m in gateway.inbound]
    assert got == [("5511988887777", "oi", 1, None, "Maria"),
                   ("5511988887777", "see http://x", 1, None, "Maria"),
                   ("5511988887777", "look", 2, "https://s3.example/a.jpg", "Maria"),
                   ("5511988887777", "", 7, None, "Maria")]
    assert gateway.inbound[0].provider_id == text["data"]["key"]["id"]
    assert gateway.inbound[0].at == text["data"]["messageTimestamp"]


async def test_connection_and_unknown_events_change_nothing(
        fake: FakeEvolution, channel: EvolutionChannel, gateway: CallbackRoute,
        hook_url: str) -> None:
    gateway.channel = channel
    events = [fake.connection_event("close"), fake.envelope("presence.update", {"id": "x"})]

    assert await fake.emit(hook_url, events) == [200, 200]
    assert gateway.updates == [] and gateway.inbound == []


# -- config ----------------------------------------------------------------------------------


def test_config_defaults_are_filled() -> None:
    config = EvolutionChannel.validate_config({"base_url": "https://evo.example",
                                               "api_key": "k", "instance": "shop"})

    assert config == {"base_url": "https://evo.example", "api_key": "k",
                      "timeout_seconds": 30.0, "session_cache_seconds": 2.0,
                      "session_retry_seconds": 5.0, "link_preview": False,
                      "insecure_callbacks": False, "instance": "shop",
                      "webhook_token": None, "typing_delay_ms": 0}


@pytest.mark.parametrize(("config", "named"), [
    ({"base_url": "http://host", "api_key": "k"}, "instance"),
    ({"base_url": "http://host", "api_key": "k", "instance": " "}, "instance"),
    ({"base_url": "host:8080", "api_key": "k", "instance": "x"}, "base_url"),
    ({"base_url": "http://host", "api_key": "k", "instance": "x", "typing_delay_ms": -1},
     "typing_delay_ms"),
    ({"base_url": "http://host", "api_key": "k", "instance": "x", "session": "x"}, "session"),
    ({"base_url": "http://host", "api_key": "k", "instance": "x", "webhook_token": "t",
      "insecure_callbacks": True}, "insecure_callbacks"),
])
def test_bad_config_names_the_key(config: dict[str, Any], named: str) -> None:
    with pytest.raises(ChannelConfigError, match=named):
        EvolutionChannel.validate_config(config)


def test_kind_is_registered() -> None:
    assert channel_class("evolution") is EvolutionChannel


def test_a_new_channel_gets_a_random_token_unless_given_or_opted_out() -> None:
    base = {"base_url": "http://127.0.0.1:8080", "api_key": "k", "instance": "shop"}

    config, made = EvolutionChannel.with_callback_secret(base)

    assert made and len(made) >= 40 and config == {**base, "webhook_token": made}
    assert made != EvolutionChannel.with_callback_secret(base)[1]
    assert EvolutionChannel.with_callback_secret({**base, "webhook_token": "mine"})[1] is None
    assert EvolutionChannel.with_callback_secret({**base, "insecure_callbacks": True})[1] is None


async def test_the_printed_webhook_url_is_what_the_channel_checks(
        fake: FakeEvolution, make: Any, gateway: CallbackRoute, bare_hook_url: str) -> None:
    config, token = EvolutionChannel.with_callback_secret({"instance": INSTANCE})
    setup = EvolutionChannel.callback_setup(config, bare_hook_url)
    assert f"/webhook/set/{INSTANCE}" in setup[0]
    webhook = orjson.loads(setup[1])
    assert webhook["webhookByEvents"] is False and webhook["enabled"] is True
    assert set(webhook["events"]) == {"MESSAGES_UPSERT", "MESSAGES_UPDATE", "CONNECTION_UPDATE"}
    assert webhook["url"] == f"{bare_hook_url}?token={token}"

    gateway.channel = channel = await make(webhook_token=token)
    await channel.send(outbound())
    assert await fake.emit(webhook["url"], [fake.update_event(fake.sent[0], "READ")]) == [200]
    assert [u.state for u in gateway.updates] == [State.READ]
