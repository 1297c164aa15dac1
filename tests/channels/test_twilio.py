"""The Twilio SMS and voice connectors against the fake Twilio API over real HTTP.

Status callbacks travel for real too: the fake posts them, signed, to a small receiver standing
in for the gateway's callback route, which hands them to the connector's ``handle_callback``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pushgate.api.callbacks import connector_answer, hand_to_connector, rejection
from pushgate.channels.base import (
    CallbackRejected,
    CallbackRequest,
    CallbackResult,
    ChannelConfigError,
    ChannelEnv,
    channel_class,
)
from pushgate.channels.twilio import (
    TwilioChannel,
    TwilioSmsChannel,
    TwilioVoiceChannel,
    twilio_signature,
)
from pushgate.core.channels import ChannelSpec, PriceUnit
from pushgate.core.lifecycle import State
from pushgate.core.models import OutboundMessage, Outcome
from tests.fakes.server import free_port, serve_app
from tests.fakes.twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio
from tests.fakes.twilio import sign as fake_sign

SMS_FROM = "+15557654321"
SERVICE_SID = "MG" + "ab" * 16


class CallbackReceiver:
    """The gateway's callback route without a store (``pushgate.api.callbacks``'s hand-over
    and answers), keeping what each callback came to."""

    def __init__(self) -> None:
        self.channels: dict[int, TwilioChannel] = {}
        self.outcomes: list[CallbackResult | CallbackRejected] = []
        self.app = Starlette(routes=[Route("/channels/{channel_id:int}/callback/{sub_path:path}",
                                           self._receive, methods=["POST"])])

    async def _receive(self, request: Request) -> Response:
        channel = self.channels[request.path_params["channel_id"]]
        try:
            result = await hand_to_connector(
                channel, request, f"{request.url.scheme}://{request.url.netloc}",
                await request.body(), request.path_params["sub_path"])
        except CallbackRejected as exc:
            self.outcomes.append(exc)
            return rejection(exc)
        self.outcomes.append(result)
        return connector_answer(result)

    def updates(self) -> list[tuple[State, str | None, str | None]]:
        return [(u.state, u.provider_id, u.error_code) for outcome in self.outcomes
                if isinstance(outcome, CallbackResult) for u in outcome.updates]


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[FakeTwilio, str, CallbackReceiver, str]]:
    fake, receiver = FakeTwilio(), CallbackReceiver()
    with serve_app(fake.app) as api_url, serve_app(receiver.app) as public_url:
        yield fake, api_url, receiver, public_url


@pytest.fixture
def fake(servers: tuple[FakeTwilio, str, CallbackReceiver, str]) -> FakeTwilio:
    servers[0].reset()
    return servers[0]


@pytest.fixture
def receiver(servers: tuple[FakeTwilio, str, CallbackReceiver, str]) -> CallbackReceiver:
    servers[2].channels.clear()
    servers[2].outcomes.clear()
    return servers[2]


MakeChannel = Callable[..., Any]


@pytest.fixture
async def make_channel(servers: tuple[FakeTwilio, str, CallbackReceiver, str],
                       receiver: CallbackReceiver) -> AsyncIterator[MakeChannel]:
    _, api_url, _, public_url = servers
    started: list[TwilioChannel] = []

    async def make(kind: str = "twilio_sms", channel_id: int = 7, **config: Any) -> Any:
        config = {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "api_base_url": api_url,
                  **({"from_number": SMS_FROM} if "messaging_service_sid" not in config else {}),
                  **config}
        spec = ChannelSpec(id=channel_id, project_id=1, kind=kind,
                           application=3 if kind == "twilio_sms" else 4, price_micro=1000,
                           price_unit=PriceUnit.SEGMENT if kind == "twilio_sms"
                           else PriceUnit.CALL, config=config)
        channel = channel_class(kind)(spec, ChannelEnv(public_url=public_url))
        await channel.start()
        started.append(channel)
        receiver.channels[channel_id] = channel
        return channel

    yield make
    for channel in started:
        await channel.stop()


def message(number: str = "919876543210", text: str = "Your code is 4711",
            media_url: str | None = None, media_kind: str | None = None,
            message_id: int = 1) -> OutboundMessage:
    return OutboundMessage(id=message_id, push_id=1, project_id=1, channel_id=7, number=number,
                           text=text, media_url=media_url, media_kind=media_kind, parts=1,
                           priority=0, attempts=0)


# -- SMS sending ---------------------------------------------------------------------------

async def test_sms_text_goes_out_form_encoded_with_basic_auth(
        fake: FakeTwilio, make_channel: MakeChannel) -> None:
    channel = await make_channel()
    first = await channel.send(message(message_id=1))
    second = await channel.send(message(number="447700900123", message_id=2))

    assert first.kind is Outcome.SENT and first.message_id == 1
    assert first.provider_id in fake.messages and first.provider_id.startswith("SM")
    assert second.kind is Outcome.SENT and second.provider_id != first.provider_id
    sent = fake.requests[0]
    assert sent.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert sent.auth == (ACCOUNT_SID, AUTH_TOKEN)
    assert dict(sent.form) == {
        "To": "+919876543210", "From": SMS_FROM, "Body": "Your code is 4711",
        "StatusCallback": channel.env.callback_url(7, "sms")}
    # One client for all sends: the second request came over the first one's connection.
    assert fake.requests[1].client_port == sent.client_port


async def test_sms_media_url_goes_with_the_body(
        fake: FakeTwilio, make_channel: MakeChannel) -> None:
    channel = await make_channel()
    url = "https://cdn.example/pic.jpg?sig=a&exp=1"
    result = await channel.send(message(text="Look", media_url=url, media_kind="image"))

    assert result.kind is Outcome.SENT
    assert fake.requests[0].values("MediaUrl") == [url]
    assert fake.requests[0].value("Body") == "Look"


async def test_sms_through_a_messaging_service(
        fake: FakeTwilio, make_channel: MakeChannel) -> None:
    channel = await make_channel(messaging_service_sid=SERVICE_SID)
    result = await channel.send(message())

    assert result.kind is Outcome.SENT and result.provider_id in fake.messages
    form = dict(fake.requests[0].form)
    assert form["MessagingServiceSid"] == SERVICE_SID
    assert "From" not in form


# -- errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("code", [21211, 21610, 21408, 21614, 21606, 21608])
async def test_documented_refusals_are_permanent(
        code: int, fake: FakeTwilio, make_channel: MakeChannel) -> None:
    channel = await make_channel()
    fake.refuse("+919876543210", code)
    result = await channel.send(message())

    assert result.kind is Outcome.FAILED
    assert result.error_code == str(code)
    assert result.error_message and "Twilio" in result.error_message


async def test_a_code_outside_the_table_falls_back_on_the_http_status(
        fake: FakeTwilio, make_channel: MakeChannel) -> None:
    channel = await make_channel()
    fake.refuse("+919876543210", 21602)   # a 400 the connector's table does not list
    result = await channel.send(message())
    assert (result.kind, result.error_code) == (Outcome.FAILED, "21602")


async def test_rate_limit_is_retryable_with_retry_after(
        fake: FakeTwilio, make_channel: MakeChannel) -> None:
    channel = await make_channel()
    fake.rate_limit(1, retry_after="7")
    limited = await channel.send(message())
    after = await channel.send(message())

    assert limited.kind is Outcome.RETRY
    assert limited.error_code == "20429" and limited.retry_after == 7.0
    assert after.kind is Outcome.SENT


async def test_pair_limit_defers_without_counting_an_attempt(
        fake: FakeTwilio, make_channel: MakeChannel) -> None:
    channel = await make_channel()
    fake.refuse("+919876543210", 14107)
    result = await channel.send(message())

    assert result.kind is Outcome.DEFER
    assert result.error_code == "14107" and result.retry_after == 30.0


async def test_wrong_credentials_pause_the_channel(
        fake: FakeTwilio, make_channel: MakeChannel) -> None:
    channel = await make_channel(auth_token="not-the-token")
    result = await channel.send(message())

    assert result.kind is Outcome.PAUSE_CHANNEL
    assert result.error_code == "20003"


@pytest.mark.parametrize("code", [20500, 20503])
async def test_server_errors_are_retryable(
        code: int, fake: FakeTwilio, make_channel: MakeChannel) -> None:
    channel = await make_channel()
    fake.fail(1, code)
    result = await channel.send(message())

    assert result.kind is Outcome.RETRY
    assert result.error_code == str(code)
    assert (await channel.send(message())).kind is Outcome.SENT


async def test_unreachable_api_is_retryable(make_channel: MakeChannel) -> None:
    channel = await make_channel(api_base_url=f"http://127.0.0.1:{free_port()}")
    result = await channel.send(message())
    assert (result.kind, result.error_code) == (Outcome.RETRY, "network")


# -- signatures ----------------------------------------------------------------------------

def test_signature_matches_the_documented_test_vector() -> None:
    params = [("CallSid", "CA1234567890ABCDE"), ("Caller", "+12349013030"),
              ("Digits", "1234"), ("From", "+12349013030"), ("To", "+18005551212")]
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert twilio_signature("12345", url, list(reversed(params))) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    # The fake signs on its own; it must agree with the documented vector as well.
    assert fake_sign("12345", url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


async def test_hand_signed_callback_is_accepted_and_a_wrong_one_refused(
        make_channel: MakeChannel) -> None:
    channel = await make_channel()
    url = "https://pg.example/channels/7/callback/sms"
    body = "MessageSid=SM1&SmsSid=SM1&MessageStatus=delivered&SmsStatus=delivered&To=%2B4477"
    # By hand, per the documented algorithm: URL, then name+value sorted by name.
    signed = (url + "MessageSidSM1" + "MessageStatusdelivered" + "SmsSidSM1"
              + "SmsStatusdelivered" + "To+4477")
    signature = base64.b64encode(
        hmac.new(AUTH_TOKEN.encode(), signed.encode(), hashlib.sha1).digest()).decode()

    def request(sig: str, at: str = url) -> CallbackRequest:
        return CallbackRequest("POST", at, {"x-twilio-signature": sig}, {}, body.encode(), "sms")

    result = await channel.handle_callback(request(signature))
    assert [(u.state, u.provider_id) for u in result.updates] == [(State.DELIVERED, "SM1")]
    # Behind a proxy the framework may show the default port Twilio did not sign.
    port_shown = await channel.handle_callback(
        request(signature, "https://pg.example:443/channels/7/callback/sms"))
    assert len(port_shown.updates) == 1
    for bad in (signature[:-2] + "A=", ""):
        with pytest.raises(CallbackRejected) as rejected:
            await channel.handle_callback(request(bad))
        assert rejected.value.status_code == 403
    with pytest.raises(CallbackRejected):   # same signature, other URL
        await channel.handle_callback(request(signature, url + "?x=1"))


@pytest.mark.parametrize("signature", ["wrong", "missing"])
async def test_badly_signed_callbacks_are_rejected_over_http(
        signature: str, fake: FakeTwilio, receiver: CallbackReceiver,
        make_channel: MakeChannel) -> None:
    channel = await make_channel()
    sid = (await channel.send(message())).provider_id
    response = await fake.message_status(sid, "delivered", signature=signature)

    assert response.status_code == 403
    assert receiver.updates() == []
    assert isinstance(receiver.outcomes[0], CallbackRejected)


# -- SMS status callbacks ------------------------------------------------------------------

async def test_sms_delivery_callbacks_map_to_states(
        fake: FakeTwilio, receiver: CallbackReceiver, make_channel: MakeChannel) -> None:
    channel = await make_channel()
    sid = (await channel.send(message())).provider_id
    for status in ("queued", "sending"):
        assert (await fake.message_status(sid, status)).status_code == 200
    responses = await fake.deliver(sid, "delivered")
    await fake.message_status(sid, "read")

    assert [r.status_code for r in responses] == [200, 200]
    assert responses[0].text == "<Response/>"
    assert receiver.updates() == [(State.SUBMITTED, sid, None), (State.DELIVERED, sid, None),
                                  (State.READ, sid, None)]
    update = receiver.outcomes[-1].updates[0]
    assert update.channel_id == 7 and update.at > 0


@pytest.mark.parametrize("final", ["undelivered", "failed"])
async def test_sms_failure_callback_carries_the_error_code(
        final: str, fake: FakeTwilio, receiver: CallbackReceiver,
        make_channel: MakeChannel) -> None:
    channel = await make_channel(messaging_service_sid=SERVICE_SID)
    sid = (await channel.send(message())).provider_id
    await fake.deliver(sid, final, error_code=30003)

    assert receiver.updates() == [(State.SUBMITTED, sid, None), (State.FAILED, sid, "30003")]
    failed = receiver.outcomes[-1].updates[0]
    assert failed.error_message == f"Twilio {final}: unreachable destination handset"


async def test_callback_without_status_is_refused(make_channel: MakeChannel) -> None:
    channel = await make_channel()
    url, body = "https://pg.example/cb", [("AccountSid", ACCOUNT_SID)]
    request = CallbackRequest("POST", url,
                              {"x-twilio-signature": twilio_signature(AUTH_TOKEN, url, body)},
                              {}, urllib.parse.urlencode(body).encode())
    with pytest.raises(CallbackRejected) as rejected:
        await channel.handle_callback(request)
    assert rejected.value.status_code == 400


# -- voice ---------------------------------------------------------------------------------

def twiml_of(fake: FakeTwilio) -> ET.Element:
    twiml = fake.requests[-1].value("Twiml")
    assert twiml is not None
    return ET.fromstring(twiml)


async def test_voice_says_the_text_escaped(fake: FakeTwilio, make_channel: MakeChannel) -> None:
    channel = await make_channel("twilio_voice", voice="Polly.Aditi", language="en-IN")
    text = 'Bill <due> & "paid" > 0'
    result = await channel.send(message(text=text))

    assert result.kind is Outcome.SENT and result.provider_id in fake.calls
    assert result.provider_id.startswith("CA")
    sent = fake.requests[-1]
    assert sent.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json"
    assert (sent.value("To"), sent.value("From")) == ("+919876543210", SMS_FROM)
    assert sent.value("StatusCallback") == channel.env.callback_url(7, "voice")
    assert sent.values("StatusCallbackEvent") == ["completed"]
    assert sent.value("Twiml") == ('<Response><Say voice="Polly.Aditi" language="en-IN">'
                                   'Bill &lt;due&gt; &amp; "paid" &gt; 0</Say></Response>')
    say = twiml_of(fake).find("Say")
    assert say is not None and say.text == text


async def test_voice_plays_audio_then_says_the_text(
        fake: FakeTwilio, make_channel: MakeChannel) -> None:
    channel = await make_channel("twilio_voice")
    audio = "https://cdn.example/a.mp3?sig=1&exp=2"
    sent = await channel.send(message(text="Thanks", media_url=audio, media_kind="audio"))
    assert sent.kind is Outcome.SENT
    root = twiml_of(fake)
    assert [(e.tag, e.text) for e in root] == [("Play", audio), ("Say", "Thanks")]
    assert root[1].attrib == {"voice": "alice", "language": "en-US"}
    assert "&amp;exp=2" in (fake.requests[-1].value("Twiml") or "")

    sent = await channel.send(message(text="", media_url=audio, media_kind="audio"))
    assert sent.kind is Outcome.SENT
    assert [e.tag for e in twiml_of(fake)] == ["Play"]


async def test_voice_refuses_what_it_cannot_play(
        fake: FakeTwilio, make_channel: MakeChannel) -> None:
    channel = await make_channel("twilio_voice")
    image = await channel.send(message(media_url="https://cdn.example/p.png",
                                       media_kind="image"))
    too_long = await channel.send(message(text="&" * 900))

    assert (image.kind, image.error_code) == (Outcome.FAILED, "media-kind")
    assert (too_long.kind, too_long.error_code) == (Outcome.FAILED, "too-long")
    assert fake.requests == []


async def test_voice_errors_use_the_same_table(
        fake: FakeTwilio, make_channel: MakeChannel) -> None:
    channel = await make_channel("twilio_voice")
    fake.refuse("+919876543210", 21211)
    invalid = await channel.send(message())
    fake.rate_limit(1, retry_after="3")
    limited = await channel.send(message(number="447700900123"))

    assert (invalid.kind, invalid.error_code) == (Outcome.FAILED, "21211")
    assert (limited.kind, limited.retry_after, limited.error_code) == (
        Outcome.RETRY, 3.0, "20429")


@pytest.mark.parametrize(("status", "expected"), [
    ("completed", (State.DELIVERED, None)),
    ("busy", (State.FAILED, "busy")),
    ("no-answer", (State.FAILED, "no-answer")),
    ("failed", (State.FAILED, "failed")),
    ("canceled", (State.FAILED, "canceled")),
])
async def test_voice_final_status_maps_to_states(
        status: str, expected: tuple[State, str | None], fake: FakeTwilio,
        receiver: CallbackReceiver, make_channel: MakeChannel) -> None:
    channel = await make_channel("twilio_voice")
    sid = (await channel.send(message())).provider_id
    # Progress events were not subscribed to: Twilio would not send them.
    assert await fake.call_status(sid, "ringing") is None
    response = await fake.call_status(sid, status)

    assert response is not None and response.status_code == 200
    assert receiver.updates() == [(expected[0], sid, expected[1])]


async def test_voice_progress_callbacks_change_nothing(make_channel: MakeChannel) -> None:
    channel = await make_channel("twilio_voice")
    url = channel.env.callback_url(7, "voice")
    for status in ("queued", "initiated", "ringing", "in-progress"):
        params = [("CallSid", "CA1"), ("CallStatus", status)]
        request = CallbackRequest("POST", url, {
            "x-twilio-signature": twilio_signature(AUTH_TOKEN, url, params)}, {},
            urllib.parse.urlencode(params).encode(), "voice")
        assert (await channel.handle_callback(request)).updates == []


# -- config --------------------------------------------------------------------------------

def test_config_defaults_are_filled() -> None:
    sms = TwilioSmsChannel.validate_config(
        {"account_sid": ACCOUNT_SID, "auth_token": "t", "from_number": "15557654321"})
    voice = TwilioVoiceChannel.validate_config(
        {"account_sid": ACCOUNT_SID, "auth_token": "t", "from_number": "+15557654321"})
    alpha = TwilioSmsChannel.validate_config(
        {"account_sid": ACCOUNT_SID, "auth_token": "t", "from_number": "PushGate"})

    assert sms["api_base_url"] == "https://api.twilio.com"
    assert sms["from_number"] == "+15557654321"
    assert (voice["voice"], voice["language"]) == ("alice", "en-US")
    assert alpha["from_number"] == "PushGate"


@pytest.mark.parametrize(("kind", "config", "bad_key"), [
    ("twilio_sms", {"auth_token": "t", "from_number": SMS_FROM}, "account_sid"),
    ("twilio_sms", {"account_sid": "ACnope", "auth_token": "t", "from_number": SMS_FROM},
     "account_sid"),
    ("twilio_sms", {"account_sid": ACCOUNT_SID, "from_number": SMS_FROM}, "auth_token"),
    ("twilio_sms", {"account_sid": ACCOUNT_SID, "auth_token": "t"}, "from_number"),
    ("twilio_sms", {"account_sid": ACCOUNT_SID, "auth_token": "t", "from_number": "+12"},
     "from_number"),
    ("twilio_sms", {"account_sid": ACCOUNT_SID, "auth_token": "t",
                    "messaging_service_sid": "SM123"}, "messaging_service_sid"),
    ("twilio_sms", {"account_sid": ACCOUNT_SID, "auth_token": "t", "from_number": SMS_FROM,
                    "api_base_url": "ftp://x"}, "api_base_url"),
    ("twilio_voice", {"account_sid": ACCOUNT_SID, "auth_token": "t"}, "from_number"),
    ("twilio_voice", {"account_sid": ACCOUNT_SID, "auth_token": "t", "from_number": "PushGate"},
     "from_number"),
    ("twilio_voice", {"account_sid": ACCOUNT_SID, "auth_token": "t", "from_number": SMS_FROM,
                      "voice": ""}, "voice"),
    ("twilio_voice", {"account_sid": ACCOUNT_SID, "auth_token": "t", "from_number": SMS_FROM,
                      "messaging_service_sid": SERVICE_SID}, "messaging_service_sid"),
    ("twilio_sms", {"account_sid": ACCOUNT_SID, "auth_token": "t", "from": SMS_FROM}, "'from'"),
])
def test_bad_config_names_the_key(kind: str, config: dict[str, Any], bad_key: str) -> None:
    with pytest.raises(ChannelConfigError, match=bad_key):
        channel_class(kind).validate_config(config)


# -- status --------------------------------------------------------------------------------

async def test_status_checks_the_account(fake: FakeTwilio, make_channel: MakeChannel) -> None:
    ok = await (await make_channel()).status()
    bad_token = await (await make_channel(channel_id=8, auth_token="wrong")).status()
    down = await (await make_channel(
        channel_id=9, api_base_url=f"http://127.0.0.1:{free_port()}")).status()
    fake.account_status = "suspended"
    suspended = await (await make_channel(channel_id=10)).status()

    assert (ok.connected, ok.state, ok.connected_number) == (True, "CONNECTED", SMS_FROM)
    assert fake.requests[0].path == f"/2010-04-01/Accounts/{ACCOUNT_SID}.json"
    assert (bad_token.connected, bad_token.state) == (False, "OFFLINE")
    assert "20003" in bad_token.detail and "wrong" not in bad_token.detail
    assert (down.connected, down.state) == (False, "TIMEOUT")
    assert (suspended.connected, suspended.state) == (False, "OFFLINE")
    assert "suspended" in suspended.detail


async def test_status_works_before_start(servers: tuple[FakeTwilio, str, CallbackReceiver, str],
                                         fake: FakeTwilio) -> None:
    spec = ChannelSpec(id=11, project_id=1, kind="twilio_sms", application=3, price_micro=1,
                       price_unit=PriceUnit.SEGMENT,
                       config={"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN,
                               "api_base_url": servers[1], "from_number": SMS_FROM})
    channel = TwilioSmsChannel(spec)
    try:
        assert (await channel.status()).connected
    finally:
        await channel.stop()
