"""A fake WhatsApp Cloud API (Meta Graph API) that answers in Meta's documented wire format.

``GraphFake().app`` is a Starlette app (serve it with ``tests.fakes.server.serve_app``) with:

- ``POST /{version}/{phone_number_id}/messages``: checks the Bearer token (190, HTTP 401) and
  the body the way Graph does (``messaging_product``, ``to``, one of ``link``/``id``, captions
  only on image/video/document, ``filename`` only on document, template name and language),
  then answers ``{"messaging_product", "contacts": [{"input", "wa_id"}], "messages": [{"id":
  "wamid..."}]}`` or an error body ``{"error": {"message": "(#code) title", "type", "code",
  "error_data": {"messaging_product", "details"}, "error_subcode"?, "fbtrace_id"}}``;
- ``GET /{version}/{phone_number_id}``: the phone number object (``?fields=`` honoured).

Knobs: ``fail_next`` (any Graph error for the next N sends, optionally of one message type),
``throttle`` (130429), ``server_error`` (5xx with a Graph body), ``plain_error`` (a 5xx page
that is not JSON, like a proxy), ``undeliverable`` numbers (131026), ``window_closed`` numbers
(131047, synchronously or as 200 + a later ``failed`` webhook), a per-recipient pair limit
(131056, ``pair_interval`` and ``pair_burst``), ``templates`` (132001/132000), ``token_expired``,
``response_delay``. Every request is recorded in ``requests``; accepted sends in ``sent``.

It also plays Meta's webhook side: builds status payloads (sent/delivered/read/failed with
``errors``) and inbound message payloads, signs them (``X-Hub-Signature-256: sha256=<hex
HMAC-SHA256(app secret, body)>``) and POSTs them (``post``/``apost``), optionally duplicated,
reordered or badly signed; with ``webhook_url`` and ``auto_statuses`` set it posts statuses by
itself after each accepted send, as Meta does.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

# code → (title, HTTP status when answered synchronously, error_data.details)
GRAPH_ERRORS: dict[int, tuple[str, int, str]] = {
    4: ("Application request limit reached", 400, "Too many API calls from this app."),
    100: ("Invalid parameter", 400, "Invalid parameter"),
    131000: ("Something went wrong", 500, "Something went wrong. Please try again later."),
    131008: ("Required parameter is missing", 400, "A required parameter is missing."),
    131009: ("Parameter value is not valid", 400, "One or more parameter values are invalid."),
    131016: ("Service unavailable", 503, "A service is temporarily unavailable."),
    131026: ("Message undeliverable", 400, "Message Undeliverable."),
    131030: ("Recipient phone number not in allowed list", 400,
             "Recipient phone number not in allowed list: Add recipient phone number to "
             "recipient list and try again."),
    131047: ("Re-engagement message", 400,
             "Message failed to send because more than 24 hours have passed since the customer "
             "last replied to this number."),
    131048: ("Spam rate limit hit", 400,
             "Message failed to send because there are restrictions on how many messages can "
             "be sent from this phone number."),
    131051: ("Unsupported message type", 400, "Message type is not currently supported."),
    131056: ("(Business Account, Consumer Account) pair rate limit hit", 400,
             "Message failed to send because there were too many messages sent from this phone "
             "number to the same phone number in a short period of time."),
    130429: ("Rate limit hit", 429,
             "Cloud API message throughput has been reached. Try again later."),
    132000: ("Number of parameters does not match the expected number of params", 400,
             "The number of variable parameter values included in the request did not match "
             "the number of variable parameters defined in the template."),
    132001: ("Template name does not exist in the translation", 404,
             "The template does not exist in the specified language or has not been "
             "approved."),
    80007: ("Rate limit issues", 400, "The WhatsApp Business Account has reached its rate "
            "limit."),
}
MEDIA_TYPES = ("image", "video", "audio", "document", "sticker")
CAPTION_TYPES = ("image", "video", "document")


@dataclass(slots=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    body: Any
    at: float
    # The client's address: one port for many requests shows the connection was reused.
    peer: str = ""


@dataclass(slots=True)
class SentMessage:
    wamid: str
    to: str
    type: str
    payload: dict[str, Any]
    at: float


@dataclass(slots=True)
class ForcedError:
    code: int
    remaining: int
    http_status: int | None = None
    details: str | None = None
    message_type: str | None = None
    subcode: int | None = None


@dataclass(slots=True)
class WebhookDelivery:
    """One webhook POST as Meta would make it: the exact body bytes and its headers."""

    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def fbtrace_id() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(17)).decode().rstrip("=")[:23]


def error_body(code: int, *, details: str | None = None, title: str | None = None,
               subcode: int | None = None) -> dict[str, Any]:
    """Meta's error object for a WhatsApp error ``code``."""
    known_title, _, known_details = GRAPH_ERRORS.get(code, ("Unknown error", 400, ""))
    error: dict[str, Any] = {
        "message": f"(#{code}) {title or known_title}",
        "type": "OAuthException",
        "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": details or known_details},
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    error["fbtrace_id"] = fbtrace_id()
    return {"error": error}


