"""Operations: ``/healthz`` (liveness and database reachability) and ``/metrics``
(Prometheus)."""

from __future__ import annotations

import os

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from pushgate import __version__
from pushgate.api.answers import JSON
from pushgate.api.state import gateway_of
from pushgate.metrics import CONTENT_TYPE_LATEST, exposition
from pushgate.store.errors import StoreUnavailable

router = APIRouter()


@router.get("/healthz", tags=["Operations"], summary="Liveness and database reachability")
async def healthz(request: Request) -> Response:
    gateway = gateway_of(request)
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


@router.get("/metrics", tags=["Operations"], summary="Prometheus metrics")
async def prometheus(request: Request) -> Response:
    # Which process answered, as in /healthz: with `serve --workers N` any of them shows the
    # counters of all.
    return Response(await exposition(gateway_of(request).store_gauges),
                    media_type=CONTENT_TYPE_LATEST, headers={"X-Pushgate-Pid": str(os.getpid())})
