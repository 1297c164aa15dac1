"""A fake Evolution API (v2) server for connector tests, served over real HTTP.

Answers as the reference notes (``channel-wire-formats.md`` §3.5) describe Evolution: ``apikey``
header auth, ``201`` sends answered with the Baileys message (``key.id``), errors as
``{"status", "error", "response": {"message": [...] | "..."}}`` — a number not on WhatsApp is
400 with ``[{"jid", "exists": false, "number"}]``, an unknown instance 404 —
``GET /instance/connectionState/{instance}`` with ``open|close|connecting``, and webhooks
(``messages.update`` with ``keyId`` or ``key`` per version, ``messages.upsert``,
``connection.update``) in Evolution's envelope, unsigned.

Not in the reference: what Evolution answers to a send while the instance is not ``open``; this
fake answers 400 ``Connection Closed``, an error that looks like the message's fault, so the
connector must not trust it.

Instance commands, as Evolution v2's instance router serves them: ``POST
/instance/restart/{instance}`` answers 200 with the connection state (``{"instance":
{"instanceName", "state"}}``); ``DELETE /instance/logout/{instance}`` answers 200 ``{"status":
"SUCCESS", "error": false, "response": {"message": "Instance logged out"}}`` and leaves the
instance ``close``, or 400 ``The "<name>" instance is not connected`` when it already is.

Number check, as Evolution v2's chat router serves it: ``POST /chat/whatsappNumbers/{instance}``
``{"numbers": [...]}`` answers 200 with ``[{"exists", "jid", "number"}]``, one per number.

Switches: ``connection_state``, ``not_on_whatsapp`` (sends refused, checks answer false),
``fail_next(count, status)``, ``fail_next_command(count, status)`` (instance commands);
``requests`` and ``sent`` record what arrived.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

MEDIA_TYPES = ("image", "video", "document", "audio")
_REASONS = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable"}


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    json: Any


@dataclass
class SentMessage:
    action: str          # "sendText", "sendMedia", "sendWhatsAppAudio"
    number: str
    body: dict[str, Any]
    key_id: str

    @property
    def remote_jid(self) -> str:
        return f"{self.number}@s.whatsapp.net"


def evolution_error(status: int, message: Any) -> JSONResponse:
    return JSONResponse({"status": status, "error": _REASONS.get(status, "Error"),
                         "response": {"message": message}}, status_code=status)


class FakeEvolution:
    def __init__(self, api_key: str = "evo-test-key", instance: str = "shop",
                 owner: str = "5511900000000") -> None:
        self.api_key = api_key
        self.instance = instance
        self.owner = owner
        self.app = Starlette(routes=[
            Route("/instance/connectionState/{instance}", self._state, methods=["GET"]),
            Route("/instance/restart/{instance}", self._restart, methods=["POST"]),
            Route("/instance/logout/{instance}", self._logout, methods=["DELETE"]),
            Route("/message/{action}/{instance}", self._send, methods=["POST"]),
            Route("/chat/whatsappNumbers/{instance}", self._whatsapp_numbers,
                  methods=["POST"]),
        ])
        self.reset()

    def reset(self) -> None:
        self.connection_state = "open"
        self.not_on_whatsapp: set[str] = set()
        self.requests: list[RecordedRequest] = []
        self.sent: list[SentMessage] = []
        self._failures: list[int | None] = []
        self._command_failures: list[int] = []

    def fail_next_command(self, count: int = 1, status: int = 500) -> None:
        """Answer the next ``count`` instance commands (restart, logout) with ``status``."""
        self._command_failures.extend([status] * count)

    def fail_next(self, count: int = 1, status: int = 500, after: int = 0) -> None:
        """Answer ``count`` sends or number checks with ``status``, once ``after`` more have
        gone through."""
        self._failures.extend([None] * after + [status] * count)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    # -- HTTP ----------------------------------------------------------------------------------

    async def _record(self, request: Request) -> RecordedRequest:
        raw = await request.body()
        recorded = RecordedRequest(request.method, request.url.path, dict(request.headers),
                                   orjson.loads(raw) if raw else None)
        self.requests.append(recorded)
        return recorded

    def _refused(self, request: Request) -> Response | None:
        if request.headers.get("apikey") != self.api_key:
            return evolution_error(401, "Unauthorized")
        instance = request.path_params["instance"]
        if instance != self.instance:
            return evolution_error(404, [f'The "{instance}" instance does not exist'])
        return None

    async def _state(self, request: Request) -> Response:
        await self._record(request)
        if refused := self._refused(request):
            return refused
        return JSONResponse({"instance": {"instanceName": self.instance,
                                          "state": self.connection_state}})

    async def _command(self, request: Request) -> Response | None:
        await self._record(request)
        if refused := self._refused(request):
            return refused
        if self._command_failures:
            status = self._command_failures.pop(0)
            return evolution_error(status, _REASONS.get(status, "Error"))
        return None

    async def _restart(self, request: Request) -> Response:
        if refused := await self._command(request):
            return refused
        return JSONResponse({"instance": {"instanceName": self.instance,
                                          "state": self.connection_state}})

    async def _logout(self, request: Request) -> Response:
        if refused := await self._command(request):
            return refused
        if self.connection_state == "close":
            return evolution_error(400, [f'The "{self.instance}" instance is not connected'])
        self.connection_state = "close"
        return JSONResponse({"status": "SUCCESS", "error": False,
                             "response": {"message": "Instance logged out"}})

    async def _whatsapp_numbers(self, request: Request) -> Response:
        """Evolution v2's chat router: ``{"numbers": [...]}`` answered 200 with one
        ``{"exists", "jid", "number"}`` per number, in order."""
        recorded = await self._record(request)
        if refused := self._refused(request):
            return refused
        if self._failures and (status := self._failures.pop(0)) is not None:
            return evolution_error(status, _REASONS.get(status, "Error"))
        body = recorded.json if isinstance(recorded.json, dict) else {}
        numbers = body.get("numbers")
        if not isinstance(numbers, list) or not numbers:
            return evolution_error(400, ["numbers must be a non-empty array"])
        if self.connection_state != "open":
            return evolution_error(400, ["Connection Closed"])
        return JSONResponse([{"exists": str(n) not in self.not_on_whatsapp,
                              "jid": f"{n}@s.whatsapp.net", "number": str(n)}
                             for n in numbers])

    async def _send(self, request: Request) -> Response:
        action = request.path_params["action"]
        if action not in ("sendText", "sendMedia", "sendWhatsAppAudio"):
            return evolution_error(404, [f"Cannot POST {request.url.path}"])
        recorded = await self._record(request)
        if refused := self._refused(request):
            return refused
        if self._failures and (status := self._failures.pop(0)) is not None:
            return evolution_error(status, _REASONS.get(status, "Error"))
        body = recorded.json if isinstance(recorded.json, dict) else {}
        problems = self._validate(action, body)
        if problems:
            return evolution_error(400, problems)
        if self.connection_state != "open":
            return evolution_error(400, ["Connection Closed"])
        number = str(body["number"]).split("@", 1)[0]
        if number in self.not_on_whatsapp:
            return evolution_error(400, [{"jid": f"{number}@s.whatsapp.net", "exists": False,
                                          "number": number}])
        sent = SentMessage(action, number, body, "BAE5" + secrets.token_hex(6).upper())
        self.sent.append(sent)
        return JSONResponse({
            "key": {"remoteJid": sent.remote_jid, "fromMe": True, "id": sent.key_id},
            "pushName": "", "message": self._content(sent),
            "messageTimestamp": str(int(time.time())), "status": "PENDING"}, status_code=201)

    @staticmethod
    def _validate(action: str, body: dict[str, Any]) -> list[str]:
        problems = []
        number = body.get("number")
        if not isinstance(number, str) or not number.split("@", 1)[0].isdigit():
            problems.append("number must be digits or a JID")
        if action == "sendText" and not isinstance(body.get("text"), str):
            problems.append("text is required")
        if action == "sendMedia":
            if body.get("mediatype") not in MEDIA_TYPES:
                problems.append("mediatype must be one of image, video, document, audio")
            if not body.get("media"):
                problems.append("media is required (URL or base64)")
        if action == "sendWhatsAppAudio" and not body.get("audio"):
            problems.append("audio is required")
        return problems

    @staticmethod
    def _content(sent: SentMessage) -> dict[str, Any]:
        if sent.action == "sendText":
            return {"extendedTextMessage": {"text": sent.body["text"]}}
        kind = "audio" if sent.action == "sendWhatsAppAudio" else sent.body["mediatype"]
        content = {"url": sent.body.get("media") or sent.body.get("audio"),
                   "mimetype": sent.body.get("mimetype")}
        if sent.body.get("caption"):
            content["caption"] = sent.body["caption"]
        return {f"{kind}Message": content}

    # -- webhooks ------------------------------------------------------------------------------

    def envelope(self, event: str, data: Any, destination: str = "") -> dict[str, Any]:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {"event": event, "instance": self.instance, "data": data,
                "destination": destination, "date_time": stamp,
                "sender": f"{self.owner}@s.whatsapp.net", "server_url": "http://evolution",
                "apikey": self.api_key}

    def update_event(self, sent: SentMessage, status: str | int, *,
                     shape: str = "keyId") -> dict[str, Any]:
        """A ``messages.update``; ``shape`` "keyId" (flat) or "key" (Baileys key object)."""
        if shape == "keyId":
            data: dict[str, Any] = {"keyId": sent.key_id, "remoteJid": sent.remote_jid,
                                    "fromMe": True, "status": status,
                                    "instanceId": "a1b2c3", "messageId": "cm0"}
        else:
            data = {"key": {"remoteJid": sent.remote_jid, "fromMe": True, "id": sent.key_id},
                    "status": status}
        return self.envelope("messages.update", data)

    def upsert_event(self, number: str, *, text: str | None = None,
                     message: dict[str, Any] | None = None, from_me: bool = False,
                     jid: str | None = None, push_name: str = "Maria") -> dict[str, Any]:
        """A ``messages.upsert`` from ``number``: a plain text, or the given Baileys message."""
        content = message if message is not None else {"conversation": text or ""}
        return self.envelope("messages.upsert", {
            "key": {"remoteJid": jid or f"{number}@s.whatsapp.net", "fromMe": from_me,
                    "id": "3A" + secrets.token_hex(9).upper()},
            "pushName": push_name, "message": content,
            "messageType": next(iter(content), "conversation"),
            "messageTimestamp": int(time.time()), "instanceId": "a1b2c3", "source": "android"})

    def connection_event(self, state: str) -> dict[str, Any]:
        return self.envelope("connection.update", {"instance": self.instance, "state": state,
                                                   "statusReason": 200})

    async def emit(self, url: str, events: list[dict[str, Any]], *, duplicate: bool = False,
                   reorder: bool = False,
                   headers: dict[str, str] | None = None) -> list[int]:
        """POST ``events`` to ``url`` as Evolution does (reverse order and/or each twice if
        asked); returns the HTTP statuses answered."""
        order = list(reversed(events)) if reorder else list(events)
        if duplicate:
            order = [event for event in order for _ in range(2)]
        statuses = []
        async with httpx.AsyncClient(timeout=10) as client:
            for event in order:
                answer = await client.post(url, content=orjson.dumps({**event,
                                                                      "destination": url}),
                                           headers={"Content-Type": "application/json",
                                                    **(headers or {})})
                statuses.append(answer.status_code)
        return statuses
