"""`pushgate serve` and `pushgate worker`: the processes that run the gateway."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Coroutine
from typing import Any

import typer

from pushgate.cli.common import fail, setup_logging
from pushgate.config import Settings
from pushgate.store.errors import StoreUnavailable
from pushgate.store.factory import store_for_url


def serve(
    host: str = typer.Option(None, help="Address to listen on (PUSHGATE_HOST)."),
    port: int = typer.Option(None, help="Port (PUSHGATE_PORT)."),
    api_only: bool = typer.Option(False, "--api-only",
                                  help="Serve the API only; run `pushgate worker` elsewhere."),
    reuse_port: bool = typer.Option(
        False, "--reuse-port",
        help="Share the port with other `pushgate serve --reuse-port` processes (SO_REUSEPORT):"
             " the kernel spreads connections among them. One process accepts only as fast"
             " as one core runs Python; add `--api-only` ones to use more cores."),
) -> None:
    """Run the HTTP API, and (unless --api-only) the dispatcher and webhook deliverer."""
    import uvicorn

    from pushgate.api.gateway import create_app
    from pushgate.api.server import uvicorn_options

    try:
        settings = Settings()
    except ValueError as exc:   # e.g. PUSHGATE_TRUSTED_PROXIES holding a host name
        fail(f"invalid setting: {exc}")
        return
    setup_logging()
    host = host or settings.host
    port = port or settings.port
    sock = None
    if reuse_port:
        try:
            sock = _reuse_port_socket(host, port)
        except OSError as exc:
            fail(f"cannot listen on {host}:{port} with --reuse-port: {exc}")
            return
    try:
        # Opened once here so a database that cannot be used is one line and exit 1, not
        # uvicorn's traceback of a failed startup.
        asyncio.run(_check_store(settings.database_url))
        application = create_app(settings, run_workers=not api_only)
    except StoreUnavailable as exc:
        fail(str(exc))
        return
    options = uvicorn_options(settings)
    if sock is None:
        uvicorn.run(application, host=host, port=port, **options)
    else:
        uvicorn.Server(uvicorn.Config(application, host=host, port=port, **options)).run(
            sockets=[sock])


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


def worker() -> None:
    """Run the dispatcher and webhook deliverer without the API (stops cleanly on SIGTERM)."""
    from pushgate.dispatch.worker import new_worker_id
    from pushgate.wiring import build_deliverer, build_dispatcher

    settings = Settings()
    setup_logging()

    async def run() -> None:
        store = store_for_url(settings.database_url)
        await store.open()
        worker_id = settings.worker_id or new_worker_id()
        wake = asyncio.Event()
        dispatcher = build_dispatcher(settings, store, worker_id, wake)
        deliverer = build_deliverer(settings, store, worker_id, wake)
        loop = asyncio.get_running_loop()

        def stop_both() -> None:
            dispatcher.stop()
            deliverer.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop_both)
        logging.getLogger("pushgate").info("worker %s started", worker_id)
        try:
            await asyncio.gather(dispatcher.run(), deliverer.run())
        finally:
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
