"""``WhatsAppCloudChannel``: sending to Graph (message shapes, templates, the per-recipient
pair limit), the channel status, and fetching users' media."""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from typing import Any, ClassVar

import httpx
import orjson

from pushgate.channels.base import (
    ChannelEnv,
    ChannelStatus,
    register,
)
from pushgate.channels.media import MediaFetchError, fetch_media
from pushgate.channels.transport import Transport, open_transport
from pushgate.channels.whatsapp_cloud.callbacks import WebhookHandling
from pushgate.channels.whatsapp_cloud.config import DEFAULT_MAX_IN_FLIGHT, WhatsAppCloudConfig
from pushgate.channels.whatsapp_cloud.errors import (
    GraphError,
    Unsendable,
    describe,
    error_rule,
    graph_error,
)
from pushgate.core.channels import MEDIA_MAX_BYTES, ChannelSpec, MediaKind, media_kind_from_url
from pushgate.core.models import OutboundMessage, Outcome, SendResult

log = logging.getLogger(__name__)

# WhatsApp takes a caption on these media only; audio (and stickers) take none.
CAPTION_KINDS = frozenset({"image", "video", "document"})
MAX_CAPTION_CHARS = 1024
TEMPLATE_HEADER_MEDIA = frozenset({"image", "video", "document"})


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
class WhatsAppCloudChannel(WebhookHandling):
    kind = "whatsapp_cloud"
    config_model = WhatsAppCloudConfig
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
        config = self.stored_config()
        assert isinstance(config, WhatsAppCloudConfig)
        self.phone_number_id: str = config.phone_number_id
        self._access_token: str = config.access_token
        self._app_secret: bytes = config.app_secret.encode()
        self._verify_token: str = config.verify_token
        self.api_url = f"{config.graph_base_url}/{config.graph_version}"
        self.pair_interval: float = config.pair_interval_seconds
        self.timeout: float = config.timeout_seconds
        self.concurrency = config.max_in_flight
        self.pacer = PairPacer(self.pair_interval)
        self._client: httpx.AsyncClient | None = None
        self._transport: Transport | None = None

    # --- connection -----------------------------------------------------------------------------
    async def start(self) -> None:
        self._sender()

    async def stop(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
        if self._transport is not None:
            transport, self._transport = self._transport, None
            await transport.aclose()

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

    def _sender(self) -> Transport:
        """What sends go through: ``open_transport``'s lean keep-alive pool, whose CPU cost per
        request is a small fraction of httpx's (with httpx a worker's CPU, not the channels'
        rates, capped its sends), or httpx when the environment names a proxy, which only
        httpx honours; that case shares the client of the status and media calls."""
        if self._transport is None:
            self._transport = open_transport(
                self.api_url, headers={"Authorization": f"Bearer {self._access_token}"},
                timeout=self.timeout, connect_timeout=min(self.timeout, 5.0),
                max_connections=self.concurrency, httpx_client=self._http)
        return self._transport

    async def status(self) -> ChannelStatus:
        try:
            response = await self._http().get(
                f"/{self.phone_number_id}",
                params={"fields": "display_phone_number,verified_name,quality_rating"})
        except httpx.HTTPError as exc:
            return ChannelStatus(False, f"Graph API unreachable: {describe(exc)}",
                                 state="TIMEOUT")
        if response.status_code != 200:
            error = graph_error(response)
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
        except Unsendable as exc:
            return SendResult.failed(message.id, "unsendable", str(exc))
        wait = self.pacer.claim(message.number, time.monotonic())
        if wait > 0:
            return SendResult.defer(
                message.id, "pair-limit",
                f"waiting {wait:.1f}s: one message per {self.pair_interval:g}s to the same "
                "WhatsApp user", retry_after=wait)
        first = await self._post(payloads[0], message.number)
        if isinstance(first, GraphError) and first.local_code == "no-wamid":
            # Meta accepted it: sending again would double it, so it counts as sent.
            return SendResult.sent(message.id, error_code=first.error_code,
                                   error_message=first.message)
        if isinstance(first, GraphError):
            if not (first.code == 131056 or self._may_have_arrived(first)):
                self.pacer.give_back(message.number)
            return self._failure(message, first)
        if len(payloads) == 1:
            return SendResult.sent(message.id, first)
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
            if (rule.outcome in (Outcome.RETRY, Outcome.DEFER)
                    and not self._may_have_arrived(second)):
                if rule.outcome is Outcome.DEFER:
                    pause = self.pair_interval
                else:
                    pause = min(second.retry_after or rule.retry_after or 1.0,
                                self.text_retry_max_pause)
                await asyncio.sleep(pause)
                second = await self._post(payload, message.number)
        if isinstance(second, GraphError):
            log.warning("whatsapp_cloud channel %s: message %s: media sent as %s, its text was "
                        "not: %s", self.spec.id, message.id, media_id, second.message,
                        extra={"channel_id": self.spec.id, "message_id": message.id})
            return SendResult.sent(
                message.id, media_id, provider_refs=[(0, media_id)],
                error_code=second.error_code,
                error_message=f"media sent ({media_id}) but its text part was not: "
                              f"{second.message}")
        return SendResult.sent(message.id, media_id,
                               provider_refs=[(0, media_id), (1, second)])

    @staticmethod
    def _may_have_arrived(error: GraphError) -> bool:
        # A request that timed out may have been accepted by Meta before the answer was lost.
        return error.local_code in ("timeout", "no-wamid")

    def _failure(self, message: OutboundMessage, error: GraphError) -> SendResult:
        rule = error_rule(error.code, error.http_status)
        if rule.outcome is Outcome.DEFER:
            # Only this recipient waits; Meta counts the refused call against the pair, so the
            # whole interval starts again.
            self.pacer.hold(message.number, time.monotonic(), self.pair_interval)
            return SendResult.defer(message.id, error.error_code, error.message,
                                    retry_after=self.pair_interval or 1.0)
        if rule.outcome is Outcome.PAUSE_CHANNEL:
            return SendResult.pause(message.id, error.error_code, error.message)
        if rule.outcome is Outcome.FAILED:
            return SendResult.failed(message.id, error.error_code, error.message)
        return SendResult.retry(message.id, error.error_code, error.message,
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
            response = await sender.post(path, content=body, headers=headers,
                                         before_send=before_send)
        except httpx.TimeoutException as exc:
            return GraphError(None, f"Graph API timed out: {describe(exc)}", local_code="timeout")
        except httpx.HTTPError as exc:
            return GraphError(None, f"Graph API unreachable: {describe(exc)}",
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
        return graph_error(response)

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
                raise Unsendable("the message has neither text nor media")
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
            raise Unsendable("extra['template'] must be an object")
        # Older plans name the template ``id`` (Picky's template_id).
        name = template.get("name") or template.get("id")
        language = template.get("language")
        if not isinstance(name, str) or not name:
            raise Unsendable("template without a name")
        if not isinstance(language, str) or not language:
            raise Unsendable(f"template {name!r} without a language")
        components: list[dict[str, Any]] = []
        header = template.get("header")
        if message.media_url:
            kind = message.media_kind or media_kind_from_url(message.media_url).value
            if kind not in TEMPLATE_HEADER_MEDIA:
                raise Unsendable(f"a template header cannot be {kind} media")
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

    async def fetch_inbound_media(self, ref: str) -> tuple[str, bytes]:
        """Graph's two steps: the media object (its short-lived URL, MIME type), then the
        file, with the channel's token, through the size-capped, address-checked download."""
        try:
            response = await self._http().get(f"/{urllib.parse.quote(ref, safe='')}")
        except httpx.HTTPError as exc:
            raise MediaFetchError(f"Graph API unreachable: {describe(exc)}",
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



def filename_from_url(url: str) -> str:
    """The last path segment of a media URL, decoded: what the recipient sees as file name."""
    path = urllib.parse.urlsplit(url).path
    name = urllib.parse.unquote(path.rstrip("/").rsplit("/", 1)[-1])
    return name or "document"
