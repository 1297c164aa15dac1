"""A lean HTTP/1.1 keep-alive client for a connector's hot send path (one host, many requests).

Why not httpx there: an ``httpx.AsyncClient`` request costs many times the CPU of this client's
(httpcore's pool polls every pooled socket on each request, and with ``sniffio`` not installed
— anyio 4.11+ no longer brings it — it retries a failing import several times per request), so
with httpx a worker's CPU, not the channels' rates, capped how many messages it sent; this
client comes close to a bare asyncio one (figures: docs/benchmarks.md, bench/http_channel.py).
Connectors reach it through ``channels/transport.py``, which picks it or httpx.

It is a pool of persistent connections, each an asyncio protocol with httptools' response
parser (installed with ``uvicorn[standard]``); a connection the server closes while idle learns
so from its own ``connection_lost`` instead of being polled. It does what a connector's JSON
POST needs and nothing more: one origin (``http`` or ``https``, TLS checked with the context
httpx builds), default headers, a connect timeout and a timeout for the whole request,
``Content-Length``, chunked or close-delimited answers (gzip or deflate decoded), a cap on an
answer's size, connections idle longer than ``keepalive_expiry`` replaced. No redirects,
cookies, proxies or HTTP/2: a connector uses it only when no proxy is configured
(``proxy_configured``) and keeps httpx for everything else.

Errors are httpx's exception types (``httpx.ConnectTimeout``, ``httpx.ReadTimeout``,
``httpx.ConnectError``, ``httpx.RemoteProtocolError``…) and answers (``Http1Response``) have
the reading side of ``httpx.Response`` (``status_code``, ``headers``, ``content``, ``text``,
``json()``), so a connector handles both clients the same way.
"""

from __future__ import annotations

import asyncio
import collections
import re
import ssl
import time
import urllib.parse
import urllib.request
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import httptools
import httpx
import orjson

# Control characters and spaces cannot appear in a request target.
_UNSAFE_IN_TARGET = re.compile(r"[\x00-\x20\x7f]")
_UNSAFE_IN_HEADER = re.compile(r"[\r\n\x00]")
# Answers larger than this are refused (a JSON send answer is a few hundred bytes).
MAX_ANSWER_BYTES = 4 * 1024 * 1024


def proxy_configured() -> bool:
    """Whether the environment names an HTTP proxy (``HTTPS_PROXY`` and the like), which httpx
    honours and this client does not."""
    proxies = urllib.request.getproxies()
    return any(proxies.get(scheme) for scheme in ("http", "https", "all"))


class _Connection(asyncio.Protocol):
    """One persistent connection: one request at a time, answered in order."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = time.monotonic()
        self._waiter: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.size = 0
        self.headers_done = False
        self.complete = False
        self.keep_alive = True
        self.error: Exception | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:       # nothing asked: a server talking out of turn
            self._close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed HTTP answer: {exc}"))

    def eof_received(self) -> bool | None:
        self._lost()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._lost(exc)

    def _lost(self, exc: Exception | None = None) -> None:
        self.closed = True
        if self._waiter is None or self.complete:
            return
        if self.headers_done and not self._has_length():
            self._done()               # an answer delimited by the end of the connection
        elif self.headers_done or self.size:
            self._fail(httpx.RemoteProtocolError("connection closed in the middle of the answer"))
        else:
            self._fail(httpx.RemoteProtocolError(
                "server disconnected without sending a response"
                + (f" ({type(exc).__name__}: {exc})" if exc else "")))

    # --- httptools callbacks ------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_ANSWER_BYTES:
            self._fail(httpx.RemoteProtocolError(f"answer larger than {MAX_ANSWER_BYTES} bytes"))
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        self._done()

    # --- the client side ----------------------------------------------------------------------
    def _has_length(self) -> bool:
        for name, value in self.headers:
            lower = name.lower()
            if lower == b"content-length" or (lower == b"transfer-encoding"
                                              and b"chunked" in value.lower()):
                return True
        return False

    def _done(self) -> None:
        self.complete = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, error: Exception) -> None:
        if self.error is None:                 # the first failure is the one to report
            self.error = error
        self._close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _time_out(self) -> None:
        self._fail(httpx.ReadTimeout("no answer in time"))

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def exchange(self, request: bytes, loop: asyncio.AbstractEventLoop,
                       deadline: float) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Send one request and wait for its whole answer, until ``deadline`` (loop time) at
        most: then ``httpx.ReadTimeout`` and the connection is closed (its answer may still
        come, so it must never serve another request)."""
        if self.transport is None or self.closed:
            raise httpx.RemoteProtocolError("the connection closed before the request")
        self._reset()
        self._waiter = loop.create_future()
        # A plain timer rather than asyncio.timeout(): cheaper, and this runs on every request.
        timer = loop.call_at(deadline, self._time_out)
        try:
            self.transport.write(request)
            await self._waiter
        except BaseException:
            self._close()
            raise
        finally:
            timer.cancel()
            self._waiter = None
        if self.error is not None:
            raise self.error
        if not self.keep_alive:
            self._close()
        self.idle_since = time.monotonic()
        return self.status, self.headers, b"".join(self.body)


