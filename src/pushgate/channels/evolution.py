"""Evolution API (v2) connector: WhatsApp Web on the customer's number through Evolution's
Baileys instances (Picky applications 1, 2 and 10).

Config (``channel add --kind evolution --config '{...}'``):

- ``base_url`` (required): the Evolution API server, e.g. ``http://127.0.0.1:8080``.
- ``api_key`` (required): the global key or the instance token, sent as ``apikey``.
- ``instance`` (required): the instance name.
- ``webhook_token``: Evolution does not sign webhooks, so every callback must carry this token,
  as the query parameter ``token`` (register the webhook as
  ``{public_url}/channels/{id}/callback?token=<webhook_token>`` with ``webhook_by_events`` off,
  since Evolution appends the event name to the path otherwise) or as the header
  ``X-Webhook-Token`` (a custom webhook header); a missing or wrong token is refused 401.
  ``channel add`` generates one when none is given and prints the webhook URL to register.
- ``insecure_callbacks`` (default false): without a ``webhook_token`` every callback is refused
  403; true accepts callbacks without a token from anyone (local development; logged).
- ``typing_delay_ms`` (default 0): sent as ``delay`` on texts, so Evolution shows "typing…" for
  that long before sending (looks human; the HTTP call lasts as long).
- Picky's number filter (``action: 1``) asks ``POST /chat/whatsappNumbers/{instance}``.
- ``link_preview`` (default false), ``timeout_seconds`` (30), ``session_cache_seconds`` (2),
  ``session_retry_seconds`` (5).

Sends: text → ``POST /message/sendText/{instance}``; media → ``POST /message/sendMedia/{instance}``
with ``mediatype`` image/video/document/audio, the media URL, ``mimetype``, ``fileName`` and the
text as ``caption`` (not for audio, which shows none). Text beside an audio, or beside a document
when the accept path split it (``parts == 2``), goes as a second ``sendText``; both ids are in
``provider_refs``. The id is the answer's ``key.id``. Evolution checks the number itself: a number
not on WhatsApp is answered 400 with ``{"exists": false}`` and fails permanently.

Callbacks: ``messages.update`` statuses ERROR → failed, PENDING → nothing, SERVER_ACK →
submitted, DELIVERY_ACK → delivered, READ and PLAYED → read (the message id is ``data.keyId`` or
``data.key.id`` depending on the version; both are read). ``messages.upsert`` from people (not
``fromMe``) → inbound messages: text from ``conversation``/``extendedTextMessage``, media messages
as type 2 with their caption (the media URL only when Evolution stores media, ``mediaUrl``),
locations and contacts as type 7. ``connection.update`` and unknown events: 200, nothing recorded.
The exact ``data`` keys of these events vary between Evolution versions (reference notes [?]).
"""

from __future__ import annotations

import hmac
import time
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import orjson

from pushgate.channels.base import CallbackRejected, CallbackRequest, CallbackResult, register
from pushgate.channels.bridge import (
    CONNECTED,
    OFFLINE,
    TIMEOUT,
    UNPAIRED,
    ActionCall,
    BridgeChannel,
    BridgeConfig,
    SendCall,
    SessionState,
    digits,
    json_event,
    media_file,
    media_kind,
)
from pushgate.core.checks import CheckUnavailable, NumberCheck
from pushgate.core.lifecycle import State
from pushgate.core.models import InboundMessage, OutboundMessage, SendResult, StatusUpdate

EVOLUTION_DEVICE_STATES = {"open": CONNECTED, "connecting": TIMEOUT, "close": UNPAIRED}
_HINTS = {UNPAIRED: " (not paired: scan the QR code)", TIMEOUT: " (connecting)"}
# ``messages.update`` statuses, by name and by Baileys' numeric value (older versions).
_STATUS_NAMES = ("ERROR", "PENDING", "SERVER_ACK", "DELIVERY_ACK", "READ", "PLAYED")
UPDATE_STATES = {"ERROR": State.FAILED, "SERVER_ACK": State.SUBMITTED,
                 "DELIVERY_ACK": State.DELIVERED, "READ": State.READ, "PLAYED": State.READ}
_MEDIA_MESSAGES = ("imageMessage", "videoMessage", "audioMessage", "documentMessage",
                   "documentWithCaptionMessage", "stickerMessage")
_CONTACT_MESSAGES = ("locationMessage", "liveLocationMessage", "contactMessage",
                     "contactsArrayMessage")


# The events a channel's webhook must subscribe to.
WEBHOOK_EVENTS = ("MESSAGES_UPSERT", "MESSAGES_UPDATE", "CONNECTION_UPDATE")
# Picky's device-action commands on Evolution's instance API (``reset`` is a restart; the API
# side deletes the queue once it succeeded), or why Evolution offers none for the instance.
DEVICE_ACTIONS: dict[str, tuple[str, str] | str] = {
    "restart": ("POST", "/instance/restart"),
    "reset": ("POST", "/instance/restart"),
    "disconnect": ("DELETE", "/instance/logout"),
    "restart-server": "Evolution API has no request that restarts its server; restart it where "
                      "it runs, or send `restart` for the instance",
    "clearlogs": "Evolution API has no logs to clear for an instance",
}


