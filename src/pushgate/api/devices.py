"""Phones: the device API of "SMS Gateway for Android" (pushgate as the app's private server),
and Picky's ``device-status`` / ``device-action``.

The app is pointed at ``{public URL}{prefix}`` (prefix ``/api/mobile/v1`` unless
``PUSHGATE_MOBILE_API_PREFIX`` says otherwise) with a channel's private token, which
``pushgate device pair`` prints. Then, as with the original Go server:

- ``POST /device`` (``Bearer <private token>``) registers the phone: 201 with its id, its own
  bearer token (stored hashed, revocable), a login and an empty password (pushgate has no
  user accounts: the channel is the "user").
- ``GET /events`` is a Server-Sent Events stream: ``MessageEnqueued`` when the phone may take
  new work, ``:keepalive`` comments in between. An open stream counts as the phone being
  seen. Pushes are noticed by polling the store (``events_poll_seconds``), so an API node
  wakes the phones of pushes accepted by another node too.
- ``GET /message`` claims what the phone may send now (``PhoneSettings``: per-minute/hour/day
  limits, a random delay between messages, an in-flight cap, recipients kept on one phone)
  and answers it with the messages it was handed and has not acknowledged yet, priority
  first, then oldest. A message is leased to the phone; if the phone falls silent it goes to
  another phone when the lease ends, counted as a possible re-send.
- ``PATCH /message`` takes the phone's state reports: Sent → submitted, Delivered →
  delivered, Failed → read from the result code inside the app's text ("Send result:
  RESULT_ERROR_LIMIT_EXCEEDED (…)"): Android's limit rests the phone
  (``limit_pause_seconds``) and a phone that cannot send (no service, radio off, …) rests
  ``trouble_pause_seconds``, both re-queueing the message without counting an attempt; a
  passing fault is retried with back-off; anything else is failed and refunded
  (``channels/android.py``). Pending and Processed only renew the lease. Ids the phone was
  never handed are ignored, as the original server does.
- ``GET /settings`` tells the app its send interval and per-minute limit; ``GET /webhooks``
  is empty (reports come through ``PATCH /message``); ``GET``/``PATCH /device`` as the app
  expects. ``PATCH /device`` may also carry ``battery`` and ``network`` objects (a pushgate
  extension: the app's protocol has no field for them), shown by ``device-status``.

Device routes answer errors as the original server does (``{"message": ...}`` with the HTTP
status); the Picky routes answer in Picky's shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import math
import random
import re
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import msgspec
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from pushgate.api.auth import authenticate, resolve_channel, token_from
from pushgate.api.body import read_body
from pushgate.api.state import Gateway, gateway_of
from pushgate.channels.android import PhoneFault, PhoneSettings, read_app_error
from pushgate.channels.base import channel_class, channel_for
from pushgate.core.channels import APP_CALL, ChannelSpec
from pushgate.core.errors import ApiError, Code
from pushgate.core.lifecycle import State
from pushgate.core.models import SendResult, StatusUpdate
from pushgate.core.pricing import format_credits
from pushgate.core.push import decode_body
from pushgate.core.tokens import hash_token
from pushgate.store.base import (
    Device,
    DeviceMessage,
    DeviceQuota,
    Store,
    device_worker,
)

JSON = "application/json"
# Message states of the app (``states`` keys and ``state`` values of a report).
APP_STATES = frozenset({"Pending", "Processed", "Sent", "Delivered", "Failed", "Cancelling",
                        "Cancelled"})
# What ``paused_reason`` says when a device-action stopped the queue; the next push resumes it
# (Picky: "sending a new message restarts the queue").
QUEUE_STOPPED = {"message": "stopped by device-action stop-message-queue",
                 "call": "stopped by device-action stop-call-queue"}
# Commands Picky documents for WhatsApp Web Automation servers, which pushgate does not run.
BRIDGE_COMMANDS = frozenset({"restart-server", "disconnect", "clearlogs"})
# Device writes of "last seen" are spaced at least this much (every request reads the token).
TOUCH_EVERY_SECONDS = 5.0
# A connector's status() may take this long before device-status answers TIMEOUT.
STATUS_TIMEOUT_SECONDS = 10.0
MAX_DEVICE_BODY = 1024 * 1024
# The app's battery, network and SIM card facts are a level or two deep; they are stored and
# shown again in device-status, whose JSON encoder stops at 255 levels.
MAX_HEALTH_DEPTH = 16
_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-"
_VERSION = re.compile(r"(?:sms|gateway)[\w.\- ]*/v?(\d+(?:\.\d+)+)", re.IGNORECASE)


class RecipientReport(msgspec.Struct):
    phoneNumber: str | None = None  # noqa: N815 - the app's field names
    state: str | None = None
    error: str | None = None


class MessageReport(msgspec.Struct):
    id: str | int
    state: str
    recipients: list[RecipientReport] = msgspec.field(default_factory=list)
    states: dict[str, str | int | float] = msgspec.field(default_factory=dict)


class RegisterBody(msgspec.Struct):
    name: str | None = None
    pushToken: str | None = None  # noqa: N815
    simCards: list[Any] | None = None  # noqa: N815


class DevicePatch(msgspec.Struct):
    id: str | None = None
    pushToken: str | None = None  # noqa: N815
    battery: dict[str, Any] | None = None
    network: dict[str, Any] | str | None = None


class CommandBody(msgspec.Struct):
    token: str | None = None
    application: str | int | None = None
    channel_id: str | int | None = None
    command: str | None = None


_reports_decoder = msgspec.json.Decoder(list[MessageReport])
_register_decoder = msgspec.json.Decoder(RegisterBody)
_patch_decoder = msgspec.json.Decoder(DevicePatch)
_command_decoder = msgspec.json.Decoder(CommandBody)


# --- small pure helpers -------------------------------------------------------------------------
def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def local_iso(ts: float | None) -> str | None:
    """ISO 8601 in the server's time zone, as Picky's ``time`` fields."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def parse_app_time(value: str | int | float, now: float) -> float:
    """A time from the app: an RFC 3339 string, or epoch milliseconds (older app builds).
    Never later than ``now``: a phone's clock running ahead must not date the future."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        at = float(value) / 1000.0
    else:
        at = datetime.fromisoformat(str(value).strip()).timestamp()
    return min(at, now)


def new_device_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(21))


def app_version(user_agent: str) -> str | None:
    match = _VERSION.search(user_agent or "")
    return match.group(1) if match else (user_agent or None)


def device_quota(settings: PhoneSettings) -> DeviceQuota:
    """What one fetch may hand a phone, with fresh random delays for its messages."""
    return DeviceQuota(
        per_minute=settings.per_minute, per_hour=settings.per_hour, per_day=settings.per_day,
        per_fetch=settings.per_fetch, max_in_flight=settings.max_in_flight,
        lease_seconds=settings.lease_seconds, offline_after=settings.offline_after_seconds,
        sticky_seconds=settings.sticky_seconds,
        delays=tuple(random.uniform(settings.min_delay_seconds, settings.max_delay_seconds)
                     for _ in range(settings.per_fetch)))


def message_item(message: DeviceMessage, settings: PhoneSettings) -> dict[str, Any]:
    """A pending message as the app reads it (``MobileMessage``); ``message`` is the legacy
    text field that older app versions read instead of ``textMessage``."""
    return {
        "id": str(message.id),
        "message": message.text,
        "textMessage": {"text": message.text},
        "phoneNumbers": [f"+{message.number}"],
        "simNumber": settings.sim_number,
        "withDeliveryReport": True,
        "isEncrypted": False,
        "priority": message.priority,
        "ttl": None,
        "validUntil": rfc3339(message.expires_at),
        "scheduleAt": None,
        "state": "Pending",
        "createdAt": rfc3339(message.created_at),
    }


def app_settings(settings: PhoneSettings) -> dict[str, Any]:
    """The app's remote settings: its own spacing of sends and its own per-minute limit."""
    # Whole seconds in the app; the gateway spaces its hand-outs by the exact delays anyway.
    messages: dict[str, Any] = {
        "send_interval_min": int(settings.min_delay_seconds),
        "send_interval_max": max(int(settings.min_delay_seconds),
                                 int(settings.max_delay_seconds + 0.5)),
    }
    if settings.per_minute:
        messages.update(limit_period="PerMinute", limit_value=settings.per_minute)
    else:
        messages.update(limit_period="Disabled", limit_value=0)
    return {"messages": messages}


