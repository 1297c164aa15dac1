"""A fake WAHA server (devlikeapro/waha) for connector tests, served over real HTTP.

Answers as the reference notes (``channel-wire-formats.md`` §3.1–3.4) describe WAHA:
``X-Api-Key`` auth with the documented 401 body, ``201 Created`` sends whose body is the engine's
message object — WEBJS (``id`` string, or ``id._serialized``), NOWEB (Baileys ``key.id``) or, as
some 2025.6 builds did, empty — ``GET /api/sessions/{name}`` with ``status`` and ``me``, and
webhooks in WAHA's envelope signed with ``X-Webhook-Hmac`` (hex HMAC-SHA512 of the raw body).

Not in the reference, taken from WAHA's NestJS behaviour: other errors use NestJS's
``{"statusCode", "message", "error"}`` body; a send while the session is not ``WORKING`` is
answered 422 ``{"error": "Session status is not as expected...", "status": ..., "expected":
["WORKING"]}``; ``GET /api/contacts/check-exists`` answers ``{"numberExists", "chatId"}``.

Session commands, as the reference lists them (``POST /api/sessions/{name}/start|stop|restart``)
plus ``/logout`` from WAHA's sessions API: each answers 201 with the session (``name``,
``status``, ``config``) as NestJS does for a POST; ``restart`` and ``start`` bring a paired
session back to ``WORKING`` (an unpaired one to ``SCAN_QR_CODE``), ``stop`` leaves it
``STOPPED``, ``logout`` forgets the pairing (``SCAN_QR_CODE``). An unknown session is 404.

Switches: ``session_status``, ``response_shape``, ``not_on_whatsapp`` (numbers check-exists
denies), ``chat_ids`` (check-exists answers another chatId, as for Brazilian numbers),
``fail_next(count, status)``, ``stall_next(count, seconds)``, ``fail_next_command(count,
status)`` (session commands); ``requests`` and ``sent`` record what arrived.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ACK_NAMES = {-1: "ERROR", 0: "PENDING", 1: "SERVER", 2: "DEVICE", 3: "READ", 4: "PLAYED"}
SEND_ACTIONS = ("sendText", "sendImage", "sendFile", "sendVideo", "sendVoice", "sendSeen")
MEDIA_ACTIONS = ("sendImage", "sendFile", "sendVideo", "sendVoice")
RESPONSE_SHAPES = ("webjs", "webjs-object", "noweb", "empty")
SESSION_COMMANDS = ("start", "stop", "restart", "logout")
_REASONS = {400: "Bad Request", 404: "Not Found", 422: "Unprocessable Entity",
            429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable"}


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    json: Any


@dataclass
class SentMessage:
    action: str          # "sendText", "sendImage", ...
    chat_id: str
    body: dict[str, Any]
    msg_id: str          # WhatsApp's bare id, e.g. "3EB0A1..."

    @property
    def serialized_id(self) -> str:
        """The id as WAHA's events carry it: ``{fromMe}_{chatId}_{msgId}``."""
        return f"true_{self.chat_id}_{self.msg_id}"


def nest_error(status: int, message: Any) -> JSONResponse:
    return JSONResponse({"statusCode": status, "message": message,
                         "error": _REASONS.get(status, "Error")}, status_code=status)


