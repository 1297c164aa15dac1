"""The HTTP application: Picky-compatible routes, health, metrics, and the background loops.

Routes decode, authenticate, call core and the store, and map errors; nothing else. The push
route reads the raw body and decodes it with msgspec instead of letting FastAPI build pydantic
models, which would cost more than the whole rest of the accept path for a 10,000-entry push;
its schema is still published in the OpenAPI document.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any
from urllib.parse import parse_qs

import orjson
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from pushgate import __version__
from pushgate.api import metrics, openapi
from pushgate.api.auth import (
    FailureThrottle,
    Lookups,
    RateLimiter,
    authenticate,
    resolve_channel,
    token_from,
)
from pushgate.api.body import read_body as read_limited_body
from pushgate.api.devices import device_router, resume_stopped_queue
from pushgate.api.media_hosts import plan_with_media_hosts
from pushgate.channels.base import (
    CallbackRejected,
    CallbackRequest,
    Channel,
    ChannelEnv,
    channel_for,
)
from pushgate.channels.media import (
    MediaFetchError,
    inbound_media_subject,
    verify_media_signature,
)
from pushgate.config import Settings
from pushgate.core.channels import ChannelSpec
from pushgate.core.errors import ApiError, Code
from pushgate.core.lifecycle import ERROR_STATES, State
from pushgate.core.policy import RetryPolicy
from pushgate.core.pricing import format_credits
from pushgate.core.push import (
    Limits,
    PushPlan,
    decode_push,
    decode_token_body,
    parse_int_field,
)
from pushgate.dispatch.worker import Dispatcher, new_worker_id
from pushgate.outbound import NameVerdicts
from pushgate.store.base import Store
from pushgate.store.errors import InsufficientCredit, StoreUnavailable
from pushgate.webhooks.deliverer import WebhookDeliverer

log = logging.getLogger("pushgate.api")

JSON = "application/json"
Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class RawRoute(APIRoute):
    """A route whose endpoint takes the request and returns its response by itself.

    FastAPI's own handler solves the endpoint's dependencies and reads the body before calling
    it; for an endpoint that takes nothing but the request (it decodes the body with msgspec)
    that is pure overhead, ~15 % of the event loop's time per single-recipient push (py-spy,
    docs/benchmarks.md). The route keeps its place in the OpenAPI document.
    """

    def get_route_handler(self) -> Endpoint:
        return self.endpoint


class FastRoutes:
    """Pure ASGI middleware: POSTs to the hot paths go straight to their endpoint.

    Between the server and an endpoint Starlette and FastAPI put exception telemetry, body
    limits, the exception middleware, exit stacks and route matching: ~30 % of the event
    loop's time per single-recipient push (py-spy, docs/benchmarks.md). The endpoints named
    here take only the request, read their body by hand and raise only errors that
    ``error_response`` maps, so they need none of it. Their routes stay registered for the
    OpenAPI document. Added with ``add_middleware``, this runs inside Starlette's
    ServerErrorMiddleware: any other exception is still a logged 500.
    """

    def __init__(self, app: Any, routes: dict[str, Endpoint],
                 error_response: Callable[[Exception], Response | None]) -> None:
        self.app = app
        self.routes = routes
        self.error_response = error_response

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        endpoint = (self.routes.get(scope["path"])
                    if scope["type"] == "http" and scope["method"] == "POST" else None)
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        try:
            response = await endpoint(Request(scope, receive, send))
        except Exception as exc:
            mapped = self.error_response(exc)
            if mapped is None:
                raise
            response = mapped
        await response(scope, receive, send)


class Gateway:
    """What the routes share: settings, store, limiter, and (unless API-only) the loops."""

    def __init__(self, settings: Settings, store: Store, run_workers: bool) -> None:
        self.settings = settings
        self.store = store
        self.run_workers = run_workers
        self.limits = Limits(max_recipients=settings.max_recipients)
        self.rate_limiter = RateLimiter(settings.push_rate_per_minute)
        self.lookups = Lookups(store, settings.lookup_cache_seconds, FailureThrottle(
            settings.auth_failure_limit, settings.auth_failure_window_seconds))
        # Whether media URL hosts resolve to public addresses only, kept a few seconds.
        self.media_names = NameVerdicts()
        self.webhook_wake = asyncio.Event()
        self.dispatcher: Dispatcher | None = None
        self.deliverer: WebhookDeliverer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.env = channel_env(settings)
        # Connector instances answering provider callbacks, by channel id (rebuilt when the
        # channel's settings change).
        self._callback_channels: dict[int, tuple[ChannelSpec, Channel]] = {}

    def callback_channel(self, spec: ChannelSpec) -> Channel:
        cached = self._callback_channels.get(spec.id)
        if cached is None or cached[0] != spec:
            cached = self._callback_channels[spec.id] = (spec, channel_for(spec, self.env))
        return cached[1]

    async def start(self) -> None:
        await self.store.open()
        # Everything loaded so far (phonenumbers metadata, modules) lives as long as the
        # process: keep it out of the collector's full passes, which otherwise walk it
        # again and again while pushes allocate.
        gc.freeze()
        if not self.run_workers:
            return
        worker_id = self.settings.worker_id or new_worker_id()
        self.dispatcher = build_dispatcher(self.settings, self.store, worker_id, self.webhook_wake)
        self.deliverer = build_deliverer(self.settings, self.store, worker_id, self.webhook_wake)
        self._tasks = [asyncio.create_task(self.dispatcher.run(), name="dispatcher"),
                       asyncio.create_task(self.deliverer.run(), name="webhooks")]

    async def stop(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.stop()
        if self.deliverer is not None:
            self.deliverer.stop()
        for task in self._tasks:
            with contextlib.suppress(Exception):
                await task
        await self.store.close()


def channel_env(settings: Settings) -> ChannelEnv:
    return ChannelEnv(public_url=settings.gateway_url(), secret_key=settings.secret_key,
                      allow_private_media=settings.allow_private_media)


def build_dispatcher(settings: Settings, store: Store, worker_id: str,
                     webhook_wake: asyncio.Event | None) -> Dispatcher:
    return Dispatcher(
        store, worker_id=worker_id, claim_batch=settings.claim_batch,
        send_lanes=settings.send_lanes,
        message_lease_seconds=settings.message_lease_seconds,
        channel_lease_seconds=settings.channel_lease_seconds,
        idle_poll=settings.idle_poll_seconds,
        retry_policy=RetryPolicy(settings.retry_max_attempts, settings.retry_base_seconds,
                                 settings.retry_cap_seconds),
        webhook_wake=webhook_wake, env=channel_env(settings))


def build_deliverer(settings: Settings, store: Store, worker_id: str,
                    wake: asyncio.Event | None) -> WebhookDeliverer:
    return WebhookDeliverer(
        store, worker_id, timeout=settings.webhook_timeout_seconds,
        schedule=settings.webhook_schedule(), batch_size=settings.webhook_batch,
        idle_poll=settings.idle_poll_seconds, wake=wake,
        allow_private=settings.allow_private_webhooks)


def create_app(settings: Settings | None = None, store: Store | None = None,
               run_workers: bool = True) -> FastAPI:
    settings = settings or Settings()
    if store is None:
        from pushgate.store.factory import store_for_url

        store = store_for_url(settings.database_url)
    gateway = Gateway(settings, store, run_workers)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    # FastAPI's native OpenTelemetry hook asks the global providers on every request (~30 µs
    # of a single-recipient push); pushgate's own metrics are Prometheus counters.
    app = FastAPI(title="pushgate", version=__version__, lifespan=lifespan,
                  description=openapi.DESCRIPTION,
                  telemetry={"tracing": False, "metrics": False, "logs": False})
    app.state.gateway = gateway

    def answer(payload: dict[str, Any], http_status: int = 200,
               headers: dict[str, str] | None = None) -> Response:
        if settings.always_http_200:
            http_status = 200
        return Response(orjson.dumps(payload), status_code=http_status, media_type=JSON,
                        headers=headers)

    def error_answer(exc: ApiError) -> Response:
        metrics.ERRORS.labels(code=str(int(exc.code))).inc()
        payload: dict[str, Any] = {"status": int(exc.code), "message": exc.message}
        headers = None
        for key, value in exc.extra.items():
            if key == "retry_after":
                headers = {"Retry-After": str(value)}
            else:
                payload[key] = value
        return answer(payload, exc.http_status, headers)

    def error_response(exc: Exception) -> Response | None:
        """pushgate's answer to an error a route raised, or None for a bug."""
        if isinstance(exc, ApiError):
            return error_answer(exc)
        if isinstance(exc, StoreUnavailable):
            log.error("store unavailable: %s", exc)
            return error_answer(ApiError(Code.UNAVAILABLE, str(exc)))
        return None

    @app.exception_handler(ApiError)
    @app.exception_handler(StoreUnavailable)
    async def _api_error(request: Request, exc: Exception) -> Response:
        answered = error_response(exc)
        assert answered is not None
        return answered

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # The router's own refusals (no such path, a method the path does not take) in
        # pushgate's shape too, rather than Starlette's {"detail": ...}.
        if exc.status_code == 404:
            error = ApiError(Code.NOT_FOUND, "no such route")
        elif exc.status_code == 405:
            error = ApiError(Code.METHOD_NOT_ALLOWED, f"{request.method} is not one of "
                             f"{(exc.headers or {}).get('Allow', 'the methods of this route')}")
        else:
            return await http_exception_handler(request, exc)
        response = error_answer(error)
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        # Path and query parameters FastAPI checks itself: answer in pushgate's shape too.
        problems = "; ".join(f"`{e['loc'][-1]}`: {e['msg']}" for e in exc.errors())
        return error_answer(ApiError(Code.INVALID_FIELD, problems))

    async def read_body(request: Request) -> bytes:
        return await read_limited_body(request, settings.max_body_bytes)

    async def json_payload(request: Request) -> bytes | str:
        """The JSON of a request: the body, or Picky's "normal POST" ``data`` field (form or
        query string) for tools that cannot send JSON."""
        body = await read_body(request)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/x-www-form-urlencoded":
            if body.lstrip().startswith(b"{"):
                return body   # JSON sent with curl's default form content type
            values = parse_qs(body.decode("utf-8", "replace")).get("data")
            if not values:
                raise ApiError(Code.MALFORMED_BODY, "form posts carry the JSON in a `data` field")
            return values[0]
        if content_type == "multipart/form-data":
            form = await _multipart(request, body)
            value = form.get("data")
            if not isinstance(value, str):
                raise ApiError(Code.MALFORMED_BODY, "form posts carry the JSON in a `data` field")
            return value
        if not body.strip() and "data" in request.query_params:
            return request.query_params["data"]
        if not body.strip():
            raise ApiError(Code.MALFORMED_BODY, "empty body")
        return body

    # --- Push API ---------------------------------------------------------------------------
    def raw_post(path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        def register(endpoint: Endpoint) -> Endpoint:
            app.router.add_api_route(path, endpoint, methods=["POST"],
                                     route_class_override=RawRoute, **options)
            return endpoint
        return register

    @raw_post("/api/v2/push", tags=["Push API"], openapi_extra=openapi.PUSH,
              summary="Send one push with many recipients")
    async def push(request: Request) -> Response:
        started = time.perf_counter()
        body = decode_push(await json_payload(request))
        token = await authenticate(gateway.lookups, request, token_from(request, body.token))
        gateway.rate_limiter.check(token.token_id)
        channel = await resolve_channel(gateway.lookups, token.project_id, body.application,
                                        body.channel_id)
        plan = await plan_with_media_hosts(body, channel, gateway.limits,
                                           settings.allow_private_media, gateway.media_names)
        if not plan.accepted:
            error = plan.refusal_only_error()
            error.extra["data"] = _entries(plan, [])
            raise error
        now = time.time()
        validity = settings.message_validity_seconds
        try:
            result = await gateway.store.accept_push(
                token.project_id, channel, plan, now, now + validity if validity else None)
        except InsufficientCredit as exc:
            raise ApiError(Code.INSUFFICIENT_CREDIT,
                           f"the push costs {format_credits(exc.needed_micro)}, the balance is "
                           f"{format_credits(exc.balance_micro)}",
                           credit_total=format_credits(exc.needed_micro),
                           balance=format_credits(exc.balance_micro)) from None
        # Picky: a new push restarts a queue stopped by device-action.
        if channel.paused and await resume_stopped_queue(gateway.store, channel):
            gateway.lookups.forget()
        if gateway.dispatcher is not None:
            gateway.dispatcher.wake(channel.id)
        metrics.PUSHES.inc()
        metrics.MESSAGES_ACCEPTED.inc(len(plan.accepted))
        metrics.ACCEPT_SECONDS.observe(time.perf_counter() - started)
        return answer({
            "status": int(Code.SUCCESS),
            "push_id": str(result.push_id),
            "message": "Success",
            "data": _entries(plan, result.message_ids),
            "accepted": len(plan.accepted),
            "rejected": len(plan.refused),
            "credit_total": format_credits(plan.credit_total),
            "balance": format_credits(result.balance_micro),
        })

    @raw_post("/api/v2/delivery-report", tags=["Push API"], openapi_extra=openapi.TOKEN_PUSH_ID,
              summary="Status of every message of a push")
    async def delivery_report(request: Request) -> Response:
        body = decode_token_body(await json_payload(request))
        token = await authenticate(gateway.lookups, request, token_from(request, body.token))
        push_id = parse_int_field("push_id", body.push_id)
        push_row = await gateway.store.get_push(token.project_id, push_id)
        if push_row is None:
            raise ApiError(Code.NOT_FOUND, f"no push {push_id} in this project")
        channel = await gateway.store.get_channel(push_row["channel_id"])
        head = {
            "status": int(Code.SUCCESS), "message": "Success", "error_message": "",
            "push_id": str(push_id), "project_id": str(token.project_id),
            "application": channel.application if channel else None,
            "channel_id": push_row["channel_id"],
            "time": time.strftime("%d-%m-%Y %I:%M %p", time.localtime(push_row["created_at"])),
        }

        async def stream() -> AsyncIterator[bytes]:
            # Streams chunk by chunk, so a 10,000-message report never sits in memory whole.
            yield orjson.dumps(head)[:-1] + b',"data":['
            first = True
            async for rows in gateway.store.iter_push_messages(token.project_id, push_id):
                items = [_report_item(r) for r in rows]
                chunk = orjson.dumps(items)[1:-1]
                if chunk:
                    yield (b"" if first else b",") + chunk
                    first = False
            yield b"]}"

        return StreamingResponse(stream(), media_type=JSON)

    @app.get("/api/v2/pushes/{push_id}", tags=["Reports"],
             summary="One push with counts of its messages by state")
    async def get_push(push_id: int, request: Request) -> Response:
        token = await authenticate(gateway.lookups, request, token_from(request, None))
        parse_int_field("push_id", push_id)   # in range for the database
        row = await gateway.store.get_push(token.project_id, push_id)
        if row is None:
            raise ApiError(Code.NOT_FOUND, f"no push {push_id} in this project")
        row["credit"] = format_credits(row.pop("credit_micro"))
        return answer({"status": int(Code.SUCCESS), "message": "Success", "data": row})

    @app.get("/api/v2/messages/{msg_id}", tags=["Reports"],
             summary="One message with every transition")
    async def get_message(msg_id: int, request: Request) -> Response:
        token = await authenticate(gateway.lookups, request, token_from(request, None))
        parse_int_field("msg_id", msg_id)   # in range for the database
        row = await gateway.store.get_message(token.project_id, msg_id)
        if row is None:
            raise ApiError(Code.NOT_FOUND, f"no message {msg_id} in this project")
        row["credit"] = format_credits(row.pop("credit_micro"))
        return answer({"status": int(Code.SUCCESS), "message": "Success", "data": row})

    @app.get("/api/v2/sandbox/inbox", tags=["Sandbox"],
             summary="What the project's sandbox channels have 'sent', newest first")
    async def sandbox_inbox(request: Request, limit: int = 100) -> Response:
        token = await authenticate(gateway.lookups, request, token_from(request, None))
        rows = await gateway.store.sandbox_inbox(token.project_id, max(1, min(limit, 1000)))
        for row in rows:
            row["credit"] = format_credits(row.pop("credit_micro"))
        return answer({"status": int(Code.SUCCESS), "message": "Success", "data": rows})

    # --- providers --------------------------------------------------------------------------
    # Not in the OpenAPI document: providers, not API clients, call these (README, channels).
    @app.api_route("/channels/{channel_id}/callback", methods=["GET", "POST"],
                   include_in_schema=False)
    @app.api_route("/channels/{channel_id}/callback/{sub_path:path}", methods=["GET", "POST"],
                   tags=["Providers"], include_in_schema=False)
    async def channel_callback(channel_id: int, request: Request, sub_path: str = "") -> Response:
        """Status webhooks, delivery receipts and inbound messages, verified by the channel's
        connector (signature first), recorded, then answered as the provider expects."""
        parse_int_field("channel_id", channel_id, maximum=2**31 - 1)
        spec = await gateway.store.get_channel(channel_id)
        if spec is None:
            return Response(b"no such channel", status_code=404, media_type="text/plain")
        try:
            channel = gateway.callback_channel(spec)
        except ValueError as exc:
            return Response(str(exc).encode(), status_code=404, media_type="text/plain")
        # The URL as the provider called it, on the public base it was given (Twilio signs it).
        url = gateway.env.public_url + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        callback = CallbackRequest(
            method=request.method, url=url,
            headers={k.lower(): v for k, v in request.headers.items()},
            query=dict(request.query_params), body=await read_body(request), sub_path=sub_path)
        try:
            result = await channel.handle_callback(callback)
        except CallbackRejected as exc:
            metrics.CALLBACKS.labels(kind=spec.kind, outcome="rejected").inc()
            log.warning("channel %s: callback rejected (%s)", channel_id, exc.reason)
            return Response(exc.reason.encode(), status_code=exc.status_code,
                            media_type="text/plain")
        for update in result.updates:
            update.channel_id = spec.id   # a connector answers for its own channel only
            _drop_nul(update)
        for message in result.inbound:
            message.channel_id = spec.id
            _drop_nul(message)
        await gateway.store.apply_status_updates(result.updates)
        await gateway.store.record_inbound(result.inbound, time.time())
        if result.updates or result.inbound:
            gateway.webhook_wake.set()
        metrics.CALLBACKS.labels(kind=spec.kind, outcome="accepted").inc()
        return Response(result.body, status_code=result.status_code,
                        media_type=result.content_type)

    @app.get("/channels/{channel_id}/inbound-media/{ref}", tags=["Providers"],
             summary="A user's media received on a channel, by signed link")
    async def inbound_media(channel_id: int, ref: str, request: Request) -> Response:
        """The ``media-url`` of an incoming-webhook message whose provider keeps the file
        behind the channel's credentials: fetched from the provider when followed."""
        parse_int_field("channel_id", channel_id, maximum=2**31 - 1)
        if not verify_media_signature(settings.secret_key, inbound_media_subject(channel_id, ref),
                                      request.query_params.get("expires", ""),
                                      request.query_params.get("sig", ""), time.time()):
            return Response(b"link expired or not signed", status_code=403,
                            media_type="text/plain")
        spec = await gateway.store.get_channel(channel_id)
        if spec is None:
            return Response(b"no such channel", status_code=404, media_type="text/plain")
        try:
            content_type, data = await gateway.callback_channel(spec).fetch_inbound_media(ref)
        except LookupError as exc:
            return Response(str(exc).encode(), status_code=404, media_type="text/plain")
        except MediaFetchError as exc:
            log.warning("channel %s: inbound media %s: %s", channel_id, ref, exc)
            return Response(str(exc).encode(), status_code=503 if exc.retryable else 502,
                            media_type="text/plain")
        return Response(data, media_type=content_type,
                        headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/media/{media_id}", tags=["Providers"],
             summary="Inline media of a push, for providers, by signed expiring link")
    async def media(media_id: int, request: Request) -> Response:
        parse_int_field("media_id", media_id)
        if not verify_media_signature(settings.secret_key, media_id,
                                      request.query_params.get("expires", ""),
                                      request.query_params.get("sig", ""), time.time()):
            return Response(b"link expired or not signed", status_code=403,
                            media_type="text/plain")
        found = await gateway.store.get_media(media_id)
        if found is None:
            return Response(b"no such media", status_code=404, media_type="text/plain")
        content_type, data = found
        return Response(data, media_type=content_type,
                        headers={"Cache-Control": "private, max-age=3600"})

    app.include_router(device_router(gateway))   # phones: the app's device API, device-*
    app.add_middleware(FastRoutes, routes={"/api/v2/push": push},
                       error_response=error_response)

    # --- operations -------------------------------------------------------------------------
    @app.get("/healthz", tags=["Operations"], summary="Liveness and database reachability")
    async def healthz() -> Response:
        try:
            await gateway.store.ping()
        except StoreUnavailable as exc:
            return Response(orjson.dumps({"status": "error", "database": str(exc)}),
                             status_code=503, media_type=JSON)
        return Response(orjson.dumps({
            "status": "ok", "database": "ok", "version": __version__,
            "dispatcher": gateway.dispatcher is not None,
            # Which process answered, when several share a port (`serve --reuse-port`).
            "pid": os.getpid(),
        }), media_type=JSON)

    @app.get("/metrics", tags=["Operations"], summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def _entries(plan: PushPlan, message_ids: list[int]) -> list[dict[str, Any]]:
    """The answer's ``data``: one item per request entry, in request order."""
    # Hot path (one dict per recipient). Each distinct credit is formatted once (a push's
    # entries mostly cost the same), rows are indexed rather than star-unpacked, and when
    # nothing was refused the accepted items are already in request order: 1.26 → 0.21 ms for
    # 1,000 entries; end to end +9 and +19 % 1,000-recipient pushes/s in two A/Bs, -11 % in
    # a third, inside its spread (docs/benchmarks.md).
    credit_text: dict[int, str] = {}
    accepted: list[dict[str, Any]] = []
    for row, msg_id in zip(plan.accepted, message_ids, strict=False):
        credit = row[8]
        text = credit_text.get(credit)
        if text is None:
            text = credit_text[credit] = format_credits(credit)
        accepted.append({"msg_id": str(msg_id), "number": row[1], "credit": text})
    if not plan.refused:
        return accepted
    items: list[dict[str, Any] | None] = [None] * plan.total_entries
    for row, placed in zip(plan.accepted, accepted, strict=False):
        items[row[0]] = placed
    id_of = {row[0]: msg_id for row, msg_id in zip(plan.accepted, message_ids, strict=False)}
    for refusal in plan.refused:
        item: dict[str, Any] = {"number": refusal.number, "credit": "0",
                                "status": int(refusal.code), "message": refusal.message}
        if refusal.duplicate_of is not None and refusal.duplicate_of in id_of:
            item["duplicate_of"] = str(id_of[refusal.duplicate_of])
        items[refusal.index] = item
    return [item for item in items if item is not None]


_TEXT_FIELDS = ("number", "text", "provider_id", "media_url", "name", "error_code",
                "error_message")


def _drop_nul(record: Any) -> None:
    """Take NUL characters out of a callback record's text: PostgreSQL's text columns refuse
    them, and a user's message may hold one (a 500 would have the provider retry forever)."""
    for name in _TEXT_FIELDS:
        value = getattr(record, name, None)
        if isinstance(value, str) and "\x00" in value:
            setattr(record, name, value.replace("\x00", ""))


def _report_item(row: dict[str, Any]) -> dict[str, Any]:
    # Errors only for a failed or refunded message: a retried one's are in its history.
    failed = State(row["state"]) in ERROR_STATES
    return {
        "msg_id": str(row["msg_id"]),
        "number": row["number"],
        "status": row["status"],
        "state": row["state"],
        "reference_number": row["reference_number"],
        "error_code": row["error_code"] if failed else None,
        "error_message": (row["error_message"] or "") if failed else "",
        "credit": format_credits(row["credit_micro"]),
        "updated_at": row["updated_at"],
    }


async def _multipart(request: Request, body: bytes) -> dict[str, Any]:
    """Parse a multipart form from an already-read body; a form that cannot be parsed (no
    boundary, more than 1,000 fields or files, a broken part) is ``MALFORMED_BODY``."""
    from starlette.exceptions import HTTPException
    from starlette.formparsers import MultiPartException
    from starlette.requests import Request as StarletteRequest

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    replay = StarletteRequest(request.scope, receive)
    try:
        # The body is already within PUSHGATE_MAX_BODY_BYTES: a `data` field may take all of
        # it (Starlette's own default stops fields at 1 MB).
        form = await replay.form(max_part_size=max(len(body), 1))
    except MultiPartException as exc:
        raise ApiError(Code.MALFORMED_BODY, f"multipart form: {exc.message}") from None
    except HTTPException as exc:   # Starlette's wrapping of the same, inside an app
        raise ApiError(Code.MALFORMED_BODY, f"multipart form: {exc.detail}") from None
    try:
        return {key: value for key, value in form.items() if isinstance(value, str)}
    finally:
        await form.close()   # file parts spool to temporary files