def stopped_by_device_action(channel: ChannelSpec) -> bool:
    return channel.paused and channel.paused_reason in QUEUE_STOPPED.values()


async def resume_stopped_queue(store: Store, channel: ChannelSpec) -> bool:
    """Picky: a new push restarts a queue that ``stop-message-queue`` (or
    ``stop-call-queue``) stopped; a channel the operator paused stays paused."""
    if not stopped_by_device_action(channel):
        return False
    # The caller's spec may be a cached one: decide on the stored state, so an operator's
    # pause made since is never lifted.
    current = await store.get_channel(channel.id)
    if current is None or not stopped_by_device_action(current):
        return False
    await store.update_channel(channel.id, paused=False, paused_reason="")
    return True


def _message(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps({"message": text}), status_code=status, media_type=JSON,
                    headers=headers)


def _invalid(exc: Exception) -> str:
    """The app's 400 message for a body that does not decode."""
    if isinstance(exc, RecursionError):   # msgspec recurses once per level of nesting
        return "invalid request: JSON nested too deeply"
    return f"invalid request: {exc}"


def nested_deeper(value: Any, limit: int) -> bool:
    """Whether decoded JSON ``value`` has lists or objects nested more than ``limit`` deep."""
    if not isinstance(value, (dict, list)):
        return False
    if limit <= 0:
        return True
    children = value.values() if isinstance(value, dict) else value
    return any(nested_deeper(child, limit - 1) for child in children)


