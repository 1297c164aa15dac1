"""A fake Twilio REST API (Messages, Calls, the account resource) and its status callbacks.

It answers like api.twilio.com (channel-wire-formats.md section 5): HTTP basic auth with the
account sid and auth token (``20003``/401 otherwise), ``201`` with the message or call resource
(``sid`` ``SM…``/``CA…``, ``status`` ``queued``, or ``accepted`` through a Messaging Service),
and Twilio's error object ``{"code", "message", "more_info", "status"}`` for refused numbers,
rate limits (``20429``/429 with ``Retry-After``) and outages. It records every request and can
post status callbacks to the ``StatusCallback`` URL each send named, form-encoded and signed
with ``X-Twilio-Signature`` exactly as Twilio signs them (or with a wrong or no signature).

The signature is computed here independently of the connector, so a connector bug in signing
cannot hide behind a shared helper.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import itertools
import secrets
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "f4k3-auth-t0ken-for-tests"
API_VERSION = "2010-04-01"

# Documented error codes the fake can answer a send with: HTTP status and message.
ERRORS: dict[int, tuple[int, str]] = {
    20003: (401, "Authenticate"),
    20429: (429, "Too Many Requests"),
    20500: (500, "An internal server error has occurred"),
    20503: (503, "Service Unavailable"),
    # The reference gives no HTTP status for 14107; it is a rate limit, so 429 here.
    14107: (429, "SMS rate limit exceeded: more than 30 messages to this number in 30 seconds"),
    21211: (400, "The 'To' number {to} is not a valid phone number."),
    21408: (400, "Permission to send an SMS has not been enabled for the region indicated by "
                 "the 'To' number: {to}."),
    21606: (400, "The 'From' phone number provided is not a valid message-capable Twilio phone "
                 "number for this destination."),
    21608: (400, "The number {to} is unverified. Trial accounts cannot send messages to "
                 "unverified numbers."),
    21610: (400, "Attempt to send to unsubscribed recipient"),
    21614: (400, "'To' number is not a valid mobile number"),
    # Missing parameters (Twilio's codes for them; not used by the tests' connector).
    21602: (400, "Message body is required."),
    21603: (400, "A 'From' phone number is required."),
    21604: (400, "A 'To' phone number is required."),
    21201: (400, "No 'To' number is specified"),
    21213: (400, "No 'From' number is specified"),
    21205: (400, "Url parameter is required."),
    12100: (400, "Document parse failure"),
}

# Which StatusCallbackEvent subscribes to a CallStatus. "completed" (every final status) is
# sent even when not asked for.
_CALL_EVENT: dict[str, str] = {
    "initiated": "initiated",
    "ringing": "ringing",
    "in-progress": "answered",
}


def sign(auth_token: str, url: str, params: list[tuple[str, str]]) -> str:
    """X-Twilio-Signature: base64(HMAC-SHA1(token, url + name1value1 + name2value2 ...)) with the
    parameters sorted by name, repeated names' values sorted too."""
    data = url
    for name in sorted({name for name, _ in params}):
        for value in sorted(v for n, v in params if n == name):
            data += name + value
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
                            ).decode()


def _twilio_date(when: datetime | None = None) -> str:
    return email.utils.format_datetime(when or datetime.now(UTC))


def _error(code: int, **fields: str) -> JSONResponse:
    status, message = ERRORS[code]
    headers = {"WWW-Authenticate": 'Basic realm="Twilio API"'} if status == 401 else {}
    return JSONResponse({"code": code, "message": message.format(**fields),
                         "more_info": f"https://www.twilio.com/docs/errors/{code}",
                         "status": status}, status_code=status, headers=headers)


@dataclass
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    form: list[tuple[str, str]]
    # (user, password) from the basic auth header, None without one.
    auth: tuple[str, str] | None
    # The client's source port: equal ports mean the connection was reused.
    client_port: int
    # When the request arrived (``time.monotonic()``): rate tests count them per window.
    at: float = 0.0

    def value(self, name: str) -> str | None:
        return next((v for n, v in self.form if n == name), None)

    def values(self, name: str) -> list[str]:
        return [v for n, v in self.form if n == name]


@dataclass
class Resource:
    """A message or call the fake accepted."""

    sid: str
    to: str
    from_: str | None
    status_callback: str | None
    messaging_service_sid: str | None = None
    callback_events: list[str] = field(default_factory=list)
    sequence: itertools.count = field(default_factory=itertools.count)


