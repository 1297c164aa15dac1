"""`pushgate serve` and `pushgate worker`: the processes that run the gateway."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Coroutine
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from pushgate.cli.common import fail
from pushgate.config import Settings
from pushgate.logs import setup_logging
from pushgate.store.errors import StoreUnavailable
from pushgate.store.factory import store_for_url

log = logging.getLogger("pushgate")


def serve(
    host: str = typer.Option(None, help="Address to listen on (PUSHGATE_HOST)."),
    port: int = typer.Option(None, help="Port (PUSHGATE_PORT)."),
    api_only: bool = typer.Option(False, "--api-only",
                                  help="Serve the API only; run `pushgate worker` elsewhere."),
    reuse_port: bool = typer.Option(
        False, "--reuse-port",
        help="Share the port with other `pushgate serve --reuse-port` processes you start"
             " (SO_REUSEPORT): the kernel spreads connections among them. With it --workers"
             " defaults to 1."),
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1,
        help="API processes on the port (default: one per CPU). The dispatcher and webhook"
             " deliverer run in one of them; the processes stop together.")] = None,
) -> None:
    """Run the HTTP API, and (unless --api-only) the dispatcher and webhook deliverer."""
    try:
        settings = Settings()
    except ValueError as exc:   # e.g. PUSHGATE_TRUSTED_PROXIES holding a host name
        fail(f"invalid setting: {exc}")
        return
    setup_logging(settings)
    host = host or settings.host
    port = port or settings.port
    if workers is None:
        workers = 1 if reuse_port else default_workers()
    if workers > 1:
        from pushgate.cli.processes import serve_processes

        try:
            asyncio.run(_check_store(settings.database_url))
        except StoreUnavailable as exc:
            fail(str(exc))
            return
        code = serve_processes(host, port, workers, api_only=api_only, share=reuse_port)
        if code:
            raise typer.Exit(code)
        return
    _serve_one(settings, host, port, api_only=api_only, reuse_port=reuse_port)


def default_workers() -> int:
    """One API process per CPU this process may run on: several processes on one port gain on
    SQLite too, their writers taking turns on the store's lock file (docs/benchmarks.md)."""
    if not hasattr(socket, "SO_REUSEPORT"):
        return 1
    try:
        return len(os.sched_getaffinity(0))   # a container's cpuset, not the host's count
    except AttributeError:
        return os.cpu_count() or 1


def _serve_one(settings: Settings, host: str, port: int, *, api_only: bool,
               reuse_port: bool) -> None:
    import uvicorn

    from pushgate.api.gateway import create_app
    from pushgate.api.server import ReadyServer, uvicorn_options
    from pushgate.dispatch.worker import new_worker_id

    sock = None
    if reuse_port:
        try:
            sock = _reuse_port_socket(host, port)
        except OSError as exc:
            fail(f"cannot listen on {host}:{port} with --reuse-port: {exc}")
            return
    if not api_only and not settings.worker_id:
        # Chosen here rather than by the app, so the ready line can name it.
        settings = settings.model_copy(update={"worker_id": new_worker_id()})
    try:
        # Opened once here so a database that cannot be used is one line and exit 1, not
        # uvicorn's traceback of a failed startup.
        asyncio.run(_check_store(settings.database_url))
        application = create_app(settings, run_workers=not api_only)
    except StoreUnavailable as exc:
        fail(str(exc))
        return
    role = "API only" if api_only else f"dispatcher and webhooks as worker {settings.worker_id}"
    server = ReadyServer(uvicorn.Config(application, host=host, port=port,
                                        **uvicorn_options(settings)),
                         ready=f"listening on http://{host}:{port} (pid {os.getpid()}, {role},"
                               f" store {store_location(settings.database_url)})")
    server.run(sockets=None if sock is None else [sock])


def store_location(url: str) -> str:
    """The store's kind and place for a log line: never the user name, password or query."""
    parts = urlsplit(url)
    if parts.scheme.startswith("sqlite"):
        return f"sqlite {url.split(':///', 1)[-1] if ':///' in url else url}"
    place = parts.hostname or ""
    if parts.port:
        place += f":{parts.port}"
    return f"{parts.scheme} {place}{parts.path}"


async def _check_store(url: str) -> None:
    store = store_for_url(url)
    await store.open()
    await store.close()


def _reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port that other processes may bind too (SO_REUSEPORT)."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise OSError("this system has no SO_REUSEPORT")
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock


def worker(
    metrics_port: int = typer.Option(
        0, "--metrics-port", min=0,
        help="Serve this process's Prometheus metrics on PUSHGATE_HOST:PORT/metrics (0: not"
             " served; its counters then reach /metrics only through a shared"
             " PROMETHEUS_MULTIPROC_DIR)."),
) -> None:
    """Run the dispatcher and webhook deliverer without the API (stops cleanly on SIGTERM)."""
    from pushgate.dispatch.worker import new_worker_id
    from pushgate.metrics import flush_tallies_every
    from pushgate.webhooks.deliverer import DeliveryWake
    from pushgate.wiring import build_deliverer, build_dispatcher

    try:
        settings = Settings()
    except ValueError as exc:
        fail(f"invalid setting: {exc}")
        return
    setup_logging(settings)
    if metrics_port:
        from prometheus_client import start_http_server

        from pushgate.metrics import process_registry

        try:
            start_http_server(metrics_port, settings.host, registry=process_registry())
        except OSError as exc:
            fail(f"cannot serve metrics on {settings.host}:{metrics_port}: {exc}")
            return

    async def run() -> None:
        store = store_for_url(settings.database_url)
        await store.open()
        worker_id = settings.worker_id or new_worker_id()
        wake = DeliveryWake()
        dispatcher = build_dispatcher(settings, store, worker_id, wake)
        deliverer = build_deliverer(settings, store, worker_id, wake)
        loop = asyncio.get_running_loop()

        def stop_both() -> None:
            dispatcher.stop()
            deliverer.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop_both)
        log.info("worker %s ready (pid %d, store %s)", worker_id, os.getpid(),
                 store_location(settings.database_url))
        # The per-message counts kept in tallies reach the metrics every second.
        tallies = asyncio.create_task(flush_tallies_every(), name="metrics-tallies")
        try:
            await asyncio.gather(dispatcher.run(), deliverer.run())
        finally:
            tallies.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tallies
            await store.close()

    try:
        _run_fast(run())
    except StoreUnavailable as exc:
        fail(str(exc))


def _run_fast(main: Coroutine[Any, Any, None]) -> None:
    """Run the worker on uvloop where installed (``uvicorn[standard]`` brings it, as it does
    for ``serve``): less CPU per connector send than asyncio's own loop (bench/http_channel.py,
    docs/benchmarks.md)."""
    try:
        import uvloop
    except ImportError:   # e.g. Windows, where uvicorn[standard] installs no uvloop
        asyncio.run(main)
        return
    uvloop.run(main)