def unstorable(value: Any) -> str | None:
    """What in decoded JSON ``value`` cannot be stored and shown again, or None: a NUL
    character (PostgreSQL's text and jsonb columns refuse it) or an integer past 64 bits
    (device-status's JSON encoder refuses it)."""
    if isinstance(value, str):
        return "a NUL (U+0000) character" if "\x00" in value else None
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        return "an integer out of the 64-bit range"
    if isinstance(value, dict):
        return next((p for k, v in value.items() if (p := unstorable(k) or unstorable(v))),
                    None)
    if isinstance(value, list):
        return next((p for item in value if (p := unstorable(item))), None)
    return None


def _json(payload: Any) -> Response:
    return Response(orjson.dumps(payload), media_type=JSON)


def _is_phone(channel: ChannelSpec) -> bool:
    try:
        return channel_class(channel.kind).pull
    except ValueError:
        return False


# --- the routes ---------------------------------------------------------------------------------
_PHONE_TAGS: list[str | Any] = ["Phones (SMS Gateway for Android)"]


def phone_router(mobile_api_prefix: str) -> APIRouter:
    """The app's device API under ``mobile_api_prefix`` (a setting, hence built per app)."""
    prefix = mobile_api_prefix.rstrip("/")
    phones = APIRouter(tags=_PHONE_TAGS)
    phones.add_api_route(prefix + "/device", register, methods=["POST"], status_code=201,
                         summary="Register a phone with a channel's private token")
    phones.add_api_route(prefix + "/device", get_device, methods=["GET"],
                         summary="The calling phone, and its address")
    phones.add_api_route(prefix + "/device", patch_device, methods=["PATCH"], status_code=204,
                         summary="Update the phone's push token")
    phones.add_api_route(prefix + "/message", get_messages, methods=["GET"],
                         summary="Messages for the phone to send, priority first, then oldest")
    phones.add_api_route(prefix + "/message", patch_messages, methods=["PATCH"],
                         status_code=204,
                         summary="State reports of messages the phone was handed")
    phones.add_api_route(prefix + "/events", events, methods=["GET"],
                         summary="Server-Sent Events: MessageEnqueued when the phone may take "
                                 "work")
    phones.add_api_route(prefix + "/settings", get_settings, methods=["GET"],
                         summary="The app's remote settings")
    phones.add_api_route(prefix + "/webhooks", get_webhooks, methods=["GET"],
                         summary="Webhooks for the phone to call: none, reports come by "
                                 "PATCH /message")
    return phones


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return None


async def device_of(gateway: Gateway, request: Request) -> Device | None:
    """The live device whose token the request bears, or None."""
    token = bearer(request)
    if not token:
        return None
    device = await gateway.store.device_by_token(hash_token(token))
    if device is None or device.revoked_at is not None:
        return None
    return device


async def seen(gateway: Gateway, device: Device, request: Request, **changes: Any) -> None:
    now = time.time()
    user_agent = request.headers.get("user-agent")
    touched = gateway.device_touched
    if (changes or now - touched.get(device.id, 0.0) >= TOUCH_EVERY_SECONDS
            or (user_agent and user_agent != device.user_agent)):
        touched[device.id] = now
        await gateway.store.touch_device(device.id, now, user_agent=user_agent, **changes)