class FakeWaha:
    def __init__(self, api_key: str = "waha-test-key", session: str = "default",
                 me_id: str = "79110000000@c.us") -> None:
        self.api_key = api_key
        self.session_name = session
        self.me_id = me_id
        self.app = Starlette(routes=[
            Route("/api/sessions/{name}", self._session, methods=["GET"]),
            Route("/api/sessions/{name}/{command}", self._session_command, methods=["POST"]),
            Route("/api/contacts/check-exists", self._check_exists, methods=["GET"]),
            Route("/api/{action}", self._send, methods=["POST"]),
        ])
        self.reset()

    def reset(self) -> None:
        self.session_status = "WORKING"
        self.response_shape = "webjs"
        self.not_on_whatsapp: set[str] = set()
        self.chat_ids: dict[str, str] = {}
        self.webhook_hmac_key: str | None = None
        self.requests: list[RecordedRequest] = []
        self.sent: list[SentMessage] = []
        self._failures: list[int | None] = []
        self._stalls: list[float] = []
        self._command_failures: list[int] = []
        self.paired = True

    # -- switches ------------------------------------------------------------------------------

    def fail_next(self, count: int = 1, status: int = 500, after: int = 0) -> None:
        """Answer ``count`` send or check-exists calls with ``status``, once ``after`` more
        have gone through."""
        self._failures.extend([None] * after + [status] * count)

    def fail_next_command(self, count: int = 1, status: int = 500) -> None:
        """Answer the next ``count`` session commands (restart, logout, ...) with ``status``."""
        self._command_failures.extend([status] * count)

    def stall_next(self, count: int = 1, seconds: float = 1.0) -> None:
        """Hold the next ``count`` sends for ``seconds`` before answering (client timeouts)."""
        self._stalls.extend([seconds] * count)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    # -- HTTP ----------------------------------------------------------------------------------

    async def _record(self, request: Request) -> RecordedRequest:
        raw = await request.body()
        recorded = RecordedRequest(request.method, request.url.path, dict(request.headers),
                                   dict(request.query_params), orjson.loads(raw) if raw else None)
        self.requests.append(recorded)
        return recorded

    @staticmethod
    def _failure(status: int) -> Response:
        if status == 401:
            return JSONResponse({"message": "Unauthorized", "statusCode": 401}, status_code=401)
        return nest_error(status, _REASONS.get(status, "Error"))

    def _unauthorized(self, request: Request) -> Response | None:
        if request.headers.get("x-api-key") != self.api_key:
            return JSONResponse({"message": "Unauthorized", "statusCode": 401}, status_code=401)
        return None

    async def _session(self, request: Request) -> Response:
        await self._record(request)
        if denied := self._unauthorized(request):
            return denied
        name = request.path_params["name"]
        if name != self.session_name:
            return nest_error(404, f"Session '{name}' does not exist")
        working = self.session_status == "WORKING"
        return JSONResponse({
            "name": name, "status": self.session_status,
            "config": {"webhooks": []},
            "me": {"id": self.me_id, "pushName": "~"} if working else None,
        })

    async def _session_command(self, request: Request) -> Response:
        command = request.path_params["command"]
        if command not in SESSION_COMMANDS:
            return nest_error(404, f"Cannot POST {request.url.path}")
        await self._record(request)
        if denied := self._unauthorized(request):
            return denied
        name = request.path_params["name"]
        if name != self.session_name:
            return nest_error(404, f"Session '{name}' does not exist")
        if self._command_failures:
            return self._failure(self._command_failures.pop(0))
        if command == "logout":
            self.paired = False
        if command == "stop":
            self.session_status = "STOPPED"
        else:
            self.session_status = "WORKING" if self.paired else "SCAN_QR_CODE"
        return JSONResponse({"name": name, "status": self.session_status,
                             "config": {"webhooks": []}}, status_code=201)

    async def _check_exists(self, request: Request) -> Response:
        recorded = await self._record(request)
        if denied := self._unauthorized(request):
            return denied
        if self._failures and (status := self._failures.pop(0)) is not None:
            return self._failure(status)
        phone = recorded.query.get("phone", "")
        if phone in self.not_on_whatsapp:
            return JSONResponse({"numberExists": False, "chatId": None})
        return JSONResponse({"numberExists": True,
                             "chatId": self.chat_ids.get(phone, f"{phone}@c.us")})

    async def _send(self, request: Request) -> Response:
        action = request.path_params["action"]
        if action not in SEND_ACTIONS:
            return nest_error(404, f"Cannot POST /api/{action}")
        recorded = await self._record(request)
        if denied := self._unauthorized(request):
            return denied
        if self._failures and (status := self._failures.pop(0)) is not None:
            return self._failure(status)
        if self._stalls:
            await asyncio.sleep(self._stalls.pop(0))
        body = recorded.json if isinstance(recorded.json, dict) else {}
        if body.get("session") != self.session_name:
            return nest_error(404, f"Session '{body.get('session')}' does not exist")
        if self.session_status != "WORKING":
            return JSONResponse({
                "error": "Session status is not as expected. Try again later or restart the "
                         "session", "session": self.session_name,
                "status": self.session_status, "expected": ["WORKING"]}, status_code=422)
        problems = self._validate(action, body)
        if problems:
            return nest_error(400, problems)
        sent = SentMessage(action, body["chatId"], body, "3EB0" + secrets.token_hex(8).upper())
        self.sent.append(sent)
        return self._created(sent)

    @staticmethod
    def _validate(action: str, body: dict[str, Any]) -> list[str]:
        problems = []
        chat_id = body.get("chatId")
        if not isinstance(chat_id, str) or "@" not in chat_id:
            problems.append("chatId must be a string like 11111111111@c.us")
        if action == "sendText" and not isinstance(body.get("text"), str):
            problems.append("text must be a string")
        if action in MEDIA_ACTIONS:
            file = body.get("file")
            if not isinstance(file, dict) or not (file.get("url") or file.get("data")):
                problems.append("file.url or file.data must be given")
            elif not file.get("mimetype"):
                problems.append("file.mimetype must be a string")
        return problems

    def _created(self, sent: SentMessage) -> Response:
        now = int(time.time())
        text = sent.body.get("text") or sent.body.get("caption") or ""
        if self.response_shape == "empty":
            return Response(b"", status_code=201)
        if self.response_shape == "noweb":
            number = sent.chat_id.split("@", 1)[0]
            return JSONResponse({
                "key": {"remoteJid": f"{number}@s.whatsapp.net", "fromMe": True,
                        "id": sent.msg_id},
                "message": {"extendedTextMessage": {"text": text}},
                "messageTimestamp": str(now), "status": "PENDING"}, status_code=201)
        message_id: Any = sent.serialized_id
        if self.response_shape == "webjs-object":
            message_id = {"fromMe": True, "remote": sent.chat_id, "id": sent.msg_id,
                          "_serialized": sent.serialized_id}
        return JSONResponse({"id": message_id, "timestamp": now, "from": self.me_id,
                             "fromMe": True, "to": sent.chat_id, "body": text,
                             "hasMedia": sent.action != "sendText", "ack": 0},
                            status_code=201)

    # -- webhooks ------------------------------------------------------------------------------

    def envelope(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        return {"id": "evt_" + secrets.token_hex(13).upper(),
                "timestamp": int(time.time() * 1000), "event": event,
                "session": self.session_name, "metadata": {},
                "me": {"id": self.me_id, "pushName": "~"}, "engine": "WEBJS",
                "environment": {"tier": "CORE", "version": "2025.x"}, "payload": payload}

    def ack_event(self, sent: SentMessage, ack: int) -> dict[str, Any]:
        return self.envelope("message.ack", {
            "id": sent.serialized_id, "from": sent.chat_id, "participant": None,
            "fromMe": True, "ack": ack, "ackName": ACK_NAMES[ack]})

    def message_event(self, sender: str, body: str, *, media: dict[str, str] | None = None,
                      from_me: bool = False, push_name: str = "Ravi") -> dict[str, Any]:
        """An inbound ``message`` event; ``sender`` is a chat id such as ``911@c.us``. The
        engine's own message is in ``_data`` (WEBJS: the sender's profile name is
        ``notifyName``)."""
        serialized = f"{str(from_me).lower()}_{sender}_{secrets.token_hex(10).upper()}"
        return self.envelope("message", {
            "id": serialized,
            "timestamp": int(time.time()), "from": sender, "fromMe": from_me,
            "source": "app", "to": self.me_id, "body": body, "hasMedia": media is not None,
            "media": media, "ack": 1,
            "_data": {"id": {"fromMe": from_me, "remote": sender, "_serialized": serialized},
                      "body": body, "type": "image" if media else "chat",
                      "notifyName": push_name}})

    def session_event(self, status: str) -> dict[str, Any]:
        now = int(time.time() * 1000)
        return self.envelope("session.status", {
            "status": status, "statuses": [{"status": status, "timestamp": now}], "data": {}})

    def signed_headers(self, event: dict[str, Any], body: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json",
                   "X-Webhook-Request-Id": event["id"],
                   "X-Webhook-Timestamp": str(event["timestamp"])}
        if self.webhook_hmac_key:
            headers["X-Webhook-Hmac"] = hmac.new(self.webhook_hmac_key.encode(), body,
                                                 hashlib.sha512).hexdigest()
            headers["X-Webhook-Hmac-Algorithm"] = "sha512"
        return headers

    async def emit(self, url: str, events: list[dict[str, Any]], *, duplicate: bool = False,
                   reorder: bool = False) -> list[int]:
        """POST ``events`` to ``url`` as WAHA does (signed when ``webhook_hmac_key`` is set),
        in reverse order and/or each twice if asked; returns the HTTP statuses answered."""
        order = list(reversed(events)) if reorder else list(events)
        if duplicate:
            order = [event for event in order for _ in range(2)]
        statuses = []
        async with httpx.AsyncClient(timeout=10) as client:
            for event in order:
                body = orjson.dumps(event)
                answer = await client.post(url, content=body,
                                           headers=self.signed_headers(event, body))
                statuses.append(answer.status_code)
        return statuses
