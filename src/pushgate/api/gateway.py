"""The HTTP application: the routes of every area assembled, error mapping, and the lifespan
that starts the dispatcher and webhook deliverer unless API-only.

Each area's routes live at module level in their own module (``push``, ``reports``,
``callbacks``, ``media``, ``devices``, ``ops``) and read the shared ``Gateway``
(``api/state.py``) from the application; ``create_app`` only puts them together.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from functools import partial

from fastapi import APIRouter, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from pushgate import __version__
from pushgate.api import callbacks, devices, media, openapi, ops, push, reports
from pushgate.api.answers import error_answer, error_response
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
    app = FastAPI(title="pushgate", version=__version__, lifespan=lifespan,
                  description=openapi.DESCRIPTION,
                  telemetry={"tracing": False, "metrics": False, "logs": False})
    app.state.gateway = gateway
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StoreUnavailable, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for router in (push.router, reports.router, callbacks.router, media.router,
                   devices.phone_router(settings.mobile_api_prefix), devices.picky_router,
                   ops.router):
        add_routes(app, router)
    app.add_middleware(FastRoutes, routes={"/api/v2/push": push.push},
                       error_response=partial(error_response,
                                              always_200=settings.always_http_200))
    return app


def add_routes(app: FastAPI, router: APIRouter) -> None:
    """Put ``router``'s routes on the application's own router, in order.

    Not ``include_router``: FastAPI matches an included router's routes through a layer of
    per-request wrappers, which the routes here have no use for (no prefix, dependencies or
    overrides of their own); on the application's router they match as before the split.
    """
    app.router.routes.extend(router.routes)


async def _api_error(request: Request, exc: Exception) -> Response:
    answered = error_response(exc, gateway_of(request).settings.always_http_200)
    assert answered is not None
    return answered


async def _http_error(request: Request, exc: Exception) -> Response:
    # The router's own refusals (no such path, a method the path does not take) in
    # pushgate's shape too, rather than Starlette's {"detail": ...}.
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        error = ApiError(Code.NOT_FOUND, "no such route")
    elif exc.status_code == 405:
        error = ApiError(Code.METHOD_NOT_ALLOWED, f"{request.method} is not one of "
                         f"{(exc.headers or {}).get('Allow', 'the methods of this route')}")
    else:
        return await http_exception_handler(request, exc)
    response = error_answer(error, gateway_of(request).settings.always_http_200)
    response.headers.update(exc.headers or {})
    return response


async def _validation_error(request: Request, exc: Exception) -> Response:
    # Path and query parameters FastAPI checks itself: answer in pushgate's shape too.
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(f"`{e['loc'][-1]}`: {e['msg']}" for e in exc.errors())
    return error_answer(ApiError(Code.INVALID_FIELD, problems),
                        gateway_of(request).settings.always_http_200)