async def phone_channel(store: Store, device: Device) -> tuple[ChannelSpec, PhoneSettings] | None:
    channel = await store.get_channel(device.channel_id)
    if channel is None or not _is_phone(channel):
        return None
    return channel, PhoneSettings.from_config(channel.config)


async def read_limited(request: Request) -> bytes:
    return await read_body(request, MAX_DEVICE_BODY)


# --- the app's device API ---------------------------------------------------------------------
async def register(request: Request) -> Response:
    gateway = gateway_of(request)
    store = gateway.store
    now = time.time()
    client = request.client.host if request.client else None
    wait = gateway.registrations.retry_after(client)
    if wait is not None:
        return _message(429, "too many failed registrations; try again later",
                        headers={"Retry-After": str(max(1, math.ceil(wait)))})
    token = bearer(request) or ""
    phones = [c for c in await store.list_channels() if _is_phone(c)]
    # Every channel is compared, in constant time each: no early exit tells which matched.
    matches = [c for c in phones if hmac.compare_digest(
        (c.config.get("private_token") or "").encode(), token.encode())
        and c.config.get("private_token")]
    if not token or not matches:
        gateway.registrations.failed(client)
        return _message(401, "invalid private token")
    channel = matches[0]
    try:
        body = _register_decoder.decode(await read_limited(request) or b"{}")
    except (msgspec.MsgspecError, RecursionError) as exc:
        return _message(400, _invalid(exc))
    if nested_deeper(body.simCards, MAX_HEALTH_DEPTH):
        return _message(400, f"invalid request: `simCards` nested deeper than "
                             f"{MAX_HEALTH_DEPTH} levels")
    problem = unstorable([body.name, body.pushToken, body.simCards])
    if problem is not None:
        return _message(400, f"invalid request: {problem}")
    device_token = secrets.token_urlsafe(16)
    device = Device(id=new_device_id(), channel_id=channel.id, project_id=channel.project_id,
                    name=(body.name or "")[:128], created_at=now, last_seen_at=now,
                    push_token=body.pushToken,
                    user_agent=request.headers.get("user-agent", ""),
                    health={"simCards": body.simCards} if body.simCards else None)
    await store.register_device(device, hash_token(device_token))
    return Response(orjson.dumps({"id": device.id, "token": device_token,
                                  "login": f"pushgate-channel-{channel.id}",
                                  "password": ""}),
                    status_code=201, media_type=JSON)


async def get_device(request: Request) -> Response:
    gateway = gateway_of(request)
    device = await device_of(gateway, request)
    answer: dict[str, Any] = {"externalIp": request.client.host if request.client else None}
    if device is not None:
        await seen(gateway, device, request)
        answer["device"] = {"id": device.id, "name": device.name,
                            "createdAt": rfc3339(device.created_at),
                            "updatedAt": rfc3339(device.last_seen_at),
                            "lastSeen": rfc3339(time.time())}
    return _json(answer)


async def patch_device(request: Request) -> Response:
    gateway = gateway_of(request)
    device = await device_of(gateway, request)
    if device is None:
        return _message(401, "invalid device token")
    try:
        body = _patch_decoder.decode(await read_limited(request) or b"{}")
    except (msgspec.MsgspecError, RecursionError) as exc:
        return _message(400, _invalid(exc))
    if nested_deeper(body.battery, MAX_HEALTH_DEPTH) \
            or nested_deeper(body.network, MAX_HEALTH_DEPTH):
        return _message(400, f"invalid request: `battery` or `network` nested deeper "
                             f"than {MAX_HEALTH_DEPTH} levels")
    problem = unstorable([body.id, body.pushToken, body.battery, body.network])
    if problem is not None:
        return _message(400, f"invalid request: {problem}")
    if body.id is not None and body.id != device.id:
        return _message(403, "the id is not this token's device")
    health = {k: v for k, v in (("battery", body.battery), ("network", body.network))
              if v is not None}
    await seen(gateway, device, request, push_token=body.pushToken, health=health or None)
    return Response(status_code=204)


async def get_messages(request: Request, order: str = "fifo") -> Response:
    gateway = gateway_of(request)
    device = await device_of(gateway, request)
    if device is None:
        return _message(401, "invalid device token")
    found = await phone_channel(gateway.store, device)
    if found is None:
        return _json([])
    _channel, phone = found
    now = time.time()
    claim = await gateway.store.claim_for_device(device.id, device_quota(phone), now)
    if claim.new:
        gateway.wakeups.progress[device.id] = now
    messages = claim.messages
    if order.lower() == "lifo":
        messages = sorted(messages, key=lambda m: (-m.priority, -m.id))
    return Response(orjson.dumps([message_item(m, phone) for m in messages]),
                    media_type=JSON)