WEBHOOK_TRIES = 5


class GraphFake:
    def __init__(self, *, phone_number_id: str = "1122334455667",
                 access_token: str = "EAAG-test-token", app_secret: str = "test-app-secret",
                 display_phone_number: str = "15550001111", waba_id: str = "102290129340398",
                 pair_interval: float | None = None, pair_burst: int = 1,
                 pair_limit_status: int = 400, webhook_url: str | None = None,
                 auto_statuses: Sequence[str] = (), callback_delay: float = 0.0) -> None:
        self.phone_number_id = phone_number_id
        self.access_token = access_token
        self.app_secret = app_secret
        self.display_phone_number = display_phone_number
        self.waba_id = waba_id
        # Meta's pair limit: a bucket of ``pair_burst`` messages per recipient, one back every
        # ``pair_interval`` seconds (short bursts are tolerated, then 131056).
        self.pair_interval = pair_interval
        self.pair_burst = pair_burst
        # Sources disagree on 131056's HTTP status (400 or 429): configurable.
        self.pair_limit_status = pair_limit_status
        self.webhook_url = webhook_url
        self.auto_statuses = tuple(auto_statuses)
        self.callback_delay = callback_delay
        self.undeliverable: set[str] = set()
        self.window_closed: set[str] = set()
        # True: a closed window answers 200 + wamid, then a ``failed`` 131047 webhook.
        self.window_closed_async = False
        # (name, language) → number of body parameters; None accepts any template.
        self.templates: dict[tuple[str, str], int] | None = None
        self.token_expired = False
        self.response_delay = 0.0
        self.requests: list[RecordedRequest] = []
        self.sent: list[SentMessage] = []
        self._forced: deque[ForcedError] = deque()
        self._plain_errors: deque[int] = deque()
        self._pairs: dict[str, tuple[float, float]] = {}   # to → (tokens, at)
        self._lock = threading.Lock()
        self._counter = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.webhook_responses: list[int] = []
        # Users' media by media id: (MIME type, bytes), downloadable with the token.
        self.media: dict[str, tuple[str, bytes]] = {}
        self.app = Starlette(routes=[
            Route("/{version}/{number_id}/messages", self._messages, methods=["POST"]),
            Route("/media-download/{media_id}", self._media_download, methods=["GET"]),
            Route("/{version}/{number_id}", self._phone_number, methods=["GET"]),
        ])

    # --- knobs ---------------------------------------------------------------------------------
    def fail_next(self, code: int, count: int = 1, *, http_status: int | None = None,
                  details: str | None = None, message_type: str | None = None,
                  subcode: int | None = None) -> None:
        """Answer the next ``count`` sends (of ``message_type`` only, if given) with ``code``."""
        with self._lock:
            self._forced.append(ForcedError(code, count, http_status, details, message_type,
                                            subcode))

    def throttle(self, count: int = 1) -> None:
        self.fail_next(130429, count)

    def server_error(self, count: int = 1, code: int = 131000, http_status: int = 500,
                     message_type: str | None = None) -> None:
        self.fail_next(code, count, http_status=http_status, message_type=message_type)

    def plain_error(self, count: int = 1, http_status: int = 502) -> None:
        """A 5xx whose body is an HTML page (a proxy in front of Graph), not a Graph error."""
        with self._lock:
            self._plain_errors.extend([http_status] * count)

    def sends_to(self, number: str) -> list[SentMessage]:
        return [m for m in self.sent if m.to == number]

    @property
    def posts(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST"]

    # --- HTTP ----------------------------------------------------------------------------------
    async def _record(self, request: Request) -> RecordedRequest:
        raw = await request.body()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        recorded = RecordedRequest(request.method, request.url.path,
                                   {k.lower(): v for k, v in request.headers.items()},
                                   dict(request.query_params), body, time.monotonic(),
                                   f"{request.client.host}:{request.client.port}"
                                   if request.client else "")
        with self._lock:
            self.requests.append(recorded)
        return recorded

    def _auth_error(self, headers: dict[str, str]) -> Response | None:
        auth = headers.get("authorization", "")
        if auth != f"Bearer {self.access_token}":
            return JSONResponse({"error": {
                "message": "Invalid OAuth access token - Cannot parse access token",
                "type": "OAuthException", "code": 190, "fbtrace_id": fbtrace_id()}},
                status_code=401)
        if self.token_expired:
            return JSONResponse({"error": {
                "message": "Error validating access token: Session has expired on Friday, "
                           "03-Nov-23 09:00:00 PDT. The current time is Friday, 03-Nov-23 "
                           "10:00:00 PDT.",
                "type": "OAuthException", "code": 190, "error_subcode": 463,
                "fbtrace_id": fbtrace_id()}}, status_code=401)
        return None

    def _unknown_object(self, number_id: str) -> Response:
        return JSONResponse({"error": {
            "message": f"Unsupported get request. Object with ID '{number_id}' does not exist, "
                       "cannot be loaded due to missing permissions, or does not support this "
                       "operation. Please read the Graph API documentation at "
                       "https://developers.facebook.com/docs/graph-api",
            "type": "GraphMethodException", "code": 100, "error_subcode": 33,
            "fbtrace_id": fbtrace_id()}}, status_code=400)

    def add_media(self, data: bytes, mime_type: str) -> str:
        """A user's media, as Meta keeps it; returns its media id."""
        media_id = str(1_479_537_139_650_000 + len(self.media))
        self.media[media_id] = (mime_type, data)
        return media_id

    async def _media_download(self, request: Request) -> Response:
        """The media URL: Meta answers 401 without the token, as the reference says."""
        recorded = await self._record(request)
        if refused := self._auth_error(recorded.headers):
            return refused
        found = self.media.get(request.path_params["media_id"])
        if found is None:
            return Response(status_code=404)
        return Response(found[1], media_type=found[0])

    async def _phone_number(self, request: Request) -> Response:
        recorded = await self._record(request)
        if refused := self._auth_error(recorded.headers):
            return refused
        media_id = request.path_params["number_id"]
        if media_id in self.media:
            # GET /{media-id}: the media object, whose url is fetched with the token.
            mime_type, data = self.media[media_id]
            base = str(request.base_url).rstrip("/")
            return JSONResponse({
                "messaging_product": "whatsapp", "url": f"{base}/media-download/{media_id}",
                "mime_type": mime_type, "sha256": hashlib.sha256(data).hexdigest(),
                "file_size": len(data), "id": media_id})
        if request.path_params["number_id"] != self.phone_number_id:
            return self._unknown_object(request.path_params["number_id"])
        digits = self.display_phone_number
        number = {"verified_name": "Pushgate Test", "code_verification_status": "VERIFIED",
                  "display_phone_number": f"+{digits[:1]} {digits[1:4]}-{digits[4:7]}-"
                                          f"{digits[7:]}",
                  "quality_rating": "GREEN", "platform_type": "CLOUD_API",
                  "throughput": {"level": "STANDARD"}, "id": self.phone_number_id}
        fields = recorded.query.get("fields")
        if fields:
            wanted = set(fields.split(",")) | {"id"}
            number = {k: v for k, v in number.items() if k in wanted}
        return JSONResponse(number)

    async def _messages(self, request: Request) -> Response:
        recorded = await self._record(request)
        if self.response_delay:
            await asyncio.sleep(self.response_delay)
        with self._lock:
            plain = self._plain_errors.popleft() if self._plain_errors else None
        if plain is not None:
            return Response(f"<html><body><h1>Error {plain}</h1></body></html>",
                            status_code=plain, media_type="text/html")
        if refused := self._auth_error(recorded.headers):
            return refused
        if request.path_params["number_id"] != self.phone_number_id:
            return self._unknown_object(request.path_params["number_id"])
        payload = recorded.body
        if not isinstance(payload, dict):
            return self._error(100, details="The request body is not valid JSON.")
        if invalid := self._invalid(payload):
            return invalid
        to = str(payload["to"]).lstrip("+")
        if forced := self._take_forced(str(payload.get("type", "text"))):
            return forced
        if to in self.undeliverable:
            return self._error(131026)
        is_template = payload.get("type") == "template"
        closed_async = False
        if to in self.window_closed and not is_template:
            if not self.window_closed_async:
                return self._error(131047)
            closed_async = True
        if not self._pair_allows(to):
            return self._error(131056, http_status=self.pair_limit_status)
        with self._lock:
            self._counter += 1
            wamid = "wamid." + base64.b64encode(
                f"\x15\x02\x00\x11\x18\x12{to}{self._counter:08d}{secrets.token_hex(6)}"
                .encode()).decode()
            self.sent.append(SentMessage(wamid, to, str(payload.get("type", "text")), payload,
                                         time.monotonic()))
        message: dict[str, Any] = {"id": wamid}
        if is_template:
            message["message_status"] = "accepted"
        statuses: list[tuple[str, int | None]] = [(s, None) for s in self.auto_statuses]
        if closed_async:
            statuses = [("failed", 131047)]
        if self.webhook_url and statuses:
            self._spawn(self._auto_webhooks(wamid, to, statuses))
        return JSONResponse({"messaging_product": "whatsapp",
                             "contacts": [{"input": str(payload["to"]), "wa_id": to}],
                             "messages": [message]})

    def _error(self, code: int, *, http_status: int | None = None, details: str | None = None,
               subcode: int | None = None) -> Response:
        status = http_status or GRAPH_ERRORS.get(code, ("", 400, ""))[1]
        return JSONResponse(error_body(code, details=details, subcode=subcode),
                            status_code=status)

    def _take_forced(self, message_type: str) -> Response | None:
        with self._lock:
            for forced in self._forced:
                if forced.message_type in (None, message_type):
                    forced.remaining -= 1
                    if forced.remaining <= 0:
                        self._forced.remove(forced)
                    break
            else:
                return None
        return self._error(forced.code, http_status=forced.http_status, details=forced.details,
                           subcode=forced.subcode)

    def _pair_allows(self, to: str) -> bool:
        if not self.pair_interval:
            return True
        now = time.monotonic()
        with self._lock:
            tokens, at = self._pairs.get(to, (float(self.pair_burst), now))
            tokens = min(float(self.pair_burst), tokens + (now - at) / self.pair_interval)
            if tokens < 1.0:
                self._pairs[to] = (tokens, now)
                return False
            self._pairs[to] = (tokens - 1.0, now)
            return True

    def _invalid(self, payload: dict[str, Any]) -> Response | None:
        """Graph's synchronous checks of a send body."""
        if payload.get("messaging_product") != "whatsapp":
            return self._error(100, details="The parameter messaging_product is required.")
        to = payload.get("to")
        if not isinstance(to, str) or not to.lstrip("+").isdigit():
            return self._error(100, details="The parameter to is required and must be a phone "
                                            "number.")
        kind = payload.get("type", "text")
        body = payload.get(kind)
        if kind not in ("text", "template", *MEDIA_TYPES):
            return self._error(131051)
        if not isinstance(body, dict):
            return self._error(100, details=f"The parameter {kind} is required.")
        if kind == "text":
            text = body.get("body")
            if not isinstance(text, str) or not text:
                return self._error(100, details="The parameter text['body'] is required.")
            if len(text) > 4096:
                return self._error(100, details="Param text['body'] must be at most 4096 "
                                                "characters long.")
        elif kind == "template":
            return self._invalid_template(body)
        else:
            if ("link" in body) == ("id" in body):
                return self._error(131009, details=f"Please specify either 'link' or 'id' for "
                                                   f"{kind}.")
            extra = set(body) - {"link", "id", "caption", "filename"}
            if "caption" in body and kind not in CAPTION_TYPES:
                extra.add("caption")
            if "filename" in body and kind != "document":
                extra.add("filename")
            if extra:
                return self._error(100, details=f"Param {kind}['{sorted(extra)[0]}'] is not a "
                                                "valid parameter.")
            if len(str(body.get("caption", ""))) > 1024:
                return self._error(100, details=f"Param {kind}['caption'] must be at most "
                                                "1024 characters long.")
        return None

    def _invalid_template(self, template: dict[str, Any]) -> Response | None:
        name = template.get("name")
        language = template.get("language")
        code = language.get("code") if isinstance(language, dict) else None
        if not name or not code:
            return self._error(131008, details="The parameter template['name'] and "
                                              "template['language']['code'] are required.")
        body_params = 0
        for component in template.get("components", []):
            if component.get("type") not in ("header", "body", "button", "footer"):
                return self._error(100, details="Invalid component type.")
            for param in component.get("parameters", []):
                ptype = param.get("type")
                if not isinstance(ptype, str) or ptype not in param:
                    return self._error(131009, details=f"Parameter of type {ptype} has no "
                                                       f"{ptype} value.")
            if component.get("type") == "body":
                body_params = len(component.get("parameters", []))
        if self.templates is not None:
            expected = self.templates.get((name, code))
            if expected is None:
                return self._error(132001, details=f"template name ({name}) does not exist in "
                                                   f"{code}")
            if expected != body_params:
                return self._error(132000, details=f"body: number of localizable_params "
                                                   f"({body_params}) does not match the "
                                                   f"expected number of params ({expected})")
        return None

    # --- webhooks (Meta → gateway) -----------------------------------------------------------
    def sign(self, body: bytes, secret: str | None = None) -> str:
        key = (secret or self.app_secret).encode()
        return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()

    def envelope(self, value: dict[str, Any], phone_number_id: str | None = None
                 ) -> dict[str, Any]:
        return {"object": "whatsapp_business_account", "entry": [{
            "id": self.waba_id,
            "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": self.display_phone_number,
                             "phone_number_id": phone_number_id or self.phone_number_id},
                **value}}]}]}

    def status_object(self, wamid: str, status: str, recipient: str, *,
                      timestamp: float | None = None, error_code: int | None = None
                      ) -> dict[str, Any]:
        obj: dict[str, Any] = {"id": wamid, "status": status,
                               "timestamp": str(int(timestamp or time.time())),
                               "recipient_id": recipient}
        if status in ("sent", "delivered", "read"):
            obj["pricing"] = {"billable": True, "pricing_model": "PMP", "type": "regular",
                              "category": "utility"}
        if status == "sent":
            obj["conversation"] = {"id": secrets.token_hex(16),
                                   "expiration_timestamp": str(int(time.time()) + 86400),
                                   "origin": {"type": "utility"}}
        if status == "failed":
            code = error_code or 131026
            title, _, details = GRAPH_ERRORS.get(code, ("Unknown error", 400, ""))
            obj["errors"] = [{"code": code, "title": title, "message": title,
                              "error_data": {"details": details},
                              "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/"
                                      "support/error-codes/"}]
        return obj

    def status_payload(self, wamid: str, status: str, recipient: str, *,
                       timestamp: float | None = None, error_code: int | None = None,
                       phone_number_id: str | None = None) -> dict[str, Any]:
        return self.envelope({"statuses": [self.status_object(
            wamid, status, recipient, timestamp=timestamp, error_code=error_code)]},
            phone_number_id)

    def inbound_payload(self, sender: str, message: dict[str, Any], *, name: str = "Ana",
                        timestamp: float | None = None, phone_number_id: str | None = None
                        ) -> dict[str, Any]:
        """A user's message; ``message`` holds the type-specific part, e.g. ``{"type": "text",
        "text": {"body": "hi"}}``."""
        msg = {"from": sender, "id": "wamid." + base64.b64encode(secrets.token_bytes(24))
               .decode(), "timestamp": str(int(timestamp or time.time())), **message}
        return self.envelope({"contacts": [{"profile": {"name": name}, "wa_id": sender}],
                              "messages": [msg]}, phone_number_id)

    def delivery(self, payload: dict[str, Any], *, signature: str = "valid") -> WebhookDelivery:
        """``signature``: "valid", "invalid" (signed with another secret) or "missing"."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "facebookexternalua"}
        if signature == "valid":
            headers["X-Hub-Signature-256"] = self.sign(body)
        elif signature == "invalid":
            headers["X-Hub-Signature-256"] = self.sign(body, "not-the-app-secret")
        elif signature != "missing":
            raise ValueError(f"unknown signature mode {signature!r}")
        return WebhookDelivery(body, headers)

    def lifecycle(self, wamid: str, recipient: str,
                  statuses: Iterable[str] = ("sent", "delivered", "read"), *,
                  reorder: bool = False, duplicate: bool = False,
                  error_code: int | None = None) -> list[WebhookDelivery]:
        """One POST per status, as Meta sends them; ``reorder`` puts read before delivered,
        ``duplicate`` sends each twice."""
        order = list(statuses)
        if reorder and "read" in order and "delivered" in order:
            r, d = order.index("read"), order.index("delivered")
            order[r], order[d] = order[d], order[r]
        start = time.time()
        stamps = {s: start + i for i, s in enumerate(statuses)}
        out = []
        for status in order:
            one = self.delivery(self.status_payload(wamid, status, recipient,
                                                    timestamp=stamps[status],
                                                    error_code=error_code))
            out.extend([one, one] if duplicate else [one])
        return out

    def post(self, url: str, deliveries: Iterable[WebhookDelivery]) -> list[httpx.Response]:
        with httpx.Client(timeout=10) as client:
            return [client.post(url, content=d.body, headers=d.headers) for d in deliveries]

    async def apost(self, url: str, deliveries: Iterable[WebhookDelivery]
                    ) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=10) as client:
            return [await client.post(url, content=d.body, headers=d.headers)
                    for d in deliveries]

    async def averify(self, url: str, verify_token: str, challenge: str = "1158201444",
                      mode: str = "subscribe") -> httpx.Response:
        """Meta's subscription handshake (GET with hub.* parameters)."""
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.get(url, params={"hub.mode": mode, "hub.challenge": challenge,
                                                 "hub.verify_token": verify_token})

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _auto_webhooks(self, wamid: str, to: str,
                             statuses: list[tuple[str, int | None]]) -> None:
        assert self.webhook_url is not None
        async with httpx.AsyncClient(timeout=10) as client:
            for status, code in statuses:
                await asyncio.sleep(self.callback_delay)
                one = self.delivery(self.status_payload(wamid, status, to, error_code=code))
                # Meta retries a webhook that was not answered 200 (for days, backing off);
                # a few quick tries keep a loaded test machine from losing a status.
                for attempt in range(WEBHOOK_TRIES):
                    try:
                        response = await client.post(self.webhook_url, content=one.body,
                                                     headers=one.headers)
                        answered = response.status_code
                    except httpx.HTTPError:
                        answered = 0
                    if answered == 200 or attempt == WEBHOOK_TRIES - 1:
                        break
                    await asyncio.sleep(0.5 * (attempt + 1))
                self.webhook_responses.append(answered)
