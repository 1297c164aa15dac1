"""Connectors that pace their own requests (``Channel.paces_requests``) take one rate permit per
provider request, at the moment it goes out: with its connection already open (a connect
that takes a while must not bunch the requests behind it at the provider) and before its
first byte is written. Checked on the order of events, never on durations."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from pushgate.channels.base import ChannelEnv, channel_class
from pushgate.channels.http1 import Http1Pool
from pushgate.channels.whatsapp_cloud import WhatsAppCloudChannel
from pushgate.core.channels import ChannelSpec, PriceUnit
from pushgate.core.models import OutboundMessage, Outcome
from tests.fakes.graph_api import GraphFake
from tests.fakes.server import serve_app
from tests.fakes.twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio
from tests.fakes.waha import FakeWaha


def spec(kind: str, config: dict[str, Any]) -> ChannelSpec:
    return ChannelSpec(id=7, project_id=1, kind=kind, application=101,
                       price_unit=PriceUnit.MESSAGE, price_micro=10_000, rate_per_second=20,
                       config=config)


def message(message_id: int = 1, text: str = "Your bill is due", media_url: str | None = None
            ) -> OutboundMessage:
    return OutboundMessage(id=message_id, push_id=1, project_id=1, channel_id=7,
                           number=f"91987654{message_id:04d}", text=text, media_url=media_url,
                           media_kind=None, parts=1, priority=0, attempts=0)


class Recorder:
    """Stands in for the channel's limiter; ``on_permit`` says what it sees at each permit."""

    def __init__(self, on_permit: Any) -> None:
        self.on_permit = on_permit
        self.seen: list[Any] = []

    async def permit(self, n: int = 1) -> None:
        self.seen.append(self.on_permit())


@pytest.fixture(scope="module")
def graph() -> Iterator[tuple[GraphFake, str]]:
    fake = GraphFake(pair_interval=None)
    with serve_app(fake.app) as url:
        yield fake, url


@pytest.fixture(scope="module")
def twilio() -> Iterator[tuple[FakeTwilio, str]]:
    fake = FakeTwilio()
    with serve_app(fake.app) as url:
        yield fake, url


async def test_whatsapp_cloud_takes_a_permit_per_graph_send_with_its_connection_open(
        graph: tuple[GraphFake, str]) -> None:
    fake, url = graph
    channel = WhatsAppCloudChannel(spec("whatsapp_cloud", {
        "phone_number_id": fake.phone_number_id, "access_token": fake.access_token,
        "app_secret": fake.app_secret, "verify_token": "v", "graph_base_url": url,
        "pair_interval_seconds": 0}), ChannelEnv())
    assert channel.paces_requests
    await channel.start()
    pool = channel._transport
    assert isinstance(pool, Http1Pool)
    posts_before = len(fake.posts)
    # At each permit: the connections opened so far, and the requests the fake has had.
    recorder = Recorder(lambda: (pool.connections_opened, len(fake.posts) - posts_before))
    channel.limiter = recorder
    try:
        text = await channel.send(message(1))
        # An audio with a text is two Graph sends: two permits, each just before its send.
        audio = await channel.send(message(2, media_url="https://media.example.com/a.mp3"))
    finally:
        await channel.stop()
    assert text.kind is Outcome.SENT and audio.kind is Outcome.SENT
    assert len(audio.provider_refs) == 2
    assert recorder.seen == [(1, 0), (1, 1), (1, 2)]


@pytest.mark.parametrize("kind", ["twilio_sms", "twilio_voice"])
async def test_twilio_takes_a_permit_per_send_after_connecting_before_writing(
        twilio: tuple[FakeTwilio, str], kind: str) -> None:
    fake, url = twilio
    channel = channel_class(kind)(spec(kind, {
        "account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "api_base_url": url,
        "from_number": "+15005550006"}), ChannelEnv())
    assert channel.paces_requests
    events: list[str] = []
    recorder = Recorder(lambda: events.append("permit"))
    channel.limiter = recorder
    permit_extensions = channel.permit_extensions

    def logging_extensions() -> dict[str, Any]:
        """The channel's own trace hook, with every httpcore event noted around it."""
        take_permit = permit_extensions()["trace"]

        async def trace(event: str, info: dict[str, Any]) -> None:
            events.append(event)
            await take_permit(event, info)

        return {"trace": trace}

    channel.permit_extensions = logging_extensions  # type: ignore[method-assign]
    await channel.start()
    try:
        first = await channel.send(message(1))
        second = await channel.send(message(2))
    finally:
        await channel.stop()
    assert first.kind is Outcome.SENT and second.kind is Outcome.SENT
    assert events.count("permit") == 2
    connected = events.index("connection.connect_tcp.complete")
    first_permit = events.index("permit")
    assert connected < first_permit
    assert events[first_permit - 1] == "http11.send_request_headers.started"
    assert events[first_permit + 1] == "http11.send_request_headers.complete"
    # The second send reused the connection: its permit also right before its headers.
    second_permit = len(events) - 1 - events[::-1].index("permit")
    assert events[second_permit - 1] == "http11.send_request_headers.started"


async def test_a_bridge_takes_a_permit_per_part_not_for_its_session_look_up() -> None:
    """WAHA (as Evolution, the same base): an audio and its text are two WhatsApp messages,
    two permits; the session look-up before them is no message and takes none."""
    fake = FakeWaha(api_key="key")
    with serve_app(fake.app) as url:
        channel = channel_class("waha")(ChannelSpec(
            id=7, project_id=1, kind="waha", application=10, price_micro=1000,
            price_unit=PriceUnit.MESSAGE, rate_per_second=20,
            config={"base_url": url, "api_key": "key", "session_cache_seconds": 0}))
        assert channel.paces_requests
        recorder = Recorder(lambda: [r.path for r in fake.requests])
        channel.limiter = recorder
        await channel.start()
        try:
            result = await channel.send(message(1, text="Listen",
                                                media_url="https://cdn.example/a.ogg"))
        finally:
            await channel.stop()
    assert result.kind is Outcome.SENT
    assert [s.action for s in fake.sent] == ["sendVoice", "sendText"]
    assert len(recorder.seen) == 2
    # Each permit came before its own part reached the bridge, after the one before it.
    assert [len([p for p in seen if "/send" in p]) for seen in recorder.seen] == [0, 1]


async def test_the_pair_interval_runs_from_the_send_not_from_the_booking(
        graph: tuple[GraphFake, str]) -> None:
    """``send`` books the recipient's pair slot before the request waits for its permit; the
    interval must then start again when the request goes out, or two messages to one user
    could reach Meta closer than the interval (131056)."""
    fake, url = graph
    channel = WhatsAppCloudChannel(spec("whatsapp_cloud", {
        "phone_number_id": fake.phone_number_id, "access_token": fake.access_token,
        "app_secret": fake.app_secret, "verify_token": "v", "graph_base_url": url,
        "pair_interval_seconds": 6}), ChannelEnv())
    outgoing = message(9)
    booked: list[float] = []
    recorder = Recorder(lambda: (booked.append(channel.pacer._free_at[outgoing.number]),
                                 time.monotonic())[1])
    channel.limiter = recorder
    await channel.start()
    try:
        result = await channel.send(outgoing)
    finally:
        await channel.stop()
    assert result.kind is Outcome.SENT
    [permitted_at] = recorder.seen
    assert channel.pacer._free_at[outgoing.number] >= permitted_at + 6
    assert channel.pacer._free_at[outgoing.number] > booked[0]
