"""Phones: the HTTP side of the device API of "SMS Gateway for Android" (pushgate as the
app's private server), and Picky's ``device-status`` / ``device-action``.

Each route parses its request, calls the phone protocol (``channels/android/``: payloads in
``protocol.py``, reports in ``states.py``, fetch limits in ``quotas.py``, pairing and status
in ``phones.py``) and the store, and answers.

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
  (``channels/android/states.py``). Pending and Processed only renew the lease. Ids the phone was
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
import math
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

import msgspec
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from pushgate import metrics
from pushgate.api.auth import authenticate, resolve_channel, token_from
from pushgate.api.body import read_body
from pushgate.api.state import Gateway, gateway_of
from pushgate.channels.android.channel import PhoneSettings
from pushgate.channels.android.phones import (
    channel_for_private_token,
    is_phone,
    local_iso,
    login_of,
    new_device,
    phone_status,
)
from pushgate.channels.android.protocol import (
    app_settings,
    message_item,
    patch_decoder,
    patch_problem,
    register_decoder,
    registration_problem,
    rfc3339,
)
from pushgate.channels.android.quotas import device_quota
from pushgate.channels.android.states import (
    ReportRefused,
    outcomes_of,
    read_reports,
    reports_decoder,
    rest_seconds,
)
from pushgate.channels.base import channel_class, channel_for
from pushgate.channels.bridge import ActionFailed, ActionUnsupported, BridgeChannel
from pushgate.core.channels import APP_CALL, ChannelSpec
from pushgate.core.devices import Device, device_worker
from pushgate.core.errors import ApiError, Code
from pushgate.core.pricing import format_credits
from pushgate.core.push import decode_body
from pushgate.core.tokens import hash_token
from pushgate.store.base import Store

JSON = "application/json"
# What ``paused_reason`` says when a device-action stopped the queue; the next push resumes it
# (Picky: "sending a new message restarts the queue").
QUEUE_STOPPED = {"message": "stopped by device-action stop-message-queue",
                 "call": "stopped by device-action stop-call-queue"}
# Commands Picky documents for its WhatsApp Web Automation servers: a WhatsApp Web bridge
# channel (WAHA, Evolution API) maps them onto its session API; phones have none of them.
BRIDGE_COMMANDS = frozenset({"restart-server", "disconnect", "clearlogs"})
# What a bridge channel takes: Picky's server commands and the phones' restart/reset.
BRIDGE_ACTIONS = BRIDGE_COMMANDS | {"restart", "reset"}
# Device writes of "last seen" are spaced at least this much (every request reads the token).
TOUCH_EVERY_SECONDS = 5.0
# A connector's status() may take this long before device-status answers TIMEOUT.
STATUS_TIMEOUT_SECONDS = 10.0
MAX_DEVICE_BODY = 1024 * 1024


class CommandBody(msgspec.Struct):
    token: str | int | None = None
    application: str | int | None = None
    channel_id: str | int | None = None
    command: str | None = None


_command_decoder = msgspec.json.Decoder(CommandBody)


def stopped_by_device_action(channel: ChannelSpec) -> bool:
    return channel.paused and channel.paused_reason in QUEUE_STOPPED.values()


OPERATOR_PAUSE = "paused by operator"


async def pause_channel(store: Store, channel_id: int, paused: bool) -> ChannelSpec | None:
    """The operator's pause (``pushgate channel pause``, the dashboard's channels page):
    pushes are still accepted and queued; resuming lifts any pause, a device action's too."""
    return await store.update_channel(channel_id, paused=paused,
                                      paused_reason=OPERATOR_PAUSE if paused else "")


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


