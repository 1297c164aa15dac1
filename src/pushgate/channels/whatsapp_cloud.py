"""The WhatsApp Cloud API connector (Meta Graph API): official WhatsApp numbers, Picky
applications 8, 101 and 121.

One channel is one business phone number. Sends go to ``POST /{version}/{phone_number_id}/
messages`` over reused keep-alive connections (``channels/http1.py``; httpx when a proxy is
configured; status and media calls always use httpx); the returned ``wamid`` is the provider id
that every later status webhook names. What is built here and nowhere else:

- the message shape: text, media by link (a caption only where WhatsApp takes one, a
  ``filename`` for documents, the text of an audio as a second message), or a template when
  ``message.extra["template"]`` is set;
- the error table (``ERROR_RULES``): Graph error ``code`` → retry, wait, fail or pause the
  channel. Meta asks to branch on the code, never on the HTTP status or the text;
- the per-recipient pair limit (about one message per 6 s to the same user, error 131056),
  which the channel-wide rate limiter cannot express;
- the webhook: the GET subscription handshake and signed POSTs (``X-Hub-Signature-256``)
  carrying message statuses and the users' own messages.

Config keys (``pushgate channel add --config``): ``phone_number_id``, ``access_token``,
``app_secret`` (signs webhooks), ``verify_token`` (subscription handshake), ``graph_base_url``
(default the real Graph host), ``graph_version`` (default ``v21.0``), ``pair_interval_seconds``
(default 6; 0 turns the pair limit off), ``timeout_seconds`` (default 20) and ``max_in_flight``
(sends awaiting Graph's answer at once, default 64: enough for 80/s at Graph's usual 100–500 ms
per call; an upgraded number at 1,000/s needs ~200–500).
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import logging
import re
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
import orjson

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
from pushgate.channels.http1 import Http1Pool, Http1Response, proxy_configured
from pushgate.channels.media import MediaFetchError, fetch_media, sign_inbound_media_url
from pushgate.core.channels import MEDIA_MAX_BYTES, ChannelSpec, MediaKind, media_kind_from_url
from pushgate.core.lifecycle import State
from pushgate.core.models import InboundMessage, OutboundMessage, SendResult, StatusUpdate

log = logging.getLogger(__name__)

GRAPH_BASE_URL = "https://graph.facebook.com"
GRAPH_VERSION = "v21.0"
DEFAULT_PAIR_INTERVAL = 6.0
# Meta keeps a user's media for 30 days; the gateway's link to it lives as long.
INBOUND_MEDIA_SECONDS = 30 * 86_400
DEFAULT_TIMEOUT = 20.0

# WhatsApp takes a caption on these media only; audio (and stickers) take none.
CAPTION_KINDS = frozenset({"image", "video", "document"})
MAX_CAPTION_CHARS = 1024
TEMPLATE_HEADER_MEDIA = frozenset({"image", "video", "document"})


class Action(enum.Enum):
    RETRY = "retry"            # nothing went out; try again after a back-off
    WAIT = "wait"              # not an attempt: wait (defer), e.g. the pair limit
    FAIL = "fail"              # permanent for this message: fail and refund
    PAUSE = "pause"            # the channel itself is refused: pause it, keep the message


@dataclass(frozen=True, slots=True)
class ErrorRule:
    action: Action
    # Seconds to wait before the next try, when the provider's advice is known.
    retry_after: float | None = None


# The one table turning a Graph error ``code`` into an outcome (channel-wire-formats.md §1.3).
ERROR_RULES: dict[int, ErrorRule] = {
    # Throughput and rate limits: nothing was sent, slow down and retry.
    130429: ErrorRule(Action.RETRY, 1.0),      # number's messages/s exceeded
    4: ErrorRule(Action.RETRY, 60.0),          # app-level call limit
    80007: ErrorRule(Action.RETRY, 60.0),      # WABA rate limit
    131048: ErrorRule(Action.RETRY, 300.0),    # spam rate limit (quality): a long back-off
    # Pair limit: only this recipient must wait (the pair interval, from the config).
    131056: ErrorRule(Action.WAIT),
    # Meta's side failed.
    1: ErrorRule(Action.RETRY),                # API unknown
    2: ErrorRule(Action.RETRY),                # API service
    131000: ErrorRule(Action.RETRY),           # something went wrong
    131016: ErrorRule(Action.RETRY),           # service unavailable
    # Permanent for this message: a retry would get the same answer.
    100: ErrorRule(Action.FAIL),               # invalid parameter (e.g. `to`)
    131008: ErrorRule(Action.FAIL),            # required parameter missing
    131009: ErrorRule(Action.FAIL),            # parameter value invalid
    131026: ErrorRule(Action.FAIL),            # undeliverable (not on WhatsApp, old client)
    131030: ErrorRule(Action.FAIL),            # recipient not in the test number's allowed list
    131047: ErrorRule(Action.FAIL),            # 24 h window closed: only a template may go
    131049: ErrorRule(Action.FAIL),            # Meta chose not to deliver (per-user cap)
    131051: ErrorRule(Action.FAIL),            # unsupported message type
    131052: ErrorRule(Action.FAIL),            # media download error
    131053: ErrorRule(Action.FAIL),            # media upload error
    132000: ErrorRule(Action.FAIL),            # template parameter count mismatch
    132001: ErrorRule(Action.FAIL),            # template does not exist
    132005: ErrorRule(Action.FAIL),            # template hydrated text too long
    132007: ErrorRule(Action.FAIL),            # template format character policy violated
    132012: ErrorRule(Action.FAIL),            # template parameter format mismatch
    132015: ErrorRule(Action.FAIL),            # template paused
    132016: ErrorRule(Action.FAIL),            # template disabled
    # The number or the credentials are refused: every message would fail the same way.
    0: ErrorRule(Action.PAUSE),                # AuthException
    190: ErrorRule(Action.PAUSE),              # access token expired or invalid
    10: ErrorRule(Action.PAUSE),               # permission denied
    368: ErrorRule(Action.PAUSE),              # temporarily blocked for policy violations
    131031: ErrorRule(Action.PAUSE),           # account locked
    133010: ErrorRule(Action.PAUSE),           # phone number not registered
}
# Graph's permission errors span a range of codes.
PERMISSION_CODES = range(200, 300)
# A code missing from the table: nothing was sent, so a retry costs nothing and the retry limit
# ends it; HTTP 401 means the token, whatever the code.
UNKNOWN_ERROR = ErrorRule(Action.RETRY)


def error_rule(code: int | None, http_status: int | None) -> ErrorRule:
    if code is not None and code in ERROR_RULES:
        return ERROR_RULES[code]
    if code is not None and code in PERMISSION_CODES:
        return ErrorRule(Action.PAUSE)
    if http_status == 401:
        return ErrorRule(Action.PAUSE)
    return UNKNOWN_ERROR


@dataclass(frozen=True, slots=True)
class GraphError:
    """A send that Meta refused or that never got an answer."""

    code: int | None
    message: str
    http_status: int | None = None
    # A provider-independent code when Meta gave none ("timeout", "network", "http-502").
    local_code: str | None = None
    retry_after: float | None = None

    @property
    def error_code(self) -> str:
        return str(self.code) if self.code is not None else (self.local_code or "unknown")


class _Unsendable(Exception):
    """A message this channel cannot turn into a Graph request (fails it permanently)."""


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
_VERSION_RE = re.compile(r"^v\d+\.\d+$")
_CONFIG_KEYS = frozenset({"phone_number_id", "access_token", "app_secret", "verify_token",
                          "graph_base_url", "graph_version", "pair_interval_seconds",
                          "timeout_seconds", "max_in_flight"})
DEFAULT_MAX_IN_FLIGHT = 64
# Each send in flight holds a connection (a file descriptor).
MAX_IN_FLIGHT = 1000


class PairPacer:
    """At most one message per ``interval`` seconds to the same recipient from this number.

    Kept in memory: a paced channel has exactly one sender (the lease holder), so nobody else
    sends for this number at the same time. After a restart or a lease move the new holder starts
    with an empty memory and may send one message sooner than Meta likes; Meta tolerates short
    bursts and answers 131056 beyond them, which waits the same way.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._free_at: dict[str, float] = {}
        # Past bookings are dropped when the map doubles, so pruning stays O(1) per claim.
        self._prune_above = 10_000

    def claim(self, number: str, now: float) -> float:
        """Seconds ``number`` must still wait, or 0 after booking the slot for this send."""
        if self.interval <= 0:
            return 0.0
        free_at = self._free_at.get(number, 0.0)
        if free_at > now:
            return free_at - now
        self._free_at[number] = now + self.interval
        if len(self._free_at) > self._prune_above:
            self._free_at = {n: t for n, t in self._free_at.items() if t > now}
            self._prune_above = max(10_000, 2 * len(self._free_at))
        return 0.0

    def give_back(self, number: str) -> None:
        """Nothing reached the recipient: the next message need not wait for this one."""
        self._free_at.pop(number, None)

    def hold(self, number: str, now: float, seconds: float) -> None:
        self._free_at[number] = max(self._free_at.get(number, 0.0), now + seconds)