async def patch_messages(request: Request) -> Response:
    gateway = gateway_of(request)
    store = gateway.store
    device = await device_of(gateway, request)
    if device is None:
        return _message(401, "invalid device token")
    try:
        reports = _reports_decoder.decode(await read_limited(request))
    except (msgspec.MsgspecError, RecursionError) as exc:
        return _message(400, _invalid(exc))
    now = time.time()
    parsed: list[tuple[int, str, float, str | None]] = []
    for report in reports:
        unknown = ({report.state} | set(report.states)) - APP_STATES
        if unknown:
            return _message(400, f"unknown state {sorted(unknown)[0]!r}")
        try:
            at = parse_app_time(report.states[report.state], now) \
                if report.state in report.states else now
        except (ValueError, OverflowError, OSError):
            return _message(400, f"invalid time in `states` of message {report.id!r}")
        text = str(report.id).strip()
        if text.isascii() and text.isdigit() and len(text) < 19:
            error = next((r.error for r in report.recipients if r.error), None)
            if error is not None:   # PostgreSQL's text columns refuse NUL
                error = error.replace("\x00", "")
            parsed.append((int(text), report.state, at, error))
        # Anything else is not an id pushgate hands out: ignored like unknown ids.
    found = await phone_channel(store, device)
    if found is None or not parsed:
        return Response(status_code=204)
    channel, phone = found
    known = await store.note_device_reports(
        device.id, [(mid, state, at) for mid, state, at, _e in parsed], now,
        phone.lease_seconds)
    results, updates, faults = outcomes_of(device, parsed, known)
    rest = max((phone.limit_pause_seconds if f is PhoneFault.LIMIT
                else phone.trouble_pause_seconds for f in faults), default=None)
    if rest is not None:
        await store.pause_device(device.id, now + rest)
    await store.record_outcomes(device_worker(device.id), results, now, gateway.retry_policy)
    await store.apply_status_updates(updates)
    if results or updates:
        gateway.webhook_wake.set()
        gateway.wakeups.progress[device.id] = now
    if any(r.defer for r in results):
        gateway.wakeups.notify(channel.id)   # another phone may take the re-queued message
    return Response(status_code=204)


async def events(request: Request) -> Response:
    gateway = gateway_of(request)
    device = await device_of(gateway, request)
    if device is None:
        return _message(401, "invalid device token")
    found = await phone_channel(gateway.store, device)
    if found is None:
        return _message(404, "the device's channel is not a phone channel")
    _channel, phone = found
    opened = time.time()
    await seen(gateway, device, request)
    return StreamingResponse(event_stream(gateway, request, device, phone, opened),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache",
                                      "X-Accel-Buffering": "no"})


async def event_stream(gateway: Gateway, request: Request, device: Device,
                       phone: PhoneSettings, opened: float) -> AsyncIterator[bytes]:
    store, wakeups = gateway.store, gateway.wakeups
    wake = wakeups.subscribe(device.channel_id)
    last_keepalive = time.monotonic()
    announced = 0.0
    try:
        yield b":keepalive\n\n"
        while not await request.is_disconnected():
            now = time.time()
            current = await store.get_device(device.id)
            if current is None or current.revoked_at is not None:
                return
            if current.reconnect_at > opened:
                # `restart`: the app reconnects and reads its settings again.
                yield b"event: SettingsUpdated\ndata: null\n\n"
                return
            due = announced == 0.0 or wakeups.progress.get(device.id, 0.0) > announced \
                or now - announced >= phone.keepalive_seconds
            if due and now >= max(current.ready_at, current.paused_until) \
                    and await has_work(store, device.channel_id, now):
                announced = now
                yield b"event: MessageEnqueued\ndata: null\n\n"
            if time.monotonic() - last_keepalive >= phone.keepalive_seconds:
                last_keepalive = time.monotonic()
                yield b":keepalive\n\n"
                # Only a stream the phone still holds gets here: it counts as seen.
                await store.touch_device(device.id, time.time())
            wake.clear()
            # asyncio.timeout rather than wait_for: wait_for can swallow the cancellation
            # that ends the stream when the phone goes away.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(phone.events_poll_seconds):
                    await wake.wait()
    finally:
        wakeups.unsubscribe(device.channel_id, wake)


