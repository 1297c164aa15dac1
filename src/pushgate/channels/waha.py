"""WAHA (devlikeapro/waha) connector: WhatsApp Web on the customer's number (Picky
applications 1, 2 and 10).

Config (``channel add --kind waha --config '{...}'``):

- ``base_url`` (required): the WAHA server, e.g. ``http://127.0.0.1:3000``.
- ``api_key`` (required): sent as ``X-Api-Key``.
- ``session`` (default ``"default"``; WAHA Core runs only that one).
- ``webhook_hmac_key``: the ``hmac.key`` of the session's webhook: every callback must carry a
  matching ``X-Webhook-Hmac`` (hex HMAC-SHA512 of the raw body), else it is refused 401.
  ``channel add`` generates one when none is given and prints the session's webhook setting.
- ``insecure_callbacks`` (default false): without a ``webhook_hmac_key`` every callback is
  refused 403; true accepts unsigned callbacks from anyone (local development; logged).
- ``check_numbers`` (default true): ask ``GET /api/contacts/check-exists`` before the first send
  to a number (cached for an hour). A number not on WhatsApp then fails permanently before any
  send (WAHA's own answer to such a send is an engine error, not a clear 4xx, and sending to
  unknown numbers is what gets bridge numbers banned), and Brazilian numbers go to the
  ``chatId`` WhatsApp knows them by.
- Picky's number filter (``action: 1``) asks the same ``check-exists`` for each number.
- ``link_preview`` (default false), ``timeout_seconds`` (30), ``session_cache_seconds`` (2),
  ``session_retry_seconds`` (5).

Sends: text → ``/api/sendText``; image → ``/api/sendImage``, video → ``/api/sendVideo`` (both with
the text as caption); OGG/Opus audio → ``/api/sendVoice`` (a voice note); other audio and documents
→ ``/api/sendFile``. Text beside an audio, or beside a document when the accept path split it
(``parts == 2``), goes as a second ``sendText``; both ids are in ``provider_refs``.

Message ids: WAHA answers with the engine's own object — WEBJS ``{"id": "true_<chat>_<msgId>"}``
(or ``id._serialized``), NOWEB ``{"key": {"id": "<msgId>"}}`` — while ack events always carry the
serialized ``true_<chat>_<msgId>`` form. Both are reduced to the bare ``<msgId>`` so they match.
Some WAHA builds answer a send with an empty body: the send is still a success, with no
provider id, so its acks cannot be matched and the message stays ``submitted``.

Callbacks (point the session's webhook at ``{public_url}/channels/{id}/callback`` with events
``message``, ``message.ack``, ``session.status`` and ``hmac.key`` = ``webhook_hmac_key``;
``channel add`` prints it as session config and as environment): ``message.ack`` levels
−1 ERROR → failed, 0 PENDING → nothing, 1 SERVER → submitted, 2 DEVICE → delivered, 3 READ
and 4 PLAYED → read; inbound ``message`` events from people (not ``fromMe``) → inbound messages;
anything else is answered 200 with nothing recorded.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from pushgate.channels.base import (
    CallbackRejected,
    CallbackRequest,
    CallbackResult,
    ChannelEnv,
    register,
)
from pushgate.channels.bridge import (
    CONNECTED,
    OFFLINE,
    TIMEOUT,
    UNPAIRED,
    VOICE_MIMETYPE,
    ActionCall,
    BridgeChannel,
    BridgeConfig,
    SendCall,
    SessionState,
    digits,
    is_voice,
    json_event,
    media_file,
    media_kind,
)
from pushgate.core.channels import ChannelSpec
from pushgate.core.checks import CheckUnavailable, NumberCheck
from pushgate.core.lifecycle import State
from pushgate.core.models import InboundMessage, OutboundMessage, SendResult, StatusUpdate

WAHA_DEVICE_STATES = {
    "WORKING": CONNECTED,
    "STARTING": TIMEOUT,
    "SCAN_QR_CODE": UNPAIRED,
    "PASSKEY_REQUIRED": UNPAIRED,
    "PASSKEY_CONFIRMATION_REQUIRED": UNPAIRED,
    "STOPPED": OFFLINE,
    "FAILED": OFFLINE,
}
_HINTS = {UNPAIRED: " (scan the QR code to pair it)", TIMEOUT: " (starting)"}
# ``message.ack`` levels; 0 PENDING means "not yet on the server" and changes nothing.
ACK_STATES = {-1: State.FAILED, 1: State.SUBMITTED, 2: State.DELIVERED, 3: State.READ,
              4: State.READ}
_ACK_LEVELS = {"ERROR": -1, "PENDING": 0, "SERVER": 1, "DEVICE": 2, "READ": 3, "PLAYED": 4}
# Chats that are a person's phone number (groups, channels and hidden ``@lid`` ids are not).
_PERSON_SUFFIXES = ("@c.us", "@s.whatsapp.net")
_NUMBER_CACHE_SECONDS = 3600.0
_NUMBER_CACHE_LIMIT = 10_000


# The events a channel's webhook must subscribe to.
WEBHOOK_EVENTS = ("message", "message.ack", "session.status")
# Picky's device-action commands on WAHA's sessions API (``reset`` is a restart; the API side
# deletes the queue once it succeeded), or why WAHA offers none for the session.
DEVICE_ACTIONS: dict[str, tuple[str, str] | str] = {
    "restart": ("POST", "restart"),
    "reset": ("POST", "restart"),
    "disconnect": ("POST", "logout"),
    "restart-server": "it would restart the whole WAHA server and every session on it, not "
                      "only this channel's; restart the server where it runs, or send `restart`",
    "clearlogs": "WAHA's API has no logs to clear for a session",
}


class WahaConfig(BridgeConfig, kw_only=True):
    session: str = "default"
    webhook_hmac_key: str | None = None
    check_numbers: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.session.strip():
            raise ValueError("session must not be empty")


def bare_message_id(message_id: str) -> str:
    """``true_7911@c.us_3EB0A1[_participant]`` → ``3EB0A1``; a bare id is returned as is."""
    head, sep, rest = message_id.partition("_")
    if sep and head in ("true", "false"):
        _chat, sep, tail = rest.partition("_")
        if sep and tail:
            return tail.partition("_")[0]
    return message_id


def response_message_id(response: httpx.Response) -> str | None:
    """The id in a send's answer: ``id`` (a string or ``{"_serialized"}``), else ``key.id``;
    None for an empty or unexpected body."""
    if not response.content.strip():
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    raw = body.get("id")
    if isinstance(raw, dict):
        raw = raw.get("_serialized") or raw.get("id")
    if not raw and isinstance(body.get("key"), dict):
        raw = body["key"].get("id")
    return bare_message_id(raw) if isinstance(raw, str) and raw else None


def _chat_id(jid: str) -> str:
    # NOWEB speaks Baileys' ``@s.whatsapp.net``; the send API wants ``@c.us``.
    return jid.replace("@s.whatsapp.net", "@c.us")


@register
class WahaChannel(BridgeChannel):
    kind = "waha"
    config_type = config_model = WahaConfig
    session_noun = "WAHA session"
    callback_secret_key = "webhook_hmac_key"
    config: WahaConfig

    def __init__(self, spec: ChannelSpec, env: ChannelEnv | None = None) -> None:
        super().__init__(spec, env)
        # number → (chatId or None when not on WhatsApp, monotonic time of the check)
        self._numbers: OrderedDict[str, tuple[str | None, float]] = OrderedDict()

    def auth_headers(self) -> dict[str, str]:
        return {"X-Api-Key": self.config.api_key}

    def session_name(self) -> str:
        return self.config.session

    def session_path(self) -> str:
        return f"/api/sessions/{quote(self.config.session, safe='')}"

    def session_from(self, body: Any) -> SessionState:
        status = str(body.get("status") or "UNKNOWN") if isinstance(body, dict) else "UNKNOWN"
        state = WAHA_DEVICE_STATES.get(status, OFFLINE)
        number = None
        if state == CONNECTED:
            me = body.get("me")
            number = digits(me.get("id")) if isinstance(me, dict) else None
        detail = f"WAHA session {self.config.session!r} is {status}{_HINTS.get(state, '')}"
        return SessionState(state, detail, status, connected_number=number)

    # -- sending -------------------------------------------------------------------------------

    async def calls(self, message: OutboundMessage) -> list[SendCall] | SendResult:
        chat_id = await self._chat_for(message)
        if isinstance(chat_id, SendResult):
            return chat_id
        base = {"session": self.config.session, "chatId": chat_id}
        text = message.text
        planned: list[SendCall] = []
        if message.media_url:
            kind = media_kind(message)
            filename, mimetype = media_file(message.media_url, kind)
            file = {"mimetype": mimetype, "url": message.media_url, "filename": filename}
            body: dict[str, Any] = {**base, "file": file}
            if kind == "image":
                path = "/api/sendImage"
            elif kind == "video":
                path = "/api/sendVideo"
                body["asNote"] = False
            elif kind == "audio" and is_voice(message.media_url):
                path = "/api/sendVoice"
                body["file"] = {"mimetype": VOICE_MIMETYPE, "url": message.media_url}
            else:
                path = "/api/sendFile"
            # Audio never shows a caption; a split message sends its text on its own.
            if text and message.parts < 2 and kind != "audio":
                body["caption"] = text
                text = ""
            planned.append(SendCall(0, path, body))
        if text:
            planned.append(SendCall(len(planned), "/api/sendText",
                                    {**base, "text": text,
                                     "linkPreview": self.config.link_preview}))
        return planned

    def provider_id(self, response: httpx.Response) -> str | None:
        return response_message_id(response)

    # -- device-action -------------------------------------------------------------------------

    def action_call(self, command: str) -> ActionCall | str:
        mapped = DEVICE_ACTIONS.get(command, f"no WAHA request for `{command}`")
        if isinstance(mapped, str):
            return mapped
        method, verb = mapped
        return ActionCall(method, f"{self.session_path()}/{verb}")

    def action_answer(self, response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            body = None
        status = body.get("status") if isinstance(body, dict) else None
        return f"session is {status}" if isinstance(status, str) else \
            f"WAHA answered HTTP {response.status_code}"

    async def _chat_for(self, message: OutboundMessage) -> str | SendResult:
        number = message.number
        if not self.config.check_numbers:
            return f"{number}@c.us"
        cached = self._numbers.get(number)
        if cached is not None and time.monotonic() - cached[1] < _NUMBER_CACHE_SECONDS:
            chat_id = cached[0]
        else:
            answer = await self.request(message.id, "GET", "/api/contacts/check-exists",
                                        params={"phone": number,
                                                "session": self.config.session})
            if isinstance(answer, SendResult):
                return answer
            try:
                body = answer.json()
            except ValueError:
                body = None
            if not isinstance(body, dict) or "numberExists" not in body:
                return SendResult.retry(message.id, "bad-answer",
                                        "WAHA check-exists answered without numberExists")
            found = body.get("chatId")
            chat_id = (_chat_id(found) if isinstance(found, str) and found
                       else f"{number}@c.us") if body["numberExists"] else None
            self._numbers[number] = (chat_id, time.monotonic())
            self._numbers.move_to_end(number)
            while len(self._numbers) > _NUMBER_CACHE_LIMIT:
                self._numbers.popitem(last=False)
        if chat_id is None:
            return SendResult.failed(message.id, "not-on-whatsapp",
                                     f"{number} is not on WhatsApp (WAHA check-exists)")
        return chat_id

    # -- number filter -------------------------------------------------------------------------

    async def ask_numbers(self, numbers: list[str]) -> list[NumberCheck]:
        """``GET /api/contacts/check-exists`` per number (WAHA checks one at a time); the
        answer's ``chatId`` is kept, as the send path's cache does."""
        checks = []
        for number in numbers:
            body = await self.check_call("GET", "/api/contacts/check-exists",
                                         params={"phone": number,
                                                 "session": self.config.session})
            if not isinstance(body, dict) or "numberExists" not in body:
                raise CheckUnavailable("WAHA check-exists answered without numberExists")
            found = body.get("chatId")
            exists = bool(body["numberExists"])
            chat_id = (_chat_id(found) if isinstance(found, str) and found
                       else f"{number}@c.us") if exists else None
            self._numbers[number] = (chat_id, time.monotonic())
            checks.append(NumberCheck(number, exists, self.kind, chat_id))
        while len(self._numbers) > _NUMBER_CACHE_LIMIT:
            self._numbers.popitem(last=False)
        return checks

    # -- callbacks -----------------------------------------------------------------------------

    @classmethod
    def callback_setup(cls, config: dict[str, Any], callback_url: str) -> list[str]:
        key = config.get("webhook_hmac_key")
        session = config.get("session") or "default"
        webhook: dict[str, Any] = {"url": callback_url, "events": list(WEBHOOK_EVENTS)}
        if key:
            webhook["hmac"] = {"key": key}
        env = [f"WHATSAPP_HOOK_URL={callback_url}",
               f"WHATSAPP_HOOK_EVENTS={','.join(WEBHOOK_EVENTS)}"]
        if key:
            env.append(f"WHATSAPP_HOOK_HMAC_KEY={key}")
        return [f"In WAHA, give session {session!r} this webhook (its \"config\" when the "
                "session is created with POST /api/sessions, or its settings in the dashboard):",
                f'  "webhooks": [{orjson.dumps(webhook).decode()}]',
                "or, for every session of that WAHA server, set in its environment:",
                *(f"  {line}" for line in env)]

    def check_secret(self, request: CallbackRequest, key: str) -> None:
        signature = request.headers.get("x-webhook-hmac", "").strip().lower()
        if not signature:
            raise CallbackRejected(401, "missing X-Webhook-Hmac")
        algorithm = request.headers.get("x-webhook-hmac-algorithm", "sha512").strip().lower()
        if algorithm != "sha512":
            raise CallbackRejected(401, f"unsupported X-Webhook-Hmac-Algorithm {algorithm!r}")
        expected = hmac.new(key.encode(), request.body, hashlib.sha512).hexdigest()
        # Bytes: a header may hold any character, and compare_digest takes only ASCII str.
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise CallbackRejected(401, "X-Webhook-Hmac does not match the body")

    async def handle_callback(self, request: CallbackRequest) -> CallbackResult:
        self.verify_callback(request)
        event = json_event(request)
        if event is None or not isinstance(event.get("payload"), dict):
            return CallbackResult()
        payload = event["payload"]
        stamp = event.get("timestamp")
        at = stamp / 1000 if isinstance(stamp, int | float) and stamp > 0 else time.time()
        name = event.get("event")
        if name == "message.ack":
            update = self._ack_update(payload, at)
            return CallbackResult(updates=[update] if update else [])
        if name == "message":
            inbound = self._inbound(payload, at)
            return CallbackResult(inbound=[inbound] if inbound else [])
        if name == "session.status":
            self.forget_session()
        return CallbackResult()

    def _ack_update(self, payload: dict[str, Any], at: float) -> StatusUpdate | None:
        message_id = payload.get("id")
        if isinstance(message_id, dict):
            message_id = message_id.get("_serialized")
        if payload.get("fromMe") is False or not isinstance(message_id, str):
            return None  # acks of messages people sent us say nothing about ours
        level = payload.get("ack")
        if not isinstance(level, int):
            level = _ACK_LEVELS.get(str(payload.get("ackName", "")).upper())
        state = ACK_STATES.get(level) if isinstance(level, int) else None
        if state is None:
            return None
        failed = state is State.FAILED
        return StatusUpdate(
            state=state, at=at, channel_id=self.spec.id, provider_id=bare_message_id(message_id),
            error_code="ERROR" if failed else None,
            error_message="WhatsApp reported the message as failed (ack -1)" if failed else None)

    def _inbound(self, payload: dict[str, Any], at: float) -> InboundMessage | None:
        sender = payload.get("from")
        message_id = payload.get("id")
        if (payload.get("fromMe") or not isinstance(sender, str)
                or not sender.endswith(_PERSON_SUFFIXES) or not isinstance(message_id, str)):
            return None
        number = digits(sender)
        if number is None:
            return None
        sent_at = payload.get("timestamp")
        media = payload.get("media") if isinstance(payload.get("media"), dict) else None
        has_media = bool(payload.get("hasMedia"))
        return InboundMessage(
            channel_id=self.spec.id, number=number, text=str(payload.get("body") or ""),
            provider_id=message_id,
            at=float(sent_at) if isinstance(sent_at, int | float) and sent_at > 0 else at,
            type=2 if has_media else 1,
            media_url=(media or {}).get("url") if has_media else None,
            name=_profile_name(payload), raw=payload)


def _profile_name(payload: dict[str, Any]) -> str | None:
    """The sender's WhatsApp profile name, which WAHA passes on in the engine's own message
    (``_data``): WEBJS calls it ``notifyName``, NOWEB (Baileys) ``pushName``."""
    data = payload.get("_data")
    if not isinstance(data, dict):
        return None
    for key in ("notifyName", "pushName"):
        name = data.get(key)
        if isinstance(name, str) and name.strip():
            return name
    return None