def _json(payload: Any) -> Response:
    return Response(orjson.dumps(payload), media_type=JSON)


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
    if channel is None or not is_phone(channel):
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
    channel = channel_for_private_token(await store.list_channels(), bearer(request) or "")
    if channel is None:
        gateway.registrations.failed(client)
        return _message(401, "invalid private token")
    try:
        body = register_decoder.decode(await read_limited(request) or b"{}")
    except (msgspec.MsgspecError, RecursionError) as exc:
        return _message(400, _invalid(exc))
    problem = registration_problem(body)
    if problem is not None:
        return _message(400, problem)
    device, device_token = new_device(channel, body, request.headers.get("user-agent", ""), now)
    await store.register_device(device, hash_token(device_token))
    return Response(orjson.dumps({"id": device.id, "token": device_token, **login_of(channel)}),
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
        body = patch_decoder.decode(await read_limited(request) or b"{}")
    except (msgspec.MsgspecError, RecursionError) as exc:
        return _message(400, _invalid(exc))
    problem = patch_problem(body)
    if problem is not None:
        return _message(400, problem)
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
        decoded = reports_decoder.decode(await read_limited(request))
    except (msgspec.MsgspecError, RecursionError) as exc:
        return _message(400, _invalid(exc))
    now = time.time()
    try:
        reports = read_reports(decoded, now)
    except ReportRefused as exc:
        return _message(400, str(exc))
    found = await phone_channel(store, device)
    if found is None or not reports:
        return Response(status_code=204)
    channel, phone = found
    known = await store.note_device_reports(
        device.id, [(r.message_id, r.state, r.at) for r in reports], now, phone.lease_seconds)
    results, updates, faults = outcomes_of(device, reports, known)
    rest = rest_seconds(faults, phone)
    if rest is not None:
        await store.pause_device(device.id, now + rest)
    await store.record_outcomes(device_worker(device.id), results, now, gateway.retry_policy)
    await store.apply_status_updates(updates)
    if results:   # a phone's sends count like a dispatcher's
        metrics.MESSAGES_SENT.labels(str(channel.id)).inc(
            sum(1 for r in results if r.kind.went_out))
        metrics.count_errors(channel.id, (r.error_code for r in results))
    if results or updates:
        gateway.webhook_wake.set()
        gateway.wakeups.progress[device.id] = now
    if any(r.kind.waits for r in results):
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
    phones = [c for c in channels if is_phone(c)]
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
    if is_phone(channel):
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
                   summary="Stop, resume or delete the queue; reset or restart the phones; "
                           "restart, reset or disconnect a WhatsApp Web bridge's session")
async def device_action(request: Request) -> Response:
    gateway = gateway_of(request)
    body, _project_id, channel = await picky_channel(gateway, request)
    command = (body.command or "").strip().lower()
    now = time.time()
    queue, _sep, verb = command.partition("-")
    if command in BRIDGE_ACTIONS and is_bridge(channel):
        return _json(await bridge_command(gateway, channel, command, now))
    if command in BRIDGE_COMMANDS:
        raise ApiError(Code.COMMAND_NOT_SUPPORTED,
                       f"`{command}` is for WhatsApp Web bridge channels (waha, evolution); "
                       f"channel {channel.id} is a {channel.kind} channel")
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
        if not is_phone(channel):
            raise ApiError(Code.COMMAND_NOT_SUPPORTED,
                           f"`{command}` is for phone channels (android) and WhatsApp Web "
                           f"bridge channels (waha, evolution); channel {channel.id} is "
                           f"a {channel.kind} channel")
        return _json(await phone_command(gateway, channel, command, now))
    raise ApiError(Code.INVALID_FIELD,
                   f"unknown `command` {body.command!r}; known: stop-message-queue, "
                   "resume-message-queue, delete-message-queue, stop-call-queue, "
                   "resume-call-queue, delete-call-queue, reset, restart, disconnect, "
                   "restart-server, clearlogs")


def is_bridge(channel: ChannelSpec) -> bool:
    try:
        return issubclass(channel_class(channel.kind), BridgeChannel)
    except ValueError:  # a kind no connector registers takes no bridge command
        return False


async def bridge_command(gateway: Gateway, channel: ChannelSpec, command: str,
                         now: float) -> dict[str, Any]:
    """A command on a WhatsApp Web bridge's session, through its connector. ``reset`` deletes
    the message queue only after the bridge restarted the session, so a refusal leaves both
    as they were."""
    connector = channel_for(channel, gateway.env)
    assert isinstance(connector, BridgeChannel)
    try:
        await connector.start()
        done = await connector.device_action(command)
    except ActionUnsupported as exc:
        raise ApiError(Code.COMMAND_NOT_SUPPORTED,
                       f"`{command}` on channel {channel.id}, a {channel.kind} channel: "
                       f"{exc}") from None
    except ActionFailed as exc:
        raise ApiError(Code.PROVIDER_REFUSED if exc.reached else Code.PROVIDER_UNREACHABLE,
                       f"`{command}` on channel {channel.id} ({channel.kind}): {exc}") from None
    finally:
        with contextlib.suppress(Exception):
            await connector.stop()
    answer: dict[str, Any] = {"status": int(Code.SUCCESS), "message": "Success",
                              "bridge_request": done.request, "detail": done.detail}
    if command == "reset":
        count, refunded = await gateway.store.cancel_channel_queue(
            channel.id, now, "deleted by device-action reset")
        gateway.webhook_wake.set()
        answer.update(cancelled=count, refunded=format_credits(refunded))
    return answer


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
            gateway.queued(channel.id)
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
