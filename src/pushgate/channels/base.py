"""The ``Channel`` interface every connector implements, and the registry of kinds.

A channel turns one ``OutboundMessage`` into a provider call and says what happened as a
``SendResult`` of one ``Outcome``: sent with a provider id, or an error to retry (rate limits,
timeouts, 5xx), a permanent failure (invalid number, opted out), a wait that does not count as
an attempt (``DEFER``) or refused credentials (``PAUSE_CHANNEL``). Provider callbacks reach
``handle_callback`` through the gateway's per-channel URL
(``{public_url}/channels/{id}/callback[/sub-path]``) and come back as a ``CallbackResult``: the
HTTP answer, status updates and inbound messages. Channels never touch the store: the dispatcher
and the callback route record what they return.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pushgate.core.channels import ChannelSpec
from pushgate.core.checks import NumberCheck, by_validity
from pushgate.core.models import (
    InboundMessage,
    InboundPart,
    OutboundMessage,
    SendResult,
    StatusUpdate,
)

if TYPE_CHECKING:
    from pushgate.channels.config import ChannelConfig


@dataclass(slots=True)
class ChannelStatus:
    """What a connector knows about its link to the provider (``device-status``)."""

    connected: bool
    detail: str = ""
    # Picky's device states: CONNECTED, TIMEOUT (session starting / unreachable), UNPAIRED
    # (logged out, needs a QR scan), OFFLINE.
    state: str = "CONNECTED"
    connected_number: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChannelEnv:
    """What connectors need from the gateway around them."""

    # Base URL under which providers reach this gateway (callbacks, signed media URLs).
    public_url: str = "http://127.0.0.1:8000"
    # Key for signing media URLs (``pushgate.channels.media``).
    secret_key: str = "pushgate-dev-key"
    # Whether media URLs may point at private, loopback or link-local addresses (tests).
    allow_private_media: bool = False

    def callback_url(self, channel_id: int, sub_path: str = "") -> str:
        tail = f"/{sub_path.lstrip('/')}" if sub_path else ""
        return f"{self.public_url.rstrip('/')}/channels/{channel_id}/callback{tail}"


@dataclass(slots=True)
class CallbackResult:
    """What the callback route answers and records for one provider callback."""

    status_code: int = 200
    body: bytes = b""
    content_type: str = "text/plain"
    updates: list[StatusUpdate] = field(default_factory=list)
    inbound: list[InboundMessage] = field(default_factory=list)


class CallbackRejected(Exception):
    """A callback that fails its signature or shape check: answered with ``status_code``,
    nothing recorded."""

    def __init__(self, status_code: int, reason: str) -> None:
        super().__init__(reason)
        self.status_code = status_code
        self.reason = reason


class ChannelConfigError(ValueError):
    """A channel's ``config`` is missing a key or holds a bad value."""


@dataclass(slots=True)
class CallbackRequest:
    """A provider's HTTP callback, as received (signature checks need the raw body)."""

    method: str
    # The full URL as the provider called it (Twilio signs it).
    url: str
    # Header names lower-cased.
    headers: dict[str, str]
    query: dict[str, str]
    body: bytes
    # What follows ``/callback`` in the path ("" or e.g. "voice").
    sub_path: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class RequestLimiter(Protocol):
    """The channel's rate limiter (``pushgate.dispatch.pacing.Pacer``) as connectors see it."""

    async def permit(self, n: int = 1) -> None: ...


class ChannelSink(Protocol):
    """Where a connector reports what arrives on its own connection rather than through the
    callback route (SMPP receipts and inbound SMS on a bind). Each call returns once the
    records are durable, so the connector may acknowledge them to the provider afterwards."""

    async def updates(self, updates: list[StatusUpdate]) -> None: ...

    async def inbound(self, messages: list[InboundMessage]) -> None: ...

    async def inbound_parts(self, parts: list[InboundPart]) -> list[InboundPart]:
        """Store parts of users' multi-part messages (a part stored already changes nothing);
        returns every part stored so far of the messages they belong to."""
        ...

    async def due_inbound_parts(self, channel_id: int, before: float,
                                limit: int) -> list[InboundPart]:
        """Every part of up to ``limit`` messages whose first part arrived before ``before``."""
        ...

    async def drop_inbound_parts(self, parts: list[InboundPart]) -> None:
        """Forget parts whose message was forwarded."""
        ...


