"""How ``pushgate serve`` runs uvicorn: its options from the settings, and an HTTP protocol that
closes connections which take too long to send a request.

uvicorn bounds how long an idle connection waits *between* requests (``timeout_keep_alive``),
but not how long a client may take to send one: a connection that sends nothing, or a byte of
headers every few seconds, stays open for ever, each holding a socket, a file descriptor and a
parser (50 such clients all stayed open). ``ReadTimeoutProtocol`` gives every request a deadline:

- its headers must be complete ``read_timeout`` seconds after the connection opened (the first
  request) or after the request's first byte (a later one on a kept-alive connection);
- its body has as long again, plus one second per ``BODY_BYTES_PER_SECOND`` received, so an
  upload that keeps flowing at that rate is never cut, whatever its size, while a trickle is;
- while the server itself has stopped reading (flow control: the app has not taken the body it
  was given yet, or a pipelined request waits its turn) the clock does not count against the
  client.

A connection past its deadline is closed. Between requests the keep-alive timeout applies as
before. Proxy headers: uvicorn believes ``X-Forwarded-For`` from 127.0.0.1 (or
``FORWARDED_ALLOW_IPS``) unless told otherwise; ``serve`` believes them only from
``PUSHGATE_TRUSTED_PROXIES``, and from nobody when that is empty.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pushgate.config import Settings
from pushgate.logs import logging_config

log = logging.getLogger("pushgate.api")

# A body arriving at least this fast never runs out of time (64 KiB/s: a 64 MB push takes
# ~17 minutes at that rate, while a byte every few seconds is cut after read_timeout).
BODY_BYTES_PER_SECOND = 64 * 1024


class ReadTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection whose request is not in on time."""

    read_timeout: ClassVar[float] = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Loop time by which the request's headers (then its body, plus the allowance for the
        # bytes received) must be in; None while no request is being read.
        self._read_deadline: float | None = None
        self._body_received = 0
        self._read_timer: asyncio.TimerHandle | None = None
        # The response cycles' writer (``HeadWithBody``), one per connection.
        self._writes: HeadWithBody | None = None

    # -- uvicorn's hooks -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._writes = HeadWithBody(transport, self.loop)
        self._expect_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._read_deadline = None
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._read_deadline is None:   # a later request on a kept-alive connection
            self._expect_request()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and self._writes is not None and cycle.transport is self.transport:
            cycle.transport = self._writes  # type: ignore[assignment]
        if self._read_deadline is not None:   # the body's turn: a fresh read_timeout
            self._read_deadline = self.loop.time() + self.read_timeout

    def on_body(self, body: bytes) -> None:
        self._body_received += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._request_read()
        super().on_message_complete()

    # -- the deadline --------------------------------------------------------------------------

    def _expect_request(self) -> None:
        self._read_deadline = self.loop.time() + self.read_timeout
        self._body_received = 0
        # One timer at a time, left to run out rather than cancelled per request: a request
        # costs two attribute writes, not a new timer, and the timer, when it fires,
        # follows the deadline of whatever request is being read then, if any.
        if self._read_timer is None:
            self._read_timer = self.loop.call_at(self._read_deadline, self._check_deadline)

    def _request_read(self) -> None:
        self._read_deadline = None

    def _check_deadline(self) -> None:
        self._read_timer = None
        if self._read_deadline is None or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused:
            # We are not reading: the client cannot be late meanwhile.
            self._read_deadline += self.read_timeout
        deadline = self._read_deadline + self._body_received / BODY_BYTES_PER_SECOND
        if now < deadline:
            self._read_timer = self.loop.call_at(deadline, self._check_deadline)
            return
        log.debug("closing a connection from %s: request not received within %g s",
                  self.client, self.read_timeout)
        self._read_deadline = None
        self.transport.close()


class HeadWithBody:
    """What a request's response cycle writes to: its response head goes out with the first
    body chunk in one ``write``.

    uvicorn writes a response's head and its body with a ``write`` each, two system calls and
    two TCP segments for every small answer; on single-recipient pushes those two writes
    were the largest single item of the event loop's profile (``bench/single.py``,
    docs/benchmarks.md). A head is held only until the body's first chunk, or until the
    loop's next turn if the body does not follow at once (an event stream's head, an answer
    whose body waits for something), so nothing is delayed longer than a loop iteration.
    """

    __slots__ = ("transport", "loop", "held")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.loop = loop
        self.held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self.held
        if held is not None:
            self.held = None
            self.transport.write(held + data)
        elif data.startswith(b"HTTP/1.1 ") and data.endswith(b"\r\n\r\n") \
                and not data.startswith(b"HTTP/1.1 100 "):
            self.held = data
            self.loop.call_soon(self.flush)
        else:
            self.transport.write(data)

    def flush(self) -> None:
        held = self.held
        if held is not None:
            self.held = None
            self.transport.write(held)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def read_timeout_protocol(seconds: float) -> type[ReadTimeoutProtocol]:
    """``ReadTimeoutProtocol`` with ``seconds`` (uvicorn makes the protocol objects itself)."""
    return type("ReadTimeoutProtocol", (ReadTimeoutProtocol,), {"read_timeout": seconds})


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The options ``serve`` gives uvicorn (besides host, port and socket)."""
    from pushgate.api.pushproto import push_protocol

    proxies = settings.trusted_proxy_list()
    return {
        # The same logging as the rest of the process (text or JSON lines); log_level None
        # leaves the levels to that configuration.
        "log_config": logging_config(settings), "log_level": None,
        "access_log": settings.access_log,
        # Phones keep event streams open: give them 5 s to close on SIGTERM, not forever.
        "timeout_graceful_shutdown": 5,
        "timeout_keep_alive": settings.keep_alive_seconds,
        # ReadTimeoutProtocol answering plain JSON pushes itself (api/pushproto.py).
        "http": push_protocol(settings.read_timeout_seconds),
        # Never uvicorn's default (127.0.0.1, or FORWARDED_ALLOW_IPS): a process on this host
        # could otherwise claim any client address.
        "proxy_headers": bool(proxies),
        "forwarded_allow_ips": proxies,
    }


class ReadyServer(uvicorn.Server):
    """uvicorn's server, logging one line once it listens (uvicorn's own startup lines stay
    below the WARNING level ``serve`` gives its loggers)."""

    def __init__(self, config: uvicorn.Config, ready: str) -> None:
        super().__init__(config)
        self.ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            log.info("%s", self.ready)
