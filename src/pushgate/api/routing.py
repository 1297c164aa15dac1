"""How the hot routes skip FastAPI's layers: ``RawRoute`` (no dependency solving, no body
reading before the endpoint) and ``FastRoutes`` (POSTs to named paths go straight to their
endpoint, before Starlette's middleware and route matching).

Both exist for the single-push path (docs/benchmarks.md has the measurements); the routes
they serve stay registered, so the OpenAPI document still lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from starlette.responses import Response

Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class RawRoute(APIRoute):
    """A route whose endpoint takes the request and returns its response by itself.

    FastAPI's own handler solves the endpoint's dependencies and reads the body before calling
    it; for an endpoint that takes nothing but the request (it decodes the body with msgspec)
    that is pure overhead on every single-recipient push (docs/benchmarks.md). The route keeps
    its place in the OpenAPI document.
    """

    def get_route_handler(self) -> Endpoint:
        return self.endpoint


def raw_post(router: APIRouter, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
    """Register the decorated endpoint as a ``RawRoute`` for POSTs to ``path``."""
    def register(endpoint: Endpoint) -> Endpoint:
        router.add_api_route(path, endpoint, methods=["POST"], route_class_override=RawRoute,
                             **options)
        return endpoint
    return register


class FastRoutes:
    """Pure ASGI middleware: POSTs to the hot paths go straight to their endpoint.

    Between the server and an endpoint Starlette and FastAPI put exception telemetry, body
    limits, the exception middleware, exit stacks and route matching: a large share of the
    event loop's time per single-recipient push (docs/benchmarks.md). The endpoints named
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