class Http1Response:
    """An answer: the part of ``httpx.Response`` connectors read (``status_code``, ``headers``,
    ``content``, ``text``, ``json()``, ``is_success``), without httpx's per-response cost."""

    __slots__ = ("status_code", "content", "url", "_raw_headers", "_headers")

    def __init__(self, status_code: int, raw_headers: list[tuple[bytes, bytes]],
                 content: bytes, url: str) -> None:
        self.status_code = status_code
        self.content = content
        self.url = url
        self._raw_headers = raw_headers
        self._headers: httpx.Headers | None = None

    @property
    def headers(self) -> httpx.Headers:
        if self._headers is None:
            self._headers = httpx.Headers(self._raw_headers)
        return self._headers

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; ``ValueError`` (``orjson.JSONDecodeError``) when it is not."""
        return orjson.loads(self.content)

    def __repr__(self) -> str:
        return f"<Http1Response [{self.status_code}]>"


class Http1Pool:
    """Up to ``max_connections`` keep-alive connections to the origin of ``base_url``; requests
    beyond that wait for a free one. ``timeout`` bounds a whole request (waiting for a
    connection, connecting, sending, the answer); ``connect_timeout`` a new connection."""

    def __init__(self, base_url: str, *, headers: dict[str, str] | None = None,
                 timeout: float = 20.0, connect_timeout: float = 5.0,
                 max_connections: int = 64, keepalive_expiry: float = 5.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        url = urllib.parse.urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = None
        if url.scheme == "https":
            self.ssl = ssl_context or httpx.create_ssl_context()
        self.base_url = base_url.rstrip("/")
        self.base_path = url.path.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        default_port = self.port == (443 if self.ssl else 80)
        self.timeout = timeout
        self.connect_timeout = min(connect_timeout, timeout)
        self.keepalive_expiry = keepalive_expiry
        self.max_connections = max_connections
        self._fixed = _header_lines({"Host": host if default_port else f"{host}:{self.port}",
                                     "Accept": "*/*", "Accept-Encoding": "gzip, deflate",
                                     "User-Agent": "pushgate", **(headers or {})})
        self._idle: collections.deque[_Connection] = collections.deque()
        self._busy = 0                       # requests holding one of the connections
        self._slot_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._all: set[_Connection] = set()
        self.connections_opened = 0
        self._header_cache: dict[tuple[tuple[str, str], ...], bytes] = {}

    async def post(self, path: str, *, content: bytes = b"",
                   headers: dict[str, str] | None = None,
                   before_send: Callable[[], Awaitable[None]] | None = None) -> Http1Response:
        """``httpx.AsyncClient.post``'s shape, for a path under the base URL."""
        return await self.request("POST", path, content, headers, before_send)

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: dict[str, str] | None = None,
                      before_send: Callable[[], Awaitable[None]] | None = None
                      ) -> Http1Response:
        """One request. ``before_send`` is awaited with the connection in hand, right before
        the request is written (a rate limiter's permit: a connection still being opened must
        not delay a request past its permit); its wait does not count against ``timeout``."""
        target = self.base_path + path
        if target[:1] != "/" or _UNSAFE_IN_TARGET.search(target):
            raise httpx.InvalidURL(f"not a request path: {target!r}")
        data = (f"{method} {target} HTTP/1.1\r\n".encode("latin-1") + self._fixed
                + (self._extra_headers(headers) if headers else b"")
                + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        if self._busy < self.max_connections and not self._slot_waiters:
            self._busy += 1
        else:
            await self._wait_for_slot(loop, deadline, f"{method} {self.base_url}{path}")
        connection: _Connection | None = None
        try:
            connection = self._idle_connection() or await self._connect(loop, deadline)
            if before_send is not None:
                waiting_since = loop.time()
                await before_send()
                deadline += loop.time() - waiting_since
                if connection.closed:   # the server let it go meanwhile: another one
                    self._all.discard(connection)
                    connection = self._idle_connection() or await self._connect(loop, deadline)
            try:
                status, raw_headers, content = await connection.exchange(data, loop, deadline)
            except httpx.ReadTimeout:
                raise httpx.ReadTimeout(f"{method} {self.base_url}{path}: no answer within "
                                        f"{self.timeout:g}s") from None
        finally:
            if connection is not None:
                if connection.closed:
                    self._all.discard(connection)
                else:
                    self._idle.append(connection)
            self._release_slot()
        return _response(status, raw_headers, content, self.base_url + path)

    async def _wait_for_slot(self, loop: asyncio.AbstractEventLoop, deadline: float,
                             what: str) -> None:
        """All ``max_connections`` are busy: wait for one (first come, first served)."""
        waiter: asyncio.Future[None] = loop.create_future()
        self._slot_waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._release_slot()         # handed a slot just as this gave up: pass it on
            if isinstance(exc, TimeoutError):
                raise httpx.PoolTimeout(f"{what}: no free connection within "
                                        f"{self.timeout:g}s") from None
            raise

    def _release_slot(self) -> None:
        """Hand the slot to the oldest waiter, or free it."""
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._busy -= 1

    def _extra_headers(self, headers: dict[str, str]) -> bytes:
        """A request's own header lines, encoded and checked once per distinct set."""
        key = tuple(headers.items())
        lines = self._header_cache.get(key)
        if lines is None:
            if len(self._header_cache) >= 100:
                self._header_cache.clear()
            lines = self._header_cache[key] = _header_lines(headers)
        return lines

    def _idle_connection(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()          # the most recently used is the warmest
            if not connection.closed and now - connection.idle_since < self.keepalive_expiry:
                return connection
            connection._close()
            self._all.discard(connection)
        return None

    async def _connect(self, loop: asyncio.AbstractEventLoop, deadline: float) -> _Connection:
        timeout = max(0.0, min(self.connect_timeout, deadline - loop.time()))
        try:
            async with asyncio.timeout(timeout):
                _transport, connection = await loop.create_connection(
                    _Connection, self.host, self.port, ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None)
        except TimeoutError:
            raise httpx.ConnectTimeout(
                f"connecting to {self.host}:{self.port} took over {timeout:g}s") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from exc
        self._all.add(connection)
        self.connections_opened += 1
        return connection

    async def aclose(self) -> None:
        for connection in list(self._all):
            connection._close()
        self._all.clear()
        self._idle.clear()


def _header_lines(headers: dict[str, str]) -> bytes:
    lines = []
    for name, value in headers.items():
        if not name or ":" in name or _UNSAFE_IN_HEADER.search(name + value):
            raise ValueError(f"header {name!r} holds a character HTTP does not allow")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1")


def _response(status: int, raw_headers: list[tuple[bytes, bytes]], content: bytes,
              url: str) -> Http1Response:
    encoding = next((value.strip().lower() for name, value in raw_headers
                     if name.lower() == b"content-encoding"), b"")
    if encoding and encoding != b"identity" and content:
        content = _decode(encoding, content)
        raw_headers = [(n, v) for n, v in raw_headers
                       if n.lower() not in (b"content-encoding", b"content-length")]
    return Http1Response(status, raw_headers, content, url)


def _decode(encoding: bytes, content: bytes) -> bytes:
    try:
        if encoding == b"gzip":
            return zlib.decompress(content, 16 + zlib.MAX_WBITS)
        if encoding == b"deflate":
            try:
                return zlib.decompress(content)
            except zlib.error:
                return zlib.decompress(content, -zlib.MAX_WBITS)
    except zlib.error as exc:
        raise httpx.DecodingError(f"cannot decode a {encoding.decode()} answer: {exc}") from exc
    raise httpx.DecodingError(f"unsupported Content-Encoding {encoding.decode()!r}")