@register
class WhatsAppCloudChannel(Channel):
    kind = "whatsapp_cloud"
    # Meta's default is 80 messages/s per number; it upgrades eligible numbers to 1,000.
    default_rate_per_second: ClassVar[float] = 80.0
    max_rate_per_second: ClassVar[float] = 1000.0
    # Enough sends in flight to reach 80/s at Graph's usual 100-500 ms per call; the channel's
    # `max_in_flight` sets it per number.
    concurrency = DEFAULT_MAX_IN_FLIGHT
    # Each Graph send takes the channel's rate permit as it goes out (a media and its text
    # are two of Meta's messages), with its connection ready (``_post``).
    paces_requests = True
    # Longest wait before the one retry of a refused text part (the pair limit waits its
    # interval): the send holds a slot meanwhile.
    text_retry_max_pause: float = 1.0

    def __init__(self, spec: ChannelSpec, env: ChannelEnv | None = None) -> None:
        super().__init__(spec, env)
        config = self.validate_config(dict(spec.config))
        self.phone_number_id: str = config["phone_number_id"]
        self._access_token: str = config["access_token"]
        self._app_secret: bytes = config["app_secret"].encode()
        self._verify_token: str = config["verify_token"]
        self.api_url = f"{config['graph_base_url']}/{config['graph_version']}"
        self.pair_interval: float = config["pair_interval_seconds"]
        self.timeout: float = config["timeout_seconds"]
        self.concurrency = config["max_in_flight"]
        self.pacer = PairPacer(self.pair_interval)
        self._client: httpx.AsyncClient | None = None
        self._pool: Http1Pool | None = None

    # --- config -------------------------------------------------------------------------------
    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(config) - _CONFIG_KEYS)
        if unknown:
            raise ChannelConfigError(f"unknown config key {unknown[0]!r}")
        out = dict(config)
        if isinstance(out.get("phone_number_id"), int):   # a JSON number on the command line
            out["phone_number_id"] = str(out["phone_number_id"])
        for key in ("phone_number_id", "access_token", "app_secret", "verify_token"):
            value = out.get(key)
            if not isinstance(value, str) or not value.strip():
                raise ChannelConfigError(f"{key} is required (a non-empty string)")
            out[key] = value.strip()
        if not out["phone_number_id"].isdigit():
            raise ChannelConfigError("phone_number_id must be the numeric Graph id of the number")
        base_url = out.get("graph_base_url", GRAPH_BASE_URL)
        parsed = urllib.parse.urlsplit(base_url) if isinstance(base_url, str) else None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ChannelConfigError("graph_base_url must be an http(s) URL")
        out["graph_base_url"] = base_url.rstrip("/")
        version = out.get("graph_version", GRAPH_VERSION)
        if not isinstance(version, str) or not _VERSION_RE.match(version):
            raise ChannelConfigError("graph_version must look like 'v21.0'")
        out["graph_version"] = version
        out["pair_interval_seconds"] = _number(out, "pair_interval_seconds",
                                               DEFAULT_PAIR_INTERVAL, minimum=0.0)
        out["timeout_seconds"] = _number(out, "timeout_seconds", DEFAULT_TIMEOUT, minimum=0.001)
        in_flight = out.get("max_in_flight", DEFAULT_MAX_IN_FLIGHT)
        if isinstance(in_flight, bool) or not isinstance(in_flight, int) \
                or not 1 <= in_flight <= MAX_IN_FLIGHT:
            raise ChannelConfigError(f"max_in_flight must be a whole number from 1 to "
                                     f"{MAX_IN_FLIGHT}")
        out["max_in_flight"] = in_flight
        return out

    # --- connection -----------------------------------------------------------------------------
    async def start(self) -> None:
        self._sender()

    async def stop(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.aclose()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.api_url,
                headers={"Authorization": f"Bearer {self._access_token}"},
                timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 5.0)),
                limits=httpx.Limits(max_connections=self.concurrency,
                                    max_keepalive_connections=self.concurrency),
            )
        return self._client

    def _sender(self) -> Http1Pool | httpx.AsyncClient:
        """What sends go through: the lean keep-alive pool of ``channels/http1.py`` (an httpx
        request costs 15–35 times its CPU: through httpx a worker sent ~160 messages/s), or
        httpx when the environment names a proxy, which only httpx honours."""
        if self._pool is None:
            if proxy_configured():
                return self._http()
            self._pool = Http1Pool(
                self.api_url, headers={"Authorization": f"Bearer {self._access_token}"},
                timeout=self.timeout, connect_timeout=min(self.timeout, 5.0),
                max_connections=self.concurrency)
        return self._pool

    async def status(self) -> ChannelStatus:
        try:
            response = await self._http().get(
                f"/{self.phone_number_id}",
                params={"fields": "display_phone_number,verified_name,quality_rating"})
        except httpx.HTTPError as exc:
            return ChannelStatus(False, f"Graph API unreachable: {_describe(exc)}",
                                 state="TIMEOUT")
        if response.status_code != 200:
            error = _graph_error(response)
            return ChannelStatus(False, error.message, state="OFFLINE",
                                 extra={"error_code": error.error_code})
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return ChannelStatus(False, "Graph API answered a body that is not a JSON object",
                                 state="OFFLINE")
        display = str(data.get("display_phone_number") or "")
        return ChannelStatus(
            True, f"WhatsApp number {display or self.phone_number_id}", state="CONNECTED",
            connected_number="".join(ch for ch in display if ch.isdigit()) or None,
            extra={k: data[k] for k in ("verified_name", "quality_rating") if k in data})

    # --- sending --------------------------------------------------------------------------------
    async def send(self, message: OutboundMessage) -> SendResult:
        try:
            payloads = self.payloads(message)
        except _Unsendable as exc:
            return SendResult(message.id, ok=False, retryable=False, error_code="unsendable",
                              error_message=str(exc))
        wait = self.pacer.claim(message.number, time.monotonic())
        if wait > 0:
            return SendResult(
                message.id, ok=False, retryable=True, defer=True, retry_after=wait,
                error_code="pair-limit",
                error_message=f"waiting {wait:.1f}s: one message per {self.pair_interval:g}s "
                              "to the same WhatsApp user")
        first = await self._post(payloads[0], message.number)
        if isinstance(first, GraphError) and first.local_code == "no-wamid":
            # Meta accepted it: sending again would double it, so it counts as sent.
            return SendResult(message.id, ok=True, error_code=first.error_code,
                              error_message=first.message)
        if isinstance(first, GraphError):
            if not (first.code == 131056 or self._may_have_arrived(first)):
                self.pacer.give_back(message.number)
            return self._failure(message, first)
        if len(payloads) == 1:
            return SendResult(message.id, ok=True, provider_id=first)
        return await self._send_text_part(message, first, payloads[1])

    async def _send_text_part(
        self, message: OutboundMessage, media_id: str, payload: dict[str, Any]
    ) -> SendResult:
        """The text that goes after an audio (or a media whose caption does not fit).

        The media has already reached Meta, so nothing may make the dispatcher send this
        message again: a retry would double the media, and the store has no way to resend one
        part only. A transient refusal is retried once, here; if the text still does not go,
        the message is reported sent with the media's id alone (its delivery then follows the
        media) and the error says honestly that the text part was lost.
        """
        second = await self._post(payload, message.number)
        if isinstance(second, GraphError):
            rule = error_rule(second.code, second.http_status)
            if rule.action in (Action.RETRY, Action.WAIT) and not self._may_have_arrived(second):
                if rule.action is Action.WAIT:
                    pause = self.pair_interval
                else:
                    pause = min(second.retry_after or rule.retry_after or 1.0,
                                self.text_retry_max_pause)
                await asyncio.sleep(pause)
                second = await self._post(payload, message.number)
        if isinstance(second, GraphError):
            log.warning("whatsapp_cloud channel %s: message %s: media sent as %s, its text was "
                        "not: %s", self.spec.id, message.id, media_id, second.message)
            return SendResult(
                message.id, ok=True, provider_id=media_id, provider_refs=[(0, media_id)],
                error_code=second.error_code,
                error_message=f"media sent ({media_id}) but its text part was not: "
                              f"{second.message}")
        return SendResult(message.id, ok=True, provider_id=media_id,
                          provider_refs=[(0, media_id), (1, second)])

    @staticmethod
    def _may_have_arrived(error: GraphError) -> bool:
        # A request that timed out may have been accepted by Meta before the answer was lost.
        return error.local_code in ("timeout", "no-wamid")

    def _failure(self, message: OutboundMessage, error: GraphError) -> SendResult:
        rule = error_rule(error.code, error.http_status)
        if rule.action is Action.WAIT:
            # Only this recipient waits; Meta counts the refused call against the pair, so the
            # whole interval starts again.
            self.pacer.hold(message.number, time.monotonic(), self.pair_interval)
            return SendResult(message.id, ok=False, retryable=True, defer=True,
                              retry_after=self.pair_interval or 1.0,
                              error_code=error.error_code, error_message=error.message)
        if rule.action is Action.PAUSE:
            return SendResult(message.id, ok=False, retryable=True, defer=True,
                              pause_channel=True, error_code=error.error_code,
                              error_message=error.message)
        return SendResult(message.id, ok=False, retryable=rule.action is Action.RETRY,
                          error_code=error.error_code, error_message=error.message,
                          retry_after=error.retry_after or rule.retry_after)

    async def _post(self, payload: dict[str, Any], recipient: str) -> str | GraphError:
        """One Graph send: the wamid, or what went wrong. It takes the channel's rate permit
        as it goes out, and the recipient's pair interval runs from then: a send that waited
        for its permit after ``send`` booked the pair slot must not shorten the interval."""

        def going_out() -> None:
            if self.pair_interval > 0:
                self.pacer.hold(recipient, time.monotonic(), self.pair_interval)

        async def before_send() -> None:
            await self.request_permit()
            going_out()

        sender = self._sender()
        path = f"/{self.phone_number_id}/messages"
        body = orjson.dumps(payload)
        headers = {"Content-Type": "application/json"}
        try:
            if isinstance(sender, Http1Pool):
                response: Http1Response | httpx.Response = await sender.post(
                    path, content=body, headers=headers, before_send=before_send)
            else:
                response = await sender.post(path, content=body, headers=headers,
                                             extensions=self.permit_extensions(going_out))
        except httpx.TimeoutException as exc:
            return GraphError(None, f"Graph API timed out: {_describe(exc)}", local_code="timeout")
        except httpx.HTTPError as exc:
            return GraphError(None, f"Graph API unreachable: {_describe(exc)}",
                              local_code="network")
        if response.status_code == 200:
            try:
                wamid = response.json()["messages"][0]["id"]
            except (ValueError, KeyError, IndexError, TypeError):
                wamid = None
            if isinstance(wamid, str) and wamid:
                return wamid
            # Accepted but unreadable: the message may be out, so do not send it again.
            return GraphError(None, "Graph API answered 200 without a message id",
                              http_status=200, local_code="no-wamid")
        return _graph_error(response)

    # --- request bodies ---------------------------------------------------------------------------
    def payloads(self, message: OutboundMessage) -> list[dict[str, Any]]:
        """The Graph request bodies for ``message``, in sending order (one, or a media then its
        text)."""
        base = {"messaging_product": "whatsapp", "recipient_type": "individual",
                "to": message.number}
        template = (message.extra or {}).get("template")
        if template is not None:
            return [{**base, "type": "template", "template": self._template(message, template)}]
        text = message.text or ""
        if not message.media_url:
            if not text.strip():
                raise _Unsendable("the message has neither text nor media")
            return [{**base, "type": "text", "text": {"preview_url": False, "body": text}}]
        kind = message.media_kind or media_kind_from_url(message.media_url).value
        media: dict[str, Any] = {"link": message.media_url}
        # Text beside a media goes as its own message when WhatsApp takes no caption there,
        # when the accept path charged it as a second part, or when it is too long a caption.
        separate = bool(text) and (kind not in CAPTION_KINDS or message.parts >= 2
                                   or len(text) > MAX_CAPTION_CHARS)
        if text and not separate:
            media["caption"] = text
        if kind == "document":
            media["filename"] = filename_from_url(message.media_url)
        sends = [{**base, "type": kind, kind: media}]
        if separate:
            sends.append({**base, "type": "text", "text": {"preview_url": False, "body": text}})
        return sends

    def _template(self, message: OutboundMessage, template: Any) -> dict[str, Any]:
        if not isinstance(template, dict):
            raise _Unsendable("extra['template'] must be an object")
        # Older plans name the template ``id`` (Picky's template_id).
        name = template.get("name") or template.get("id")
        language = template.get("language")
        if not isinstance(name, str) or not name:
            raise _Unsendable("template without a name")
        if not isinstance(language, str) or not language:
            raise _Unsendable(f"template {name!r} without a language")
        components: list[dict[str, Any]] = []
        header = template.get("header")
        if message.media_url:
            kind = message.media_kind or media_kind_from_url(message.media_url).value
            if kind not in TEMPLATE_HEADER_MEDIA:
                raise _Unsendable(f"a template header cannot be {kind} media")
            media: dict[str, Any] = {"link": message.media_url}
            if kind == "document":
                # Picky's template_header names the PDF; image/video headers have no text.
                media["filename"] = header or filename_from_url(message.media_url)
            components.append({"type": "header",
                               "parameters": [{"type": kind, kind: media}]})
        elif header:
            components.append({"type": "header",
                               "parameters": [{"type": "text", "text": str(header)}]})
        values = template.get("values") or []
        if values:
            components.append({"type": "body", "parameters": [
                {"type": "text", "text": str(value)} for value in values]})
        body: dict[str, Any] = {"name": name,
                                "language": {"policy": "deterministic", "code": language}}
        if components:
            body["components"] = components
        return body

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

    async def fetch_inbound_media(self, ref: str) -> tuple[str, bytes]:
        """Graph's two steps: the media object (its short-lived URL, MIME type), then the
        file, with the channel's token, through the size-capped, address-checked download."""
        try:
            response = await self._http().get(f"/{urllib.parse.quote(ref, safe='')}")
        except httpx.HTTPError as exc:
            raise MediaFetchError(f"Graph API unreachable: {_describe(exc)}",
                                  retryable=True) from exc
        if response.status_code in (400, 404):
            raise LookupError(f"no media {ref!r} at Meta (expired after 30 days, or unknown)")
        if response.status_code != 200:
            raise MediaFetchError(f"Graph answered HTTP {response.status_code} for media {ref}",
                                  retryable=response.status_code >= 500)
        body = response.json()
        url = body.get("url") if isinstance(body, dict) else None
        if not isinstance(url, str):
            raise MediaFetchError(f"Graph's media object {ref} has no url", retryable=False)
        fetched = await fetch_media(
            url, max_bytes=MEDIA_MAX_BYTES[MediaKind.DOCUMENT], timeout=self.timeout,
            allow_private=self.env.allow_private_media, client=self._http())
        return str(body.get("mime_type") or fetched.content_type), fetched.data

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