async def has_work(store: Store, channel_id: int, now: float) -> bool:
    channel = await store.get_channel(channel_id)
    return (channel is not None and not channel.paused
            and await store.has_ready_messages(channel_id, now))


async def get_settings(request: Request) -> Response:
    gateway = gateway_of(request)
    device = await device_of(gateway, request)
    if device is None:
        return _message(401, "invalid device token")
    found = await phone_channel(gateway.store, device)
    if found is None:
        return _json({})
    await seen(gateway, device, request)
    return _json(app_settings(found[1]))


async def get_webhooks(request: Request) -> Response:
    gateway = gateway_of(request)
    device = await device_of(gateway, request)
    if device is None:
        return _message(401, "invalid device token")
    await seen(gateway, device, request)
    return Response(b"[]", media_type=JSON)


# --- Picky: device-status and device-action ---------------------------------------------------
picky_router = APIRouter(tags=["Device API"])


async def command_body(request: Request) -> CommandBody:
    body = await read_limited(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw: bytes | str = body
    if content_type == "application/x-www-form-urlencoded" \
            and not body.lstrip().startswith(b"{"):
        values = parse_qs(body.decode("utf-8", "replace")).get("data")
        if not values:
            raise ApiError(Code.MALFORMED_BODY, "form posts carry the JSON in a `data` field")
        raw = values[0]
    elif not body.strip():
        raw = request.query_params.get("data", "")
        if not raw:
            raise ApiError(Code.MALFORMED_BODY, "empty body")
    return decode_body(_command_decoder, raw)


async def picky_channel(gateway: Gateway,
                        request: Request) -> tuple[CommandBody, int, ChannelSpec]:
    body = await command_body(request)
    token = await authenticate(gateway.lookups, request, token_from(request, body.token))
    if body.application not in (None, "") or body.channel_id not in (None, ""):
        channel = await resolve_channel(gateway.lookups, token.project_id, body.application,
                                        body.channel_id)
        return body, token.project_id, channel
    channels = await gateway.store.list_channels(token.project_id)
    phones = [c for c in channels if _is_phone(c)]
    if len(channels) == 1 or len(phones) == 1:
        return body, token.project_id, (channels if len(channels) == 1 else phones)[0]
    raise ApiError(Code.INVALID_FIELD, f"`application` is required: the project has "
                                       f"{len(channels)} channels")


@picky_router.post("/api/v2/device-status",
                   summary="Is the channel's phone (or bridge) connected, and its queue")
async def device_status(request: Request) -> Response:
    gateway = gateway_of(request)
    store = gateway.store
    _body, project_id, channel = await picky_channel(gateway, request)
    now = time.time()
    counts = await store.channel_queue_counts(channel.id)
    answer: dict[str, Any] = {
        "project_id": str(project_id), "application": channel.application,
        "channel_id": channel.id, "message_queue_count": counts["queued"] + counts["sending"],
        "in_flight": counts["sending"], "queue_stopped": channel.paused,
    }
    if _is_phone(channel):
        answer.update(phone_status(await store.list_devices(channel.id),
                                   PhoneSettings.from_config(channel.config), now))
    else:
        answer.update(await connector_status(gateway, channel))
    answer["time"] = local_iso(now)
    return _json(answer)


async def connector_status(gateway: Gateway, channel: ChannelSpec) -> dict[str, Any]:
    connector = channel_for(channel, gateway.env)
    try:
        await asyncio.wait_for(connector.start(), STATUS_TIMEOUT_SECONDS)
        status = await asyncio.wait_for(connector.status(), STATUS_TIMEOUT_SECONDS)
    except Exception as exc:  # a provider that does not answer is what TIMEOUT means
        return {"status": "TIMEOUT", "connected_number": None, "version": None,
                "detail": f"{type(exc).__name__}: {exc}"}
    finally:
        with contextlib.suppress(Exception):
            await connector.stop()
    state = status.state if status.state in ("CONNECTED", "TIMEOUT", "UNPAIRED",
                                             "OFFLINE") else "OFFLINE"
    if not status.connected and state == "CONNECTED":
        state = "OFFLINE"
    return {"status": state, "connected_number": status.connected_number,
            "version": status.extra.get("version"), "detail": status.detail}


@picky_router.post("/api/v2/device-action",
                   summary="Stop, resume or delete the queue; reset or restart the phones")
async def device_action(request: Request) -> Response:
    gateway = gateway_of(request)
    body, _project_id, channel = await picky_channel(gateway, request)
    command = (body.command or "").strip().lower()
    now = time.time()
    queue, _sep, verb = command.partition("-")
    if command in BRIDGE_COMMANDS:
        raise ApiError(Code.COMMAND_NOT_SUPPORTED,
                       f"`{command}` is for Picky's WhatsApp Web Automation servers; "
                       "pushgate does not run one (restart the bridge where it runs)")
    if command.endswith(("-message-queue", "-call-queue")) and queue in (
            "stop", "resume", "delete"):
        kind = verb.removesuffix("-queue")
        if (kind == "call") != (channel.application == APP_CALL):
            raise ApiError(Code.COMMAND_NOT_SUPPORTED,
                           f"`{command}` does not apply to channel {channel.id} "
                           f"(application {channel.application}): the call queue is "
                           "application 4's, the message queue every other's")
        return _json(await queue_command(gateway, channel, queue, kind, now))
    if command in ("reset", "restart"):
        if not _is_phone(channel):
            raise ApiError(Code.COMMAND_NOT_SUPPORTED,
                           f"`{command}` is for phone channels; channel {channel.id} is "
                           f"a {channel.kind} channel")
        return _json(await phone_command(gateway, channel, command, now))
    raise ApiError(Code.INVALID_FIELD,
                   f"unknown `command` {body.command!r}; known: stop-message-queue, "
                   "resume-message-queue, delete-message-queue, stop-call-queue, "
                   "resume-call-queue, delete-call-queue, reset, restart")


async def queue_command(gateway: Gateway, channel: ChannelSpec, verb: str, kind: str,
                        now: float) -> dict[str, Any]:
    store = gateway.store
    answer: dict[str, Any] = {"status": int(Code.SUCCESS), "message": "Success"}
    if verb == "stop":
        # An operator's pause stays the operator's: a later push must not lift it.
        if not channel.paused:
            await store.update_channel(channel.id, paused=True,
                                       paused_reason=QUEUE_STOPPED[kind])
            gateway.lookups.forget()   # the next push must see the stop
        return answer
    if verb == "resume":
        if channel.paused:
            if channel.paused_reason != QUEUE_STOPPED[kind]:
                raise ApiError(Code.CHANNEL_PAUSED,
                               f"channel {channel.id} was paused "
                               f"({channel.paused_reason or 'by the operator'}); "
                               "the operator resumes it")
            await store.update_channel(channel.id, paused=False, paused_reason="")
            gateway.lookups.forget()
            if gateway.dispatcher is not None:
                gateway.dispatcher.wake(channel.id)
            gateway.wakeups.notify(channel.id)
        return answer
    count, refunded = await store.cancel_channel_queue(
        channel.id, now, f"deleted by device-action delete-{kind}-queue")
    gateway.webhook_wake.set()
    return {**answer, "cancelled": count, "refunded": format_credits(refunded)}


async def phone_command(gateway: Gateway, channel: ChannelSpec, command: str,
                        now: float) -> dict[str, Any]:
    store = gateway.store
    answer: dict[str, Any] = {"status": int(Code.SUCCESS), "message": "Success"}
    if command == "restart":
        # The protocol has no "restart": closing the event streams makes the apps
        # reconnect, read their settings again and fetch.
        asked = await store.request_reconnect(channel.id, now)
        gateway.wakeups.notify(channel.id)
        detail = f"{asked} phone(s) asked to reconnect" if asked \
            else "no paired phone: nothing to restart"
        return {**answer, "devices": asked, "detail": detail}
    # reset: the queue and what the phones hold are cancelled and refunded, and every
    # phone must be paired again.
    count, refunded = await store.cancel_channel_queue(
        channel.id, now, "deleted by device-action reset", include_in_flight=True)
    revoked = await store.revoke_devices(now, channel_id=channel.id)
    gateway.webhook_wake.set()
    gateway.wakeups.notify(channel.id)
    return {**answer, "cancelled": count, "refunded": format_credits(refunded),
            "devices_revoked": revoked}


def phone_status(devices: list[Device], settings: PhoneSettings, now: float) -> dict[str, Any]:
    """Picky's device-status fields for a phone channel: CONNECTED while a phone was seen
    within ``offline_after_seconds``, else OFFLINE; the most recently seen phone speaks for
    the channel, and every paired phone is listed."""
    live = [d for d in devices if d.revoked_at is None]
    online = [d for d in live if d.online(now, settings.offline_after_seconds)]
    latest = max(live, key=lambda d: d.last_seen_at or 0.0, default=None)

    def facts(device: Device) -> dict[str, Any]:
        health = device.health or {}
        return {"version": app_version(device.user_agent),
                "last_seen": local_iso(device.last_seen_at),
                "battery": health.get("battery"), "network": health.get("network"),
                "connected_number": sim_number(health)}

    return {
        "status": "CONNECTED" if online else "OFFLINE",
        **(facts(latest) if latest else {"version": None, "last_seen": None, "battery": None,
                                         "network": None, "connected_number": None}),
        "devices": [{"id": d.id, "name": d.name,
                     "status": "CONNECTED" if d in online else "OFFLINE",
                     "in_flight": d.in_flight,
                     "paused_until": local_iso(d.paused_until) if d.paused_until > now
                     else None, **facts(d)} for d in live],
    }


def sim_number(health: dict[str, Any]) -> str | None:
    """The phone number of the device's first SIM card, if its registration listed one."""
    for card in health.get("simCards") or ():
        if isinstance(card, dict):
            number = card.get("phoneNumber") or card.get("number")
            if number:
                return str(number).lstrip("+")
    return None


def outcomes_of(
    device: Device,
    reports: list[tuple[int, str, float, str | None]],
    known: dict[int, Any],
) -> tuple[list[SendResult], list[StatusUpdate], set[PhoneFault]]:
    """Turn a phone's reports into send results (for messages it holds) and status updates
    (for messages that moved on since it was handed them), and the faults that mean the phone
    must rest (Android's limit, or a phone that cannot send: ``PhoneFault.LIMIT`` / ``PHONE``).
    ``known`` (message id → ``ReportedMessage``) is updated as reports apply, so a message
    reported twice in one batch counts once. A failure is read from the app's text, e.g.
    "Send result: RESULT_ERROR_LIMIT_EXCEEDED (…)" (``channels.android.read_app_error``)."""
    results: list[SendResult] = []
    updates: list[StatusUpdate] = []
    rests: set[PhoneFault] = set()
    label = device.name or device.id
    for mid, state, at, error in reports:
        info = known.get(mid)
        if info is None:
            continue
        if state in ("Sent", "Delivered"):
            if info.held:
                results.append(SendResult(mid, ok=True, provider_id=f"{device.id}/{mid}"))
                info.held, info.state = False, State.SUBMITTED.value
            elif state == "Sent":
                updates.append(StatusUpdate(State.SUBMITTED, at, message_id=mid))
            if state == "Delivered":
                updates.append(StatusUpdate(State.DELIVERED, at, message_id=mid))
        elif state == "Failed":
            failure = read_app_error(error)
            code = failure.code or failure.text or "failed"
            reason = f"phone {label}: {failure.text or 'failed'}"
            if failure.fault in (PhoneFault.LIMIT, PhoneFault.PHONE):
                rests.add(failure.fault)
            if not info.held:
                if info.state == State.SUBMITTED.value:
                    # Failed after it was sent (the SMS centre's delivery report).
                    updates.append(StatusUpdate(State.FAILED, at, message_id=mid,
                                                error_code=code, error_message=reason,
                                                refund=True))
                continue
            if failure.fault in (PhoneFault.LIMIT, PhoneFault.PHONE):
                # Not the message's fault and not an attempt: back to the queue for a phone
                # that may still send.
                why = ("reached Android's SMS limit" if failure.fault is PhoneFault.LIMIT
                       else "cannot send now")
                results.append(SendResult(
                    mid, ok=False, retryable=True, defer=True, retry_after=0.0, error_code=code,
                    error_message=f"phone {label} {why} ({failure.text}); re-queued"))
                info.held, info.state = False, State.QUEUED.value
            elif failure.fault is PhoneFault.TRANSIENT:
                results.append(SendResult(mid, ok=False, retryable=True, error_code=code,
                                          error_message=reason))
                info.held, info.state = False, State.QUEUED.value
            else:
                results.append(SendResult(mid, ok=False, retryable=False, error_code=code,
                                          error_message=reason))
                info.held, info.state = False, State.REFUNDED.value
        elif state == "Cancelled" and info.held:
            results.append(SendResult(mid, ok=False, retryable=False, error_code="Cancelled",
                                      error_message=f"phone {label} cancelled it"))
            info.held, info.state = False, State.REFUNDED.value
    return results, updates, rests
