"""The WhatsApp Cloud webhook: the GET subscription handshake, the ``X-Hub-Signature-256``
check, and the statuses and users' messages a signed POST carries (``WebhookHandling``, mixed
into the channel)."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator
from typing import Any

import orjson

from pushgate.channels.base import (
    CallbackRejected,
    CallbackRequest,
    CallbackResult,
    Channel,
)
from pushgate.channels.media import sign_inbound_media_url
from pushgate.core.lifecycle import State
from pushgate.core.models import InboundMessage, StatusUpdate

# Meta keeps a user's media for 30 days; the gateway's link to it lives as long.
INBOUND_MEDIA_SECONDS = 30 * 86_400

# Graph message types, and the Picky incoming ``type`` each one maps to.
INBOUND_TYPES: dict[str, int] = {
    "text": 1, "reaction": 1,
    "image": 2, "video": 2, "audio": 2, "document": 2, "sticker": 2,
    "location": 7, "contacts": 7,
    "button": 9, "interactive": 9,
}
STATUS_STATES: dict[str, State] = {
    "sent": State.SUBMITTED,
    "delivered": State.DELIVERED,
    "read": State.READ,
    "played": State.READ,       # a voice note listened to: as far as a message gets
    "failed": State.FAILED,
}

_MEDIA_TYPES = frozenset({"image", "video", "audio", "document", "sticker"})


class WebhookHandling(Channel):
    """Webhook parsing for ``WhatsAppCloudChannel``; set by its ``__init__``."""

    phone_number_id: str
    _app_secret: bytes
    _verify_token: str

    # --- webhooks -----------------------------------------------------------------------------
    async def handle_callback(self, request: CallbackRequest) -> CallbackResult:
        if request.method == "GET":
            return self._handshake(request.query)
        if request.method != "POST":
            raise CallbackRejected(405, f"{request.method} is not a WhatsApp webhook")
        self._verify_signature(request)
        try:
            payload = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            raise CallbackRejected(400, "webhook body is not JSON") from None
        result = CallbackResult(status_code=200, body=b"")
        for value in self._our_values(payload):
            result.updates.extend(self._status_updates(value))
            result.inbound.extend(self._inbound_messages(value))
        return result

    def _handshake(self, query: dict[str, str]) -> CallbackResult:
        token = query.get("hub.verify_token", "")
        if query.get("hub.mode") != "subscribe" or not hmac.compare_digest(
                token.encode(), self._verify_token.encode()):
            raise CallbackRejected(403, "webhook verification refused: wrong mode or token")
        return CallbackResult(status_code=200, body=query.get("hub.challenge", "").encode(),
                              content_type="text/plain")

    def _verify_signature(self, request: CallbackRequest) -> None:
        header = request.headers.get("x-hub-signature-256")
        if not header:
            raise CallbackRejected(401, "X-Hub-Signature-256 missing")
        expected = "sha256=" + hmac.new(self._app_secret, request.body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(header.strip().lower().encode(), expected.encode()):
            raise CallbackRejected(403, "X-Hub-Signature-256 does not match the body")

    def _our_values(self, payload: Any) -> Iterator[dict[str, Any]]:
        """The ``value`` objects of message changes addressed to this channel's number (an app
        may subscribe several numbers to one webhook URL)."""
        if not isinstance(payload, dict):
            return
        for entry in _dicts(payload.get("entry")):
            for change in _dicts(entry.get("changes")):
                value = change.get("value")
                if change.get("field", "messages") != "messages" or not isinstance(value, dict):
                    continue
                metadata = value.get("metadata")
                number_id = metadata.get("phone_number_id") if isinstance(metadata, dict) else None
                if str(number_id) == self.phone_number_id:
                    yield value

    def _status_updates(self, value: dict[str, Any]) -> list[StatusUpdate]:
        updates = []
        for status in _dicts(value.get("statuses")):
            state = STATUS_STATES.get(str(status.get("status")))
            wamid = status.get("id")
            if state is None or not isinstance(wamid, str):
                continue    # e.g. "deleted", or a shape we do not know: nothing to record
            code = message = None
            if state is State.FAILED:
                code, message = _first_error(status.get("errors"))
            # Meta bills a message when it is delivered, so a failed one costs nothing: its
            # credit goes back.
            updates.append(StatusUpdate(
                state=state, at=_timestamp(status.get("timestamp")), channel_id=self.spec.id,
                provider_id=wamid, error_code=code, error_message=message,
                refund=state is State.FAILED))
        return updates

    def _inbound_media_url(self, kind: str, msg: dict[str, Any]) -> str | None:
        """A user's media arrives as a media id whose file only the channel's token can
        download: the project gets a signed gateway link that fetches it when followed
        (Meta keeps the media for 30 days, the link lives as long)."""
        media_id = _inbound_media_id(kind, msg)
        if media_id is None:
            return None
        return sign_inbound_media_url(self.env, self.spec.id, media_id,
                                      int(time.time() + INBOUND_MEDIA_SECONDS))

    def _inbound_messages(self, value: dict[str, Any]) -> list[InboundMessage]:
        names = {str(c.get("wa_id")): (c.get("profile") or {}).get("name")
                 for c in _dicts(value.get("contacts"))}
        inbound = []
        for msg in _dicts(value.get("messages")):
            sender, msg_id = msg.get("from"), msg.get("id")
            if not isinstance(sender, str) or not isinstance(msg_id, str):
                continue
            kind = str(msg.get("type", ""))
            inbound.append(InboundMessage(
                channel_id=self.spec.id, number=sender, text=_inbound_text(kind, msg),
                provider_id=msg_id, at=_timestamp(msg.get("timestamp")),
                type=INBOUND_TYPES.get(kind, 1), media_url=self._inbound_media_url(kind, msg),
                name=names.get(sender), raw=msg))
        return inbound


def _dicts(items: Any) -> list[dict[str, Any]]:
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _timestamp(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return time.time()


def _first_error(errors: Any) -> tuple[str | None, str | None]:
    for error in _dicts(errors):
        code = error.get("code")
        title = error.get("title") or error.get("message")
        data = error.get("error_data")
        details = data.get("details") if isinstance(data, dict) else None
        message = f"{title}: {details}" if title and details else (title or details)
        return (str(code) if code is not None else None), message
    return None, None


def _inbound_text(kind: str, msg: dict[str, Any]) -> str:
    if kind == "contacts":
        return ", ".join(str((c.get("name") or {}).get("formatted_name", ""))
                         for c in _dicts(msg.get("contacts")))
    body = msg.get(kind)
    if not isinstance(body, dict):
        return ""
    if kind == "text":
        return str(body.get("body", ""))
    if kind in _MEDIA_TYPES:
        return str(body.get("caption", ""))
    if kind == "location":
        words = [str(body[k]) for k in ("name", "address") if body.get(k)]
        return ", ".join(words) or f"{body.get('latitude')},{body.get('longitude')}"
    if kind == "button":
        return str(body.get("text") or body.get("payload") or "")
    if kind == "interactive":
        # {"type": "button_reply", "button_reply": {"id", "title"}} and the like.
        reply = body.get(str(body.get("type")))
        return str(reply.get("title") or reply.get("body") or "") if isinstance(reply, dict) \
            else ""
    if kind == "reaction":
        return str(body.get("emoji", ""))
    return ""


def _inbound_media_id(kind: str, msg: dict[str, Any]) -> str | None:
    body = msg.get(kind)
    if kind not in _MEDIA_TYPES or not isinstance(body, dict) or not body.get("id"):
        return None
    return str(body["id"])
