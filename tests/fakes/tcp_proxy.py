"""A TCP proxy on 127.0.0.1 that a test can cut, to play a database server going away.

Point a process's database URL at ``proxy.port`` instead of the server's. ``cut()`` aborts
every open connection (the client sees a reset, as when the server dies) and stops listening
(new connects are refused, as when nothing listens on the port); ``restore()`` listens on the
same port again. It forwards bytes unchanged, so the client talks to the real server in its
own wire protocol.

The proxy runs its own asyncio loop in a daemon thread; the test drives it from its own
thread. Bounded: at most ``max_connections`` open at once (more are refused), 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

CHUNK = 65536


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1",
                 max_connections: int = 200) -> None:
        self.target = (target_host, target_port)
        self.max_connections = max_connections
        self.port = 0
        # Connections accepted over the proxy's life, and those aborted by cut().
        self.accepted = 0
        self.aborted = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy",
                                        daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    # --- driven from the test's thread ------------------------------------------------------
    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def cut(self) -> int:
        """Refuse new connections and reset the open ones; returns how many were reset."""
        return self._call(self._cut())

    def restore(self) -> None:
        """Accept connections again, on the same port."""
        self._call(self._listen())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    @property
    def listening(self) -> bool:
        return self._server is not None

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # --- on the proxy's loop ----------------------------------------------------------------
    async def _listen(self) -> None:
        if self._server is not None:
            return
        # The same port each time, so the client's URL stays valid across a cut.
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True,
            family=socket.AF_INET)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _cut(self) -> int:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        aborted = 0
        for writer in list(self._open):
            # abort(), not close(): no orderly FIN after pending data, the peer gets a reset.
            writer.transport.abort()
            aborted += 1
        self._open.clear()
        self.aborted += aborted
        if server is not None:
            await server.wait_closed()
        return aborted

    async def _handle(self, client_r: asyncio.StreamReader,
                      client_w: asyncio.StreamWriter) -> None:
        if self._server is None or len(self._open) >= 2 * self.max_connections:
            client_w.transport.abort()
            return
        self.accepted += 1
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.transport.abort()
            return
        self._open.update((client_w, server_w))
        try:
            await asyncio.gather(self._pump(client_r, server_w), self._pump(server_r, client_w))
        finally:
            for writer in (client_w, server_w):
                self._open.discard(writer)
                writer.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # One side ended: end the other, so neither end waits on a half-dead pair.
            writer.transport.abort()