class EvolutionConfig(BridgeConfig, kw_only=True):
    instance: str
    webhook_token: str | None = None
    typing_delay_ms: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.instance.strip():
            raise ValueError("instance must not be empty")
        if self.typing_delay_ms < 0:
            raise ValueError("typing_delay_ms must be >= 0")


def _not_on_whatsapp(response: httpx.Response) -> bool:
    """Evolution's 400 for an unknown number: ``response.message`` lists ``{"exists": false}``."""
    try:
        body = response.json()
    except ValueError:
        return False
    inner = body.get("response") if isinstance(body, dict) else None
    messages = inner.get("message") if isinstance(inner, dict) else None
    return isinstance(messages, list) and any(
        isinstance(item, dict) and item.get("exists") is False for item in messages)


def _event_time(event: dict[str, Any]) -> float:
    stamp = event.get("date_time")
    if isinstance(stamp, str):
        try:
            return datetime.fromisoformat(stamp).timestamp()
        except ValueError:
            pass
    return time.time()


def _items(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, dict):
        return [data]
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []


@register
class EvolutionChannel(BridgeChannel):
    kind = "evolution"
    config_type = config_model = EvolutionConfig
    session_noun = "Evolution instance"
    callback_secret_key = "webhook_token"
    config: EvolutionConfig

    def auth_headers(self) -> dict[str, str]:
        return {"apikey": self.config.api_key}

    def session_name(self) -> str:
        return self.config.instance

    def _instance_path(self, prefix: str) -> str:
        return f"{prefix}/{quote(self.config.instance, safe='')}"

    def session_path(self) -> str:
        return self._instance_path("/instance/connectionState")

    def session_from(self, body: Any) -> SessionState:
        inner = body.get("instance") if isinstance(body, dict) else None
        holder = inner if isinstance(inner, dict) else body if isinstance(body, dict) else {}
        status = str(holder.get("state") or "unknown")
        state = EVOLUTION_DEVICE_STATES.get(status, OFFLINE)
        detail = (f"Evolution instance {self.config.instance!r} is {status}"
                  f"{_HINTS.get(state, '')}")
        return SessionState(state, detail, status)

    # -- number filter -------------------------------------------------------------------------

    async def ask_numbers(self, numbers: list[str]) -> list[NumberCheck]:
        """``POST /chat/whatsappNumbers/{instance}`` ``{"numbers": [...]}``, all at once; the
        answer lists ``{"exists", "jid", "number"}`` per number. A number the answer leaves
        out counts as not on WhatsApp."""
        body = await self.check_call("POST", self._instance_path("/chat/whatsappNumbers"),
                                     json={"numbers": numbers})
        if not isinstance(body, list):
            raise CheckUnavailable("Evolution whatsappNumbers answered without a list")
        found: dict[str, dict[str, Any]] = {}
        for item in _items(body):
            jid = item.get("jid")
            key = str(item.get("number") or "").lstrip("+") or \
                digits(jid if isinstance(jid, str) else None) or ""
            found[key] = item
        checks = []
        for number in numbers:
            item = found.get(number, {})
            jid = item.get("jid")
            exists = item.get("exists") is True
            checks.append(NumberCheck(number, exists, self.kind,
                                      jid if exists and isinstance(jid, str) else None))
        return checks

    # -- sending -------------------------------------------------------------------------------

    async def calls(self, message: OutboundMessage) -> list[SendCall] | SendResult:
        text = message.text
        planned: list[SendCall] = []
        if message.media_url:
            kind = media_kind(message)
            filename, mimetype = media_file(message.media_url, kind)
            body: dict[str, Any] = {"number": message.number, "mediatype": kind,
                                    "mimetype": mimetype, "media": message.media_url,
                                    "fileName": filename}
            if text and message.parts < 2 and kind != "audio":
                body["caption"] = text
                text = ""
            planned.append(SendCall(0, self._instance_path("/message/sendMedia"), body))
        if text:
            text_body: dict[str, Any] = {"number": message.number, "text": text,
                                         "linkPreview": self.config.link_preview}
            if self.config.typing_delay_ms:
                text_body["delay"] = self.config.typing_delay_ms
            planned.append(SendCall(len(planned), self._instance_path("/message/sendText"),
                                    text_body))
        return planned

    def provider_id(self, response: httpx.Response) -> str | None:
        if not response.content.strip():
            return None
        try:
            body = response.json()
        except ValueError:
            return None
        key = body.get("key") if isinstance(body, dict) else None
        message_id = key.get("id") if isinstance(key, dict) else None
        return message_id if isinstance(message_id, str) and message_id else None

    def error_code(self, response: httpx.Response) -> str:
        if response.status_code == 400 and _not_on_whatsapp(response):
            return "not-on-whatsapp"
        return str(response.status_code)

    # -- device-action -------------------------------------------------------------------------

    def action_call(self, command: str) -> ActionCall | str:
        mapped = DEVICE_ACTIONS.get(command, f"no Evolution request for `{command}`")
        if isinstance(mapped, str):
            return mapped
        method, prefix = mapped
        return ActionCall(method, self._instance_path(prefix))

    def action_answer(self, response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            body = None
        # restart answers the connection state, logout a {"status", "response": {"message"}}.
        inner = body.get("instance") if isinstance(body, dict) else None
        if isinstance(inner, dict) and isinstance(inner.get("state"), str):
            return f"instance is {inner['state']}"
        reply = body.get("response") if isinstance(body, dict) else None
        if isinstance(reply, dict) and isinstance(reply.get("message"), str):
            return str(reply["message"])
        return f"Evolution answered HTTP {response.status_code}"

    # -- callbacks -----------------------------------------------------------------------------

    @classmethod
    def callback_setup(cls, config: dict[str, Any], callback_url: str) -> list[str]:
        token = config.get("webhook_token")
        url = f"{callback_url}?{urlencode({'token': token})}" if token else callback_url
        instance = config.get("instance", "<instance>")
        webhook = {"enabled": True, "url": url, "webhookByEvents": False,
                   "webhookBase64": False, "events": list(WEBHOOK_EVENTS)}
        return [f"In Evolution API, set the webhook of instance {instance!r} "
                f"(POST /webhook/set/{quote(str(instance), safe='')}), by events off:",
                f"  {orjson.dumps(webhook).decode()}"]

    def check_secret(self, request: CallbackRequest, expected: str) -> None:
        given = request.query.get("token") or request.headers.get("x-webhook-token") or ""
        if not given:
            raise CallbackRejected(401, "missing webhook token")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise CallbackRejected(401, "wrong webhook token")

    async def handle_callback(self, request: CallbackRequest) -> CallbackResult:
        self.verify_callback(request)
        event = json_event(request)
        if event is None:
            return CallbackResult()
        # v2 names events "messages.update"; some setups send "MESSAGES_UPDATE".
        name = str(event.get("event") or "").lower().replace("_", ".")
        at = _event_time(event)
        if name == "messages.update":
            updates = [u for item in _items(event.get("data"))
                       if (u := self._update(item, at)) is not None]
            return CallbackResult(updates=updates)
        if name == "messages.upsert":
            inbound = [m for item in _items(event.get("data"))
                       if (m := self._inbound(item, at)) is not None]
            return CallbackResult(inbound=inbound)
        if name == "connection.update":
            self.forget_session()
        return CallbackResult()

    def _update(self, item: dict[str, Any], at: float) -> StatusUpdate | None:
        raw_key = item.get("key")
        key: dict[str, Any] = raw_key if isinstance(raw_key, dict) else {}
        message_id = item.get("keyId") or key.get("id")
        from_me = item.get("fromMe", key.get("fromMe"))
        status = item.get("status")
        if status is None and isinstance(item.get("update"), dict):
            status = item["update"].get("status")
        if isinstance(status, int) and 0 <= status < len(_STATUS_NAMES):
            status = _STATUS_NAMES[status]
        state = UPDATE_STATES.get(str(status).upper()) if status is not None else None
        if state is None or from_me is False or not isinstance(message_id, str):
            return None
        failed = state is State.FAILED
        return StatusUpdate(
            state=state, at=at, channel_id=self.spec.id, provider_id=message_id,
            error_code="ERROR" if failed else None,
            error_message="WhatsApp reported the message as failed (status ERROR)"
            if failed else None)

    def _inbound(self, item: dict[str, Any], at: float) -> InboundMessage | None:
        key = item.get("key")
        if not isinstance(key, dict) or key.get("fromMe"):
            return None
        jid, message_id = key.get("remoteJid"), key.get("id")
        # People only: groups, broadcasts and hidden ``@lid`` ids carry no phone number.
        if not isinstance(jid, str) or not jid.endswith("@s.whatsapp.net"):
            return None
        number = digits(jid)
        if number is None or not isinstance(message_id, str):
            return None
        raw_content = item.get("message")
        content: dict[str, Any] = raw_content if isinstance(raw_content, dict) else {}
        extended = content.get("extendedTextMessage")
        text = content.get("conversation") or (
            extended.get("text") if isinstance(extended, dict) else None)
        kind = 1
        for media_key in _MEDIA_MESSAGES:
            media = content.get(media_key)
            if isinstance(media, dict):
                kind = 2
                text = text or media.get("caption")
                break
        else:
            if any(k in content for k in _CONTACT_MESSAGES):
                kind = 7
        sent_at = item.get("messageTimestamp")
        try:
            sent = float(sent_at) if sent_at is not None else at
        except (TypeError, ValueError):
            sent = at
        media_url = (content.get("mediaUrl") or item.get("mediaUrl")) if kind == 2 else None
        name = item.get("pushName")
        return InboundMessage(
            channel_id=self.spec.id, number=number, text=str(text or ""), provider_id=message_id,
            at=sent, type=kind, media_url=media_url if isinstance(media_url, str) else None,
            name=name if isinstance(name, str) and name else None, raw=item)