class FakeTwilio:
    """The fake's state and its Starlette ``app``. Configure between requests: ``refuse``,
    ``rate_limit``, ``fail``, ``account_status``; read ``requests``, ``messages``, ``calls``."""

    def __init__(self, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        prefix = f"/{API_VERSION}/Accounts/{{sid}}"
        self.app = Starlette(routes=[
            Route(prefix + ".json", self._account, methods=["GET"]),
            Route(prefix + "/Messages.json", self._messages, methods=["POST"]),
            Route(prefix + "/Calls.json", self._calls, methods=["POST"]),
        ])
        self.reset()

    def reset(self) -> None:
        self.requests: list[Recorded] = []
        self.messages: dict[str, Resource] = {}
        self.calls: dict[str, Resource] = {}
        # +E.164 number → the documented error code a send to it gets.
        self.refused: dict[str, int] = {}
        self.account_status = "active"
        self._rate_limited = 0
        self._retry_after = "1"
        self._failing = 0
        self._fail_code = 20500

    # -- configuration ---------------------------------------------------------------------

    def refuse(self, number: str, code: int) -> None:
        """Answer sends to ``number`` (+E.164) with the documented error ``code``."""
        self.refused[number] = code

    def rate_limit(self, requests: int, retry_after: str = "1") -> None:
        """Answer the next ``requests`` sends with 429 / 20429 and ``Retry-After``."""
        self._rate_limited, self._retry_after = requests, retry_after

    def fail(self, requests: int, code: int = 20500) -> None:
        """Answer the next ``requests`` sends with a server error (20500 → 500, 20503 → 503)."""
        self._failing, self._fail_code = requests, code

    # -- REST API --------------------------------------------------------------------------

    async def _record(self, request: Request) -> Recorded:
        at = time.monotonic()
        form = (await request.form()).multi_items() if request.method == "POST" else []
        auth = None
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            user, _, password = base64.b64decode(credentials).decode().partition(":")
            auth = (user, password)
        client_port = request.client.port if request.client else 0
        recorded = Recorded(request.method, request.url.path,
                            [(n, str(v)) for n, v in form], auth, client_port, at)
        self.requests.append(recorded)
        return recorded

    def _refusal(self, recorded: Recorded, sid_in_path: str) -> Response | None:
        """Auth, then the configured outages; None when the request may proceed."""
        if recorded.auth != (self.account_sid, self.auth_token):
            return _error(20003)
        if sid_in_path != self.account_sid:
            return JSONResponse({"code": 20404, "message": f"The requested resource "
                                 f"/{API_VERSION}/Accounts/{sid_in_path} was not found",
                                 "more_info": "https://www.twilio.com/docs/errors/20404",
                                 "status": 404}, status_code=404)
        if recorded.method != "POST":
            return None
        if self._rate_limited:
            self._rate_limited -= 1
            response = _error(20429)
            response.headers["Retry-After"] = self._retry_after
            return response
        if self._failing:
            self._failing -= 1
            return _error(self._fail_code)
        return None

    async def _account(self, request: Request) -> Response:
        recorded = await self._record(request)
        sid = request.path_params["sid"]
        if refusal := self._refusal(recorded, sid):
            return refusal
        now = _twilio_date()
        return JSONResponse({
            "sid": sid, "owner_account_sid": sid, "friendly_name": "pushgate test account",
            "status": self.account_status, "type": "Full", "date_created": now,
            "date_updated": now, "uri": f"/{API_VERSION}/Accounts/{sid}.json",
            "subresource_uris": {
                "messages": f"/{API_VERSION}/Accounts/{sid}/Messages.json",
                "calls": f"/{API_VERSION}/Accounts/{sid}/Calls.json",
            },
        })

    async def _messages(self, request: Request) -> Response:
        recorded = await self._record(request)
        if refusal := self._refusal(recorded, request.path_params["sid"]):
            return refusal
        to, from_ = recorded.value("To"), recorded.value("From")
        service, body = recorded.value("MessagingServiceSid"), recorded.value("Body") or ""
        media = recorded.values("MediaUrl")
        if not to:
            return _error(21604)
        if not from_ and not service:
            return _error(21603)
        if not body and not media:
            return _error(21602)
        if refusal := self._number_refusal(to):
            return refusal
        sid = "SM" + secrets.token_hex(16)
        self.messages[sid] = Resource(sid, to, from_, recorded.value("StatusCallback"), service)
        now = _twilio_date()
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}"
        return JSONResponse({
            "sid": sid, "account_sid": self.account_sid, "messaging_service_sid": service,
            "from": from_, "to": to, "body": body,
            # Through a Messaging Service the sender is chosen later: accepted, 0 segments.
            "status": "accepted" if service else "queued",
            "num_segments": "0" if service else "1", "num_media": str(len(media)),
            "direction": "outbound-api", "api_version": API_VERSION, "price": None,
            "price_unit": "USD", "error_code": None, "error_message": None,
            "date_created": now, "date_sent": None, "date_updated": now,
            "uri": uri + ".json", "subresource_uris": {"media": uri + "/Media.json"},
        }, status_code=201)

    async def _calls(self, request: Request) -> Response:
        recorded = await self._record(request)
        if refusal := self._refusal(recorded, request.path_params["sid"]):
            return refusal
        to, from_, twiml = recorded.value("To"), recorded.value("From"), recorded.value("Twiml")
        if not to:
            return _error(21201)
        if not from_:
            return _error(21213)
        if not twiml and not recorded.value("Url"):
            return _error(21205)
        if twiml:
            try:
                if ET.fromstring(twiml).tag != "Response":
                    return _error(12100)
            except ET.ParseError:
                return _error(12100)
        if refusal := self._number_refusal(to):
            return refusal
        sid = "CA" + secrets.token_hex(16)
        self.calls[sid] = Resource(sid, to, from_, recorded.value("StatusCallback"),
                                   callback_events=recorded.values("StatusCallbackEvent"))
        now = _twilio_date()
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{sid}"
        return JSONResponse({
            "sid": sid, "account_sid": self.account_sid, "to": to, "to_formatted": to,
            "from": from_, "from_formatted": from_, "status": "queued",
            "direction": "outbound-api", "api_version": API_VERSION, "answered_by": None,
            "caller_name": None, "duration": None, "start_time": None, "end_time": None,
            "price": None, "price_unit": "USD", "parent_call_sid": None,
            "phone_number_sid": None, "forwarded_from": None, "group_sid": None,
            "queue_time": "0", "trunk_sid": None, "date_created": now, "date_updated": now,
            "uri": uri + ".json",
            "subresource_uris": {"notifications": uri + "/Notifications.json",
                                 "recordings": uri + "/Recordings.json"},
        }, status_code=201)

    def _number_refusal(self, to: str) -> Response | None:
        if not to.startswith("+") or not to[1:].isdigit():
            return _error(21211, to=to)
        if to in self.refused:
            return _error(self.refused[to], to=to)
        return None

    # -- status callbacks ------------------------------------------------------------------

    async def message_status(self, sid: str, status: str, error_code: int | None = None,
                             signature: str = "valid") -> httpx.Response:
        """Post one message status callback for ``sid``. ``signature``: "valid", "wrong" (signed
        with another token) or "missing"."""
        message = self.messages[sid]
        params = [("MessageSid", sid), ("SmsSid", sid), ("MessageStatus", status),
                  ("SmsStatus", status), ("AccountSid", self.account_sid),
                  ("To", message.to), ("ApiVersion", API_VERSION)]
        if message.from_:
            params.append(("From", message.from_))
        if message.messaging_service_sid:
            params.append(("MessagingServiceSid", message.messaging_service_sid))
        if status in ("failed", "undelivered"):
            params.append(("ErrorCode", str(error_code or 30008)))
        if status in ("delivered", "undelivered"):
            params.append(("RawDlrDoneDate", datetime.now(UTC).strftime("%y%m%d%H%M")))
        return await self._post_callback(message, params, signature)

    async def deliver(self, sid: str, final: str = "delivered", error_code: int | None = None,
                      signature: str = "valid") -> list[httpx.Response]:
        """A message's usual callbacks: ``sent``, then ``final`` (delivered, undelivered with
        ``error_code``, failed, read)."""
        return [await self.message_status(sid, "sent", signature=signature),
                await self.message_status(sid, final, error_code, signature)]

    async def call_status(self, sid: str, status: str, duration: int = 12,
                          signature: str = "valid") -> httpx.Response | None:
        """Post a call progress callback, if the call subscribed to its event (final statuses
        always are); None when Twilio would not have sent it."""
        call = self.calls[sid]
        event = _CALL_EVENT.get(status, "completed")
        if event != "completed" and event not in call.callback_events:
            return None
        params = [("CallSid", sid), ("CallStatus", status), ("AccountSid", self.account_sid),
                  ("From", call.from_ or ""), ("To", call.to), ("Direction", "outbound-api"),
                  ("ApiVersion", API_VERSION), ("CallbackSource", "call-progress-events"),
                  ("SequenceNumber", str(next(call.sequence))), ("Timestamp", _twilio_date())]
        if status == "completed":
            params.append(("CallDuration", str(duration)))
        return await self._post_callback(call, params, signature)

    async def _post_callback(self, resource: Resource, params: list[tuple[str, str]],
                             signature: str) -> httpx.Response:
        if not resource.status_callback:
            raise AssertionError(f"{resource.sid} was sent without a StatusCallback")
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
                   "User-Agent": "TwilioProxy/1.1"}
        if signature != "missing":
            token = self.auth_token if signature == "valid" else self.auth_token + "-wrong"
            headers["X-Twilio-Signature"] = sign(token, resource.status_callback, params)
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.post(resource.status_callback,
                                     content=urllib.parse.urlencode(params), headers=headers)