class Channel:
    """Base class of connectors. Subclasses set ``kind`` and implement ``send``."""

    kind: ClassVar[str] = ""
    # The kind's config model (``channels/config.py``): its keys, types, defaults and rules.
    config_model: ClassVar[type[ChannelConfig]]
    # How many sends of this channel may be in flight at once (HTTP channels: >1).
    concurrency: int = 1
    # Whether several workers may send for an unpaced channel at once (claims never overlap).
    # Connectors that hold a session (SMPP binds, phones) keep one sender: the lease holder.
    shareable: ClassVar[bool] = False
    # Seconds after submission at which the dispatcher asks ``simulate_delivery`` (sandbox).
    simulated_delivery_delay: float | None = None
    # Pacing a new channel of this kind gets unless the operator says otherwise (``channel
    # add``): e.g. WhatsApp Cloud's 80 messages/s per number, the bridges' 15–45 s pauses.
    default_rate_per_second: ClassVar[float] = 0.0
    max_rate_per_second: ClassVar[float | None] = None
    default_delay_ms: ClassVar[int] = 0
    default_jitter_ms: ClassVar[int] = 0
    # Pull channels (Android phones) are not sent by the dispatcher: devices claim their
    # messages through the device API.
    pull: ClassVar[bool] = False
    # Set by the dispatcher before ``start()``.
    sink: ChannelSink | None = None
    # The config key of the shared secret that authenticates the provider's callbacks, for
    # connectors whose provider can be given one (WAHA's HMAC key, Evolution's webhook token):
    # ``channel add`` generates it when the operator gives none (``with_callback_secret``).
    callback_secret_key: ClassVar[str] = ""
    # Whether the connector takes the channel's rate permits itself, one per provider request
    # at the moment it goes out (``request_permit`` / ``permit_extensions``), rather than the
    # dispatcher one per message before the send starts: a message of several requests (a
    # media then its text) pays for each, and a connection still being opened does not make
    # the requests behind it reach the provider bunched together.
    paces_requests: ClassVar[bool] = False
    # Set by the dispatcher before ``start()`` on a rate-paced channel that ``paces_requests``.
    limiter: RequestLimiter | None = None

    def __init__(self, spec: ChannelSpec, env: ChannelEnv | None = None) -> None:
        self.spec = spec
        self.env = env or ChannelEnv()

    @property
    def in_flight_limit(self) -> int:
        """Sends a rate-paced channel may have unanswered at once (the dispatcher starts one
        per permit and waits for none): ``concurrency`` unless the connector knows better."""
        return max(1, self.concurrency)

    async def request_permit(self) -> None:
        """Wait until one more request may reach the provider (call it with the connection in
        hand, right before writing the request)."""
        if self.limiter is not None:
            await self.limiter.permit()

    def permit_extensions(self, going_out: Callable[[], None] | None = None
                          ) -> dict[str, Any]:
        """httpx request ``extensions`` that take the permit when the request's headers are
        about to be written, after any wait for a pooled connection or a new one's connect
        and TLS handshake (httpcore's ``trace`` hook, awaited on its way); ``going_out`` is
        called right after the permit."""
        if self.limiter is None and going_out is None:
            return {}
        limiter = self.limiter

        async def trace(event: str, info: dict[str, Any]) -> None:
            if event.endswith("send_request_headers.started"):
                if limiter is not None:
                    await limiter.permit()
                if going_out is not None:
                    going_out()

        return {"trace": trace}

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Check a new ``config`` (``channel add``) against ``config_model``, returning it
        normalised as it is stored; raise ``ChannelConfigError`` saying which key is wrong."""
        from pushgate.channels.config import parse_model, stored_form

        if not hasattr(cls, "config_model"):   # a kind outside pushgate (a test's) with no model
            return config
        return stored_form(parse_model(cls.config_model, config, kind=cls.kind), config)

    def stored_config(self) -> ChannelConfig:
        """This channel's stored config through its model (unknown keys ignored, logged)."""
        from pushgate.channels.config import parse_model

        return parse_model(self.config_model, dict(self.spec.config), kind=self.kind,
                           stored=True)

    @classmethod
    def with_callback_secret(cls, config: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """``config`` with a new random callback secret when this connector takes one, none
        is given and the operator did not open callbacks on purpose (``insecure_callbacks``);
        and the secret made (None when nothing was added)."""
        key = cls.callback_secret_key
        if not key or config.get(key) or config.get("insecure_callbacks"):
            return config, None
        secret = secrets.token_urlsafe(32)
        return {**config, key: secret}, secret

    @classmethod
    def callback_setup(cls, config: dict[str, Any], callback_url: str) -> list[str]:
        """What the operator sets on the provider's side so that its callbacks reach
        ``callback_url`` and pass the connector's check (lines for ``channel add``)."""
        return []

    async def start(self) -> None:
        """Open connections (called when a worker takes the channel)."""

    async def stop(self) -> None:
        """Close connections (called when the worker lets the channel go)."""

    async def send(self, message: OutboundMessage) -> SendResult:
        raise NotImplementedError

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """Send several messages; connectors with a bulk endpoint override this. The default
        sends ``concurrency`` at a time. Rate limiting is not this one's job: the dispatcher's,
        or ``limiter``'s permits per request (``paces_requests``)."""
        if self.concurrency <= 1 or len(messages) == 1:
            # One message (the paced dispatcher's case) needs no semaphore and no gather.
            return [await self._safe_send(m) for m in messages]
        semaphore = asyncio.Semaphore(self.concurrency)

        async def one(message: OutboundMessage) -> SendResult:
            async with semaphore:
                return await self._safe_send(message)

        return list(await asyncio.gather(*(one(m) for m in messages)))

    async def send_each(self, messages: Sequence[OutboundMessage],
                        report: Callable[[SendResult], None]) -> None:
        """Send like ``send_batch``, handing each outcome to ``report`` as soon as it is known,
        so the dispatcher records the first answers while the rest of the batch is still out
        (it groups the writes of outcomes that come close together). The default reports
        them all when ``send_batch`` returns; connectors whose sends of one batch finish at
        different times (SMPP windows) override it."""
        for result in await self.send_batch(messages):
            report(result)

    async def _safe_send(self, message: OutboundMessage) -> SendResult:
        try:
            return await self.send(message)
        except Exception as exc:  # a connector bug must not lose the message: retry it
            return SendResult.retry(message.id, "internal", f"{type(exc).__name__}: {exc}")

    async def status(self) -> ChannelStatus:
        return ChannelStatus(connected=True)

    async def check_numbers(self, numbers: Sequence[str]) -> list[NumberCheck]:
        """Picky's number filter: whether each number is on WhatsApp, in order. Connectors
        with a contact check (the bridges) ask it, and raise ``CheckUnavailable`` when they
        cannot now; the default answers from the numbers' validity and says so."""
        return by_validity(list(numbers))

    async def fetch_inbound_media(self, ref: str) -> tuple[str, bytes]:
        """A user's media the provider keeps behind the channel's credentials (WhatsApp
        Cloud's media ids), as (content type, bytes), for the gateway's signed link; raise
        ``LookupError`` when there is none, ``MediaFetchError`` when the download fails."""
        raise LookupError(f"channel kind {self.kind!r} keeps no inbound media")

    async def handle_callback(self, request: CallbackRequest) -> CallbackResult:
        """Verify (raise ``CallbackRejected``) and parse a provider callback. Must be
        idempotent: providers repeat callbacks, and the store ignores repeated updates."""
        raise CallbackRejected(404, f"channel kind {self.kind!r} takes no callbacks")

    def simulate_delivery(self, message_ids: Sequence[int], now: float) -> list[StatusUpdate]:
        """Only for channels that fake delivery (sandbox)."""
        return []


_KINDS: dict[str, type[Channel]] = {}


def register(cls: type[Channel]) -> type[Channel]:
    _KINDS[cls.kind] = cls
    return cls


# Connector modules, imported on first use (importing one registers its kinds).
CONNECTOR_MODULES = (
    "pushgate.channels.sandbox",
    "pushgate.channels.whatsapp_cloud",
    "pushgate.channels.waha",
    "pushgate.channels.evolution",
    "pushgate.channels.smpp",
    "pushgate.channels.twilio",
    "pushgate.channels.android",
)


#: The kinds those modules register, spelled out so help texts can list them without importing
#: every connector (a test keeps it equal to the registry).
KIND_NAMES = ("android", "evolution", "sandbox", "smpp", "twilio_sms", "twilio_voice", "waha",
              "whatsapp_cloud")


def _import_connectors() -> None:
    import importlib

    for module in CONNECTOR_MODULES:
        importlib.import_module(module)


def channel_class(kind: str) -> type[Channel]:
    _import_connectors()
    try:
        return _KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown channel kind {kind!r}; known: {sorted(_KINDS)}") from None


#: Channel config keys the gateway itself reads (dispatch caps and warm-up, the accept
#: path's country allow-list); connectors never see them.
GATEWAY_CONFIG_KEYS = frozenset({"hourly_cap", "daily_cap", "warmup_first_day",
                                 "warmup_growth", "warmup_started_at",
                                 "allowed_country_codes", "check_price"})


def split_config(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the connector's keys, the gateway's keys) of a channel config."""
    return ({k: v for k, v in config.items() if k not in GATEWAY_CONFIG_KEYS},
            {k: v for k, v in config.items() if k in GATEWAY_CONFIG_KEYS})


def channel_for(spec: ChannelSpec, env: ChannelEnv | None = None) -> Channel:
    connector_config, _gateway = split_config(spec.config)
    if len(connector_config) != len(spec.config):
        spec = dataclasses.replace(spec, config=connector_config)
    return channel_class(spec.kind)(spec, env)


def known_kinds() -> list[str]:
    _import_connectors()
    return sorted(_KINDS)