# --- helpers ------------------------------------------------------------------------------------

def filename_from_url(url: str) -> str:
    """The last path segment of a media URL, decoded: what the recipient sees as file name."""
    path = urllib.parse.urlsplit(url).path
    name = urllib.parse.unquote(path.rstrip("/").rsplit("/", 1)[-1])
    return name or "document"


def _number(config: dict[str, Any], key: str, default: float, minimum: float) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ChannelConfigError(f"{key} must be a number >= {minimum:g}")
    return float(value)


def _graph_error(response: httpx.Response | Http1Response) -> GraphError:
    retry_after = None
    header = response.headers.get("retry-after")
    if header and header.replace(".", "", 1).isdigit():
        retry_after = float(header)
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if not isinstance(error, dict):
        return GraphError(None, f"Graph API answered HTTP {response.status_code}",
                          http_status=response.status_code,
                          local_code=f"http-{response.status_code}", retry_after=retry_after)
    code = error.get("code")
    text = str(error.get("message") or f"HTTP {response.status_code}")
    data = error.get("error_data")
    details = data.get("details") if isinstance(data, dict) else None
    if details and details not in text:
        text = f"{text}: {details}"
    return GraphError(code if isinstance(code, int) else None, text,
                      http_status=response.status_code,
                      local_code=f"http-{response.status_code}", retry_after=retry_after)


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


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
