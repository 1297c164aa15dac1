"""Twilio connectors: SMS/MMS (Picky application 3) and voice-message calls (application 4).

Both talk to Twilio's REST API (``/2010-04-01/Accounts/{sid}/...``) with form-encoded POSTs and
HTTP basic auth, and learn a message's fate from Twilio's status callbacks, which reach the
gateway at ``{public_url}/channels/{id}/callback/sms`` or ``.../voice`` and are trusted only
after their ``X-Twilio-Signature`` checks out. Wire format: channel-wire-formats.md section 5.

Config keys (``channel add --config``):

- ``account_sid`` (``AC...``), ``auth_token``: required. The token also signs callbacks.
- ``api_base_url``: default ``https://api.twilio.com`` (tests point it at a fake).
- ``twilio_sms``: ``from_number`` (+E.164 or an alphanumeric sender id) and/or
  ``messaging_service_sid`` (``MG...``); at least one.
- ``twilio_voice``: ``from_number`` (+E.164), ``voice`` (default ``alice``), ``language``
  (default ``en-US``).
- A destination allow-list is the gateway's, for every SMS channel: ``allowed_country_codes``
  in the channel config refuses other countries at accept (error 210); connectors never see it.

Twilio has no idempotency key for sends, so a send whose answer was lost (timeout after the
request left) may be repeated by the retry; that is the provider's limit, not hidden here.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import re
import time
import urllib.parse
import xml.etree.ElementTree as ET
from typing import Any, ClassVar

import httpx
import msgspec

from pushgate.channels.base import (
    CallbackRejected,
    CallbackRequest,
    CallbackResult,
    Channel,
    ChannelConfigError,
    ChannelEnv,
    ChannelStatus,
    register,
)
from pushgate.channels.config import ChannelConfig
from pushgate.core.channels import ChannelSpec, MediaKind, media_kind_from_url
from pushgate.core.lifecycle import State
from pushgate.core.models import OutboundMessage, Outcome, SendResult, StatusUpdate

__all__ = [
    "TwilioSmsChannel",
    "TwilioVoiceChannel",
    "twilio_signature",
]

DEFAULT_API_BASE_URL = "https://api.twilio.com"
API_VERSION = "2010-04-01"
# Twilio refuses inline TwiML longer than this (wire formats 5.4).
MAX_TWIML_CHARS = 4000
# 14107 (too many messages between one pair) counts over 30 s windows.
PAIR_WINDOW_SECONDS = 30.0
_TIMEOUT = httpx.Timeout(20.0, connect=5.0)

_ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")
_SERVICE_SID = re.compile(r"MG[0-9a-fA-F]{32}")
_PHONE_NUMBER = re.compile(r"\+?[1-9][0-9]{6,14}")
# Alphanumeric sender ids: up to 11 letters, digits and spaces, at least one letter.
_ALPHA_SENDER = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")


# Every Twilio error code this module knows, what a send meeting it becomes (DEFER: the pair
# limit, not an attempt; PAUSE_CHANNEL: credentials refused, the message waits), and a short
# description (also used for ErrorCode in failed/undelivered callbacks). Wire formats 5.1.
ERRORS: dict[int, tuple[Outcome, str]] = {
    20003: (Outcome.PAUSE_CHANNEL, "authentication failed (account sid or auth token)"),
    20429: (Outcome.RETRY, "too many requests"),
    14107: (Outcome.DEFER, "too many messages between this pair of numbers in 30 s"),
    21211: (Outcome.FAILED, "invalid 'To' number"),
    21408: (Outcome.FAILED, "sending to this region is not enabled"),
    21606: (Outcome.FAILED, "the 'From' number cannot send to this destination"),
    21608: (Outcome.FAILED, "unverified 'To' number (trial account)"),
    21610: (Outcome.FAILED, "recipient opted out (replied STOP)"),
    21614: (Outcome.FAILED, "'To' number cannot receive SMS"),
    30001: (Outcome.RETRY, "queue overflow"),
    30003: (Outcome.FAILED, "unreachable destination handset"),
    30005: (Outcome.FAILED, "unknown or inactive destination number"),
    30006: (Outcome.FAILED, "landline or unreachable carrier"),
    30007: (Outcome.FAILED, "filtered by the carrier"),
    30008: (Outcome.FAILED, "unknown delivery error"),
    63016: (Outcome.FAILED, "outside the WhatsApp 24-hour window"),
    63018: (Outcome.RETRY, "WhatsApp rate limit"),
}
# Codes not in ERRORS, by HTTP status. 403 and 404 on our own account's resources mean the
# channel is misconfigured: pausing it keeps the queue, where failing would refund it all.
_BY_HTTP_STATUS: dict[int, Outcome] = {
    401: Outcome.PAUSE_CHANNEL,
    403: Outcome.PAUSE_CHANNEL,
    404: Outcome.PAUSE_CHANNEL,
    408: Outcome.RETRY,
    429: Outcome.RETRY,
}


def classify(http_status: int, code: int | None) -> Outcome:
    """What a refused send becomes, by Twilio error code first, then by HTTP status."""
    if code in ERRORS:
        return ERRORS[code][0]
    if http_status in _BY_HTTP_STATUS:
        return _BY_HTTP_STATUS[http_status]
    return Outcome.RETRY if http_status >= 500 else Outcome.FAILED


def twilio_signature(auth_token: str, url: str, params: list[tuple[str, str]]) -> str:
    """``X-Twilio-Signature`` of a form POST: base64 HMAC-SHA1, keyed with the auth token, of the
    full URL followed by every parameter's name and value, sorted by name (a repeated name's
    values sorted too). Wire formats 5.3."""
    payload = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _url_variants(url: str) -> list[str]:
    """The URL as given, plus with its default port added or removed: Twilio signs the URL as
    it was configured, and proxies and frameworks disagree on whether ``:443`` shows."""
    parts = urllib.parse.urlsplit(url)
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    if default_port is None:
        return [url]
    if parts.port is None:
        netloc = f"{parts.netloc}:{default_port}"
    elif parts.port == default_port:
        netloc = parts.netloc.rsplit(":", 1)[0]
    else:
        return [url]
    return [url, urllib.parse.urlunsplit(parts._replace(netloc=netloc))]


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_fields(response: httpx.Response) -> tuple[int | None, str]:
    """Twilio's error object (``code``, ``message``, ``more_info``, ``status``) as (code,
    message); a body that is not one (a proxy's HTML page) gives (None, a short excerpt)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "message" in body:
        code = body.get("code")
        return (code if isinstance(code, int) else None), str(body["message"])
    return None, f"HTTP {response.status_code}: {response.text[:200]}"


def _refused(message: OutboundMessage, response: httpx.Response) -> SendResult:
    """The SendResult of a send Twilio answered with an error."""
    code, text = _error_fields(response)
    outcome = classify(response.status_code, code)
    retry_after = None if outcome is Outcome.FAILED else _retry_after(response)
    if outcome is Outcome.DEFER and retry_after is None:
        retry_after = PAIR_WINDOW_SECONDS
    return SendResult(message.id, outcome,
                      error_code=str(code) if code is not None else f"http-{response.status_code}",
                      error_message=f"Twilio: {text}", retry_after=retry_after)


def _phone(value: Any, key: str) -> str:
    if not isinstance(value, str) or not _PHONE_NUMBER.fullmatch(value.strip()):
        raise ChannelConfigError(f"{key} must be a phone number in E.164 form, e.g. +15557654321")
    return "+" + value.strip().lstrip("+")


def _required_text(config: dict[str, Any], key: str) -> str:
    value = config.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ChannelConfigError(f"{key} is required (a non-empty string)")
    return value.strip()


class TwilioConfig(ChannelConfig, kw_only=True):
    """The account both Twilio kinds send through."""

    account_sid: str
    auth_token: str
    api_base_url: str = DEFAULT_API_BASE_URL

    def __repr__(self) -> str:
        # Configs end up in tracebacks and logs: never show the token.
        return f"{type(self).__name__}(account_sid={self.account_sid!r}, token redacted)"

    @classmethod
    def normalise(cls, config: dict[str, Any]) -> dict[str, Any]:
        account_sid = _required_text(config, "account_sid")
        if not _ACCOUNT_SID.fullmatch(account_sid):
            raise ChannelConfigError("account_sid must be 'AC' followed by 32 hex digits")
        api_base_url = config.get("api_base_url", DEFAULT_API_BASE_URL)
        if not isinstance(api_base_url, str) or urllib.parse.urlsplit(
                api_base_url).scheme not in ("http", "https"):
            raise ChannelConfigError("api_base_url must be an http(s) URL")
        return {
            **config,
            "account_sid": account_sid,
            "auth_token": _required_text(config, "auth_token"),
            "api_base_url": api_base_url.rstrip("/"),
        }


class TwilioSmsConfig(TwilioConfig, kw_only=True):
    """A sender: a number (or alphanumeric id) or a Messaging Service, or both."""

    from_number: str | None = None
    messaging_service_sid: str | None = None

    @classmethod
    def normalise(cls, config: dict[str, Any]) -> dict[str, Any]:
        config = super().normalise(config)
        sender, service = config.get("from_number"), config.get("messaging_service_sid")
        if sender is None and service is None:
            raise ChannelConfigError("from_number or messaging_service_sid is required")
        if sender is not None:
            is_alpha = isinstance(sender, str) and _ALPHA_SENDER.fullmatch(sender.strip())
            config["from_number"] = sender.strip() if is_alpha else _phone(sender, "from_number")
        if service is not None and not (
                isinstance(service, str) and _SERVICE_SID.fullmatch(service)):
            raise ChannelConfigError("messaging_service_sid must be 'MG' followed by 32 hex digits")
        return config


class TwilioVoiceConfig(TwilioConfig, kw_only=True):
    """The calling number and the voice that says the text."""

    from_number: str
    voice: str = "alice"
    language: str = "en-US"

    @classmethod
    def normalise(cls, config: dict[str, Any]) -> dict[str, Any]:
        config = super().normalise(config)
        config["from_number"] = _phone(config.get("from_number"), "from_number")
        for key, default in (("voice", "alice"), ("language", "en-US")):
            value = config.get(key, default)
            if not isinstance(value, str) or not value.strip():
                raise ChannelConfigError(f"{key} must be a non-empty string")
            config[key] = value.strip()
        return config


class TwilioChannel(Channel):
    """What the SMS and voice connectors share: config, the HTTP client, error handling,
    signature checks and the account check of ``status()``."""

    # Twilio queues excess sends itself (per-sender MPS, 1 CPS for calls); a few requests in
    # flight keep the API round trip from being the limit.
    concurrency = 8
    shareable: ClassVar[bool] = True
    # A send takes the channel's rate permit as its request is written, after any connect.
    paces_requests: ClassVar[bool] = True
    # Where Twilio posts this kind's status callbacks (sub-path of the channel's callback URL).
    callback_sub_path: ClassVar[str] = ""
    # The account's resource a send creates (``/Messages`` or ``/Calls``).
    api_resource: ClassVar[str] = ""

    def __init__(self, spec: ChannelSpec, env: ChannelEnv | None = None) -> None:
        super().__init__(spec, env)
        self.config = msgspec.structs.asdict(self.stored_config())
        self.account_sid: str = self.config["account_sid"]
        self._auth_token: str = self.config["auth_token"]
        self._http: httpx.AsyncClient | None = None

    @property
    def http(self) -> httpx.AsyncClient:
        # Created on first use so ``status()`` works on a channel nobody started.
        if self._http is None:
            self._http = httpx.AsyncClient(
                base_url=self.config["api_base_url"],
                auth=(self.account_sid, self._auth_token),
                timeout=_TIMEOUT,
                headers={"Accept": "application/json", "User-Agent": "pushgate"},
            )
        return self._http

    async def start(self) -> None:
        _ = self.http

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _callback_url(self) -> str:
        return self.env.callback_url(self.spec.id, self.callback_sub_path)

    def _account_path(self, resource: str = "") -> str:
        return f"/{API_VERSION}/Accounts/{self.account_sid}{resource}.json"

    # -- sending ---------------------------------------------------------------------------

    def _params(self, message: OutboundMessage) -> list[tuple[str, str]] | SendResult:
        """The form of one send, or the permanent failure that stops it before Twilio."""
        raise NotImplementedError

    async def send(self, message: OutboundMessage) -> SendResult:
        params = self._params(message)
        if isinstance(params, SendResult):
            return params
        try:
            # Encoded here: httpx's ``data=`` takes a dict, and a form may repeat a name.
            response = await self.http.post(
                self._account_path(self.api_resource), content=urllib.parse.urlencode(params),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                extensions=self.permit_extensions())
        except httpx.HTTPError as exc:
            return SendResult.retry(message.id, "network",
                                    f"Twilio unreachable: {type(exc).__name__}: {exc}")
        if response.is_success:
            try:
                sid = response.json()["sid"]
            except (ValueError, KeyError, TypeError):
                return SendResult.retry(message.id, "bad-response",
                                        f"Twilio answered {response.status_code} "
                                        f"without a sid: {response.text[:200]}")
            return SendResult.sent(message.id, str(sid))
        return _refused(message, response)

    # -- callbacks -------------------------------------------------------------------------

    def _verified_params(self, request: CallbackRequest) -> dict[str, str]:
        """The callback's form parameters, once its signature is proven; else CallbackRejected."""
        signature = request.headers.get("x-twilio-signature")
        if not signature:
            raise CallbackRejected(403, "missing X-Twilio-Signature")
        pairs = urllib.parse.parse_qsl(request.body.decode("utf-8", "replace"),
                                       keep_blank_values=True)
        if not any(hmac.compare_digest(twilio_signature(self._auth_token, url, pairs), signature)
                   for url in _url_variants(request.url)):
            raise CallbackRejected(403, "X-Twilio-Signature does not match")
        return dict(pairs)

    @staticmethod
    def _answer(updates: list[StatusUpdate]) -> CallbackResult:
        # Twilio ignores a status callback's body; empty TwiML is a valid answer anywhere.
        return CallbackResult(status_code=200, body=b"<Response/>", content_type="text/xml",
                              updates=updates)

    # -- status ----------------------------------------------------------------------------

    async def status(self) -> ChannelStatus:
        number = self.config.get("from_number")
        try:
            response = await self.http.get(self._account_path())
        except httpx.HTTPError as exc:
            return ChannelStatus(connected=False, state="TIMEOUT", connected_number=number,
                                 detail=f"Twilio unreachable: {type(exc).__name__}")
        if not response.is_success:
            code, text = _error_fields(response)
            return ChannelStatus(connected=False, state="OFFLINE", connected_number=number,
                                 detail=f"Twilio refused the account check "
                                        f"({code or response.status_code}): {text}")
        try:
            account = response.json()
            account_status = str(account["status"])
        except (ValueError, KeyError, TypeError):
            return ChannelStatus(connected=False, state="OFFLINE", connected_number=number,
                                 detail=f"Twilio account check answered {response.status_code} "
                                        f"without an account: {response.text[:200]}")
        return ChannelStatus(
            connected=account_status == "active",
            state="CONNECTED" if account_status == "active" else "OFFLINE",
            detail=f"Twilio account {account.get('friendly_name', '')!s} is {account_status}",
            connected_number=number,
            extra={"account_status": account_status, "account_type": account.get("type")},
        )


# MessageStatus values that change a message's state; the others (accepted, scheduled,
# queued, sending) say nothing the dispatcher did not already record.
_SMS_STATES: dict[str, State] = {
    "sent": State.SUBMITTED,
    "delivered": State.DELIVERED,
    "read": State.READ,
    "undelivered": State.FAILED,
    "failed": State.FAILED,
    "canceled": State.FAILED,
}


@register
class TwilioSmsChannel(TwilioChannel):
    kind = "twilio_sms"
    callback_sub_path = "sms"
    api_resource = "/Messages"
    # Unpaced by default: Twilio queues what exceeds the sender's rate (1 MPS for a US long
    # code, far more for short codes and Messaging Services). For big pushes through a slow
    # sender set --rate to its MPS, or messages queued over 4 h fail with 30001.
    config_model = TwilioSmsConfig

    def _params(self, message: OutboundMessage) -> list[tuple[str, str]] | SendResult:
        if not message.text and not message.media_url:
            return SendResult.failed(message.id, "empty",
                                     "nothing to send: no text and no media")
        # One Twilio message carries the text and the media together (MMS takes a body with
        # any media), and Twilio splits and joins long texts itself: one sid per message.
        params = [("To", "+" + message.number.lstrip("+"))]
        if self.config.get("from_number"):
            params.append(("From", self.config["from_number"]))
        if self.config.get("messaging_service_sid"):
            params.append(("MessagingServiceSid", self.config["messaging_service_sid"]))
        if message.text:
            params.append(("Body", message.text))
        if message.media_url:
            params.append(("MediaUrl", message.media_url))
        params.append(("StatusCallback", self._callback_url()))
        return params

    async def handle_callback(self, request: CallbackRequest) -> CallbackResult:
        params = self._verified_params(request)
        sid = params.get("MessageSid") or params.get("SmsSid")
        status = params.get("MessageStatus") or params.get("SmsStatus")
        if not sid or not status:
            raise CallbackRejected(400, "not a message status callback (no MessageSid/Status)")
        state = _SMS_STATES.get(status)
        if state is None:
            return self._answer([])
        error_code = error_message = None
        if state is State.FAILED:
            error_code = params.get("ErrorCode") or status
            known = ERRORS.get(int(error_code)) if error_code.isdigit() else None
            error_message = f"Twilio {status}" + (f": {known[1]}" if known else "")
        return self._answer([StatusUpdate(
            state=state, at=time.time(), channel_id=self.spec.id, provider_id=sid,
            error_code=error_code, error_message=error_message)])


# Final CallStatus values; queued, initiated, ringing and in-progress change nothing (the
# call was recorded as submitted when Twilio took it).
_CALL_STATES: dict[str, State] = {
    "completed": State.DELIVERED,
    "busy": State.FAILED,
    "no-answer": State.FAILED,
    "failed": State.FAILED,
    "canceled": State.FAILED,
}


def voice_twiml(text: str, audio_url: str | None, voice: str, language: str) -> str:
    """``<Response>`` that plays ``audio_url`` (if any) then says ``text`` (if any)."""
    response = ET.Element("Response")
    if audio_url:
        ET.SubElement(response, "Play").text = audio_url
    if text:
        ET.SubElement(response, "Say", voice=voice, language=language).text = text
    # ElementTree escapes &, < and > in text and quotes in attributes.
    return ET.tostring(response, encoding="unicode")


@register
class TwilioVoiceChannel(TwilioChannel):
    kind = "twilio_voice"
    callback_sub_path = "voice"
    api_resource = "/Calls"
    config_model = TwilioVoiceConfig
    # Twilio's default limit is 1 call per second per account (excess calls wait in its
    # queue); accounts with a raised limit set --rate.
    default_rate_per_second: ClassVar[float] = 1.0

    def _params(self, message: OutboundMessage) -> list[tuple[str, str]] | SendResult:
        audio_url = None
        if message.media_url:
            kind = message.media_kind or media_kind_from_url(message.media_url)
            if kind != MediaKind.AUDIO:
                return SendResult.failed(message.id, "media-kind",
                                         f"a call can only play audio, not {kind}")
            audio_url = message.media_url
        if not message.text and not audio_url:
            return SendResult.failed(message.id, "empty",
                                     "nothing to say: no text and no audio")
        twiml = voice_twiml(message.text, audio_url, self.config["voice"],
                            self.config["language"])
        if len(twiml) > MAX_TWIML_CHARS:
            return SendResult.failed(message.id, "too-long",
                                     f"call script is {len(twiml)} characters of TwiML; "
                                     f"Twilio takes at most {MAX_TWIML_CHARS}")
        return [
            ("To", "+" + message.number.lstrip("+")),
            ("From", self.config["from_number"]),
            ("Twiml", twiml),
            ("StatusCallback", self._callback_url()),
            # Only the end of the call decides the message's fate; "completed" fires for every
            # final status (busy, no-answer, failed, canceled too). Fewer callbacks, less load.
            ("StatusCallbackEvent", "completed"),
        ]

    async def handle_callback(self, request: CallbackRequest) -> CallbackResult:
        params = self._verified_params(request)
        sid, status = params.get("CallSid"), params.get("CallStatus")
        if not sid or not status:
            raise CallbackRejected(400, "not a call status callback (no CallSid/CallStatus)")
        state = _CALL_STATES.get(status)
        if state is None:
            return self._answer([])
        failed = state is State.FAILED
        return self._answer([StatusUpdate(
            state=state, at=_call_time(params.get("Timestamp")), channel_id=self.spec.id,
            provider_id=sid, error_code=status if failed else None,
            error_message=f"call {status}" if failed else None)])


def _call_time(timestamp: str | None) -> float:
    """The callback's ``Timestamp`` (RFC 2822) as unix time; now when absent or unreadable."""
    if timestamp:
        try:
            return email.utils.parsedate_to_datetime(timestamp).timestamp()
        except (TypeError, ValueError):
            pass
    return time.time()
