"""The HTTP application: the routes of every area assembled, error mapping, and the lifespan
that starts the dispatcher and webhook deliverer unless API-only.

Each area's routes live at module level in their own module (``push``, ``cancel``, ``reports``,
``sandbox``, ``callbacks``, ``media``, ``devices``, ``ops``) and read the shared ``Gateway``
(``api/state.py``) from the application; ``create_app`` only puts them together, and serves
Picky's endpoints at each base path Picky clients use (``add_picky_aliases``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from functools import partial

from fastapi import APIRouter, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Match

from pushgate import __version__
from pushgate.api import (
    callbacks,
    campaign,
    cancel,
    devices,
    media,
    openapi,
    ops,
    optouts,
    push,
    reports,
    sandbox,
)
from pushgate.api.answers import error_answer, error_response
from pushgate.api.fastpush import PushApp
from pushgate.api.routing import FastRoutes
from pushgate.api.state import Gateway, gateway_of
from pushgate.config import Settings
from pushgate.core.errors import ApiError, Code
from pushgate.store.base import Store
from pushgate.store.errors import StoreUnavailable


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

    # FastAPI's native OpenTelemetry hook asks the global providers on every request;
    # pushgate's own metrics are Prometheus counters.
    app = PushApp(title="pushgate", version=__version__, lifespan=lifespan,
                  description=openapi.DESCRIPTION,
                  telemetry={"tracing": False, "metrics": False, "logs": False},
                  # Served by ui/app.py with the package's own copies of their assets.
                  docs_url=None, redoc_url=None)
    app.state.gateway = gateway
    app.push_paths = frozenset(picky_paths("push"))
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StoreUnavailable, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _internal_error)
    for router in (push.router, campaign.router, cancel.router, optouts.router, reports.router,
                   sandbox.router, callbacks.router, media.router,
                   devices.phone_router(settings.mobile_api_prefix), devices.picky_router,
                   ops.router):
        add_routes(app, router)
    add_picky_aliases(app)
    # The dashboard (its session middleware on /ui only), `/` sending there, /docs, /redoc.
    from pushgate.ui.app import mount_ui

    mount_ui(app, gateway)
    app.add_middleware(FastRoutes, routes={path: push.push for path in picky_paths("push")},
                       error_response=partial(error_response,
                                              always_200=settings.always_http_200, store=store))
    return app


def add_routes(app: FastAPI, router: APIRouter) -> None:
    """Put ``router``'s routes on the application's own router, in order.

    Not ``include_router``: FastAPI matches an included router's routes through a layer of
    per-request wrappers, which the routes here have no use for (no prefix, dependencies or
    overrides of their own); on the application's router they match as before the split.
    """
    app.router.routes.extend(router.routes)


# Picky's endpoints pushgate serves, by their name under a base URL. pushgate's own
# (`push-cancel`, `push-csv`, `optouts`, `pushes`, `messages`, `sandbox/inbox`,
# `sandbox/inbound`) are not Picky's, so no Picky client sends them to an older base: they
# answer only under `/api/v2`.
PICKY_ENDPOINTS = ("push", "delivery-report", "device-status", "device-action")
# Every base URL Picky clients use: V4's is the canonical one (in the OpenAPI document); V3's
# older `/app/api/v2` is the same API.
PICKY_BASES = ("/api/v2", "/app/api/v2")
# One client of Picky's v1 API asks for the device status at its old path (same body).
PICKY_V1 = {"device-status": ("/api/v1", "/app/api/v1")}


def picky_paths(endpoint: str) -> list[str]:
    """Every path Picky clients send ``endpoint`` to, the canonical one first."""
    return ([f"{base}/{endpoint}" for base in PICKY_BASES]
            + [f"{base}/{endpoint}" for base in PICKY_V1.get(endpoint, ())])


def add_picky_aliases(app: FastAPI) -> None:
    """Serve each Picky endpoint's route at its other paths too, with the same endpoint and
    route class; only the canonical path is in the OpenAPI document.

    Aliases are routes of their own rather than a path-rewriting middleware, so no request
    pays for them: the canonical paths match exactly as before.
    """
    for endpoint in PICKY_ENDPOINTS:
        canonical, *aliases = picky_paths(endpoint)
        routes = [r for r in app.router.routes
                  if isinstance(r, APIRoute) and r.path == canonical]
        if not routes:
            raise RuntimeError(f"no route serves Picky's {canonical}")
        for route in routes:
            for alias in aliases:
                app.router.add_api_route(
                    alias, route.endpoint, methods=sorted(route.methods or ()),
                    route_class_override=type(route), status_code=route.status_code,
                    response_class=route.response_class, summary=route.summary,
                    tags=route.tags, include_in_schema=False)


async def _api_error(request: Request, exc: Exception) -> Response:
    gateway = gateway_of(request)
    answered = error_response(exc, gateway.settings.always_http_200, gateway.store)
    assert answered is not None
    return answered


# HTTP refusals other than 404 and 405 that have a code of their own.
_HTTP_CODES = {400: Code.MALFORMED_BODY, 401: Code.AUTH_FAILED, 413: Code.BODY_TOO_LARGE,
               429: Code.RATE_LIMITED, 503: Code.UNAVAILABLE}


def in_envelope(request: Request) -> bool:
    """Whether every answer of ``request``'s path is Picky's envelope: under ``/api/`` (and
    Picky's older ``/app/api/``), except the phones' API, whose app reads its own shape."""
    path = request.url.path
    if not path.startswith(("/api/", "/app/api/")):
        return False
    mobile = gateway_of(request).settings.mobile_api_prefix.rstrip("/")
    return not (path == mobile or path.startswith(mobile + "/"))


def allowed_methods(request: Request) -> list[str]:
    """The methods of every route with ``request``'s path (Starlette's 405 names only the
    first route's)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, BaseRoute) and route.matches(request.scope)[0] is Match.PARTIAL:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


async def _http_error(request: Request, exc: Exception) -> Response:
    # The router's own refusals (no such path, a method the path does not take) in
    # pushgate's shape everywhere, as they always were; any other HTTPException under /api/.
    assert isinstance(exc, StarletteHTTPException)
    always_200 = gateway_of(request).settings.always_http_200
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        error = ApiError(Code.NOT_FOUND, "no such route")
    elif exc.status_code == 405:
        allowed = allowed_methods(request) or [headers.get("Allow", "")]
        headers["Allow"] = ", ".join(allowed)
        error = ApiError(Code.METHOD_NOT_ALLOWED,
                         f"{request.method} is not one of {headers['Allow']}")
    elif in_envelope(request):
        code = _HTTP_CODES.get(exc.status_code, Code.REQUEST_REFUSED)
        response = error_answer(ApiError(code, str(exc.detail)), always_200)
        if not always_200:
            response.status_code = exc.status_code
        response.headers.update(headers)
        return response
    else:
        return await http_exception_handler(request, exc)
    response = error_answer(error, always_200)
    response.headers.update(headers)
    return response


async def _internal_error(request: Request, exc: Exception) -> Response:
    # Starlette's last resort (it logs the traceback and re-raises after this answers).
    if not in_envelope(request):
        return PlainTextResponse("Internal Server Error", status_code=500)
    return error_answer(ApiError(Code.INTERNAL_ERROR),
                        gateway_of(request).settings.always_http_200)


async def _validation_error(request: Request, exc: Exception) -> Response:
    # Path and query parameters FastAPI checks itself: answer in pushgate's shape too.
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(f"`{e['loc'][-1]}`: {e['msg']}" for e in exc.errors())
    return error_answer(ApiError(Code.INVALID_FIELD, problems),
                        gateway_of(request).settings.always_http_200)
