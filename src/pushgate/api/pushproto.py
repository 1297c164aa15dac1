"""The push fast path at the HTTP protocol: a plain JSON push answered from the parser's
callbacks, without uvicorn's per-request ASGI cycle.

``PushProtocol`` is the protocol ``serve`` gives uvicorn (``ReadTimeoutProtocol`` with this
added). This is hand-written rather than left to uvicorn because, for a one-recipient push,
uvicorn's per-request cycle (a ``RequestResponseCycle``, an ``asyncio.Event``, the scope, the
ASGI ``receive``/``send`` messages, a task started per request) was measured as the largest
remaining item of the event loop's time per push (``bench/single.py``,
docs/benchmarks.md). Here such a request costs one small object and one task.

The protocol takes a request only when the ASGI fast path (``api/fastpush.py``) would, and
only when nothing uvicorn does on the way matters to it:

- ``POST`` to a push path, exactly (no query string, no percent-escapes), HTTP/1.1;
- ``Content-Type: application/json``, no header of ``fastpush.FALLBACK_HEADERS``;
- a ``Content-Length`` within ``PUSHGATE_MAX_BODY_BYTES`` (a longer one is refused by the
  normal path, with its answer), no ``Transfer-Encoding``, no ``Expect``, no ``Upgrade``;
- no ``X-Forwarded-For``/``-Proto`` when uvicorn's proxy headers middleware is on (it would
  change the client's address);
- no request of the connection still being answered (a pipelined request waits its turn in
  uvicorn's queue, as any other; the one answered here starts that queue when written).

Everything else goes to uvicorn unchanged. The answer is built by ``fastpush.push_response``
(the route's ``answer_push``, its error mapping and its metrics) and written as uvicorn
writes it: its status line, its default headers (``date``, ``server``), the answer's headers,
``connection: close`` when the connection is not kept alive, and the body, in one ``write``.
With the access log on, the same line as uvicorn's is logged. Flow control (a full write
buffer is drained first), a client that goes away (nothing is written), a graceful shutdown
(the answer closes the connection) and the read deadlines behave as for uvicorn's cycle.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from pushgate.api.fastpush import FALLBACK_HEADERS, PushApp, push_response
from pushgate.api.server import ReadTimeoutProtocol, log
from pushgate.api.state import Gateway

#: Request headers that send a push path's request to uvicorn's normal path.
PROTOCOL_FALLBACK = FALLBACK_HEADERS | {b"transfer-encoding", b"expect", b"upgrade"}
#: The same when uvicorn's proxy headers middleware is on.
PROXY_FALLBACK = PROTOCOL_FALLBACK | {b"x-forwarded-for", b"x-forwarded-proto"}


class _NoEvent:
    """What uvicorn's ``connection_lost`` sets on the current cycle: nothing waits here."""

    __slots__ = ()

    def set(self) -> None:
        pass


class PushCycle:
    """One push request the protocol answers itself; the attributes uvicorn's protocol reads
    on its current cycle (``response_complete``, ``disconnected``, ``keep_alive``,
    ``message_event``) mean what they mean on uvicorn's."""

    __slots__ = ("keep_alive", "authorization", "chunks", "response_complete", "disconnected")

    message_event: ClassVar[_NoEvent] = _NoEvent()

    def __init__(self, keep_alive: bool, authorization: str) -> None:
        self.keep_alive = keep_alive
        self.authorization = authorization
        self.chunks: list[bytes] = []
        self.response_complete = False
        self.disconnected = False


def push_target(app: Any) -> tuple[PushApp | None, bool]:
    """The ``PushApp`` under uvicorn's loaded application, if nothing but the proxy headers
    middleware wraps it, and whether that middleware is on."""
    proxy = False
    while isinstance(app, ProxyHeadersMiddleware):
        proxy = True
        app = app.app
    return (app if isinstance(app, PushApp) else None), proxy


class PushProtocol(ReadTimeoutProtocol):
    """``ReadTimeoutProtocol`` answering plain JSON pushes itself (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        target, proxy = push_target(self.app)
        if self.root_path or self.limit_concurrency is not None:
            target = None
        self._push_app = target
        self._push_paths: frozenset[bytes] = frozenset(
            path.encode("ascii") for path in target.push_paths) if target else frozenset()
        self._fallback_headers = PROXY_FALLBACK if proxy else PROTOCOL_FALLBACK
        self._gateway: Gateway | None = None

    # -- uvicorn's hooks -----------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        if self.url in self._push_paths and not self.expect_100_continue:
            cycle = self.cycle
            parser = self.parser
            if (cycle is None or cycle.response_complete) and parser.get_method() == b"POST" \
                    and parser.get_http_version() == "1.1":
                authorization = self._plain_push()
                if authorization is not None:
                    self.cycle = PushCycle(parser.should_keep_alive(),  # type: ignore[assignment]
                                           authorization)
                    if self._read_deadline is not None:   # the body's turn, as in the parent
                        self._read_deadline = self.loop.time() + self.read_timeout
                    return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        cycle: Any = self.cycle
        if cycle.__class__ is PushCycle:
            self._body_received += len(body)
            cycle.chunks.append(body)
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        cycle: Any = self.cycle
        if cycle.__class__ is PushCycle:
            self._request_read()
            task = self.loop.create_task(self._answer(cycle, time.perf_counter()))
            task.add_done_callback(self.tasks.discard)
            self.tasks.add(task)
            return
        super().on_message_complete()

    # -- the push ------------------------------------------------------------------------------

    def _plain_push(self) -> str | None:
        """The ``Authorization`` header ("" if none) of a request answered here, or None."""
        json = False
        authorization = ""
        length = -1
        fallback = self._fallback_headers
        for name, value in self.headers:
            if name == b"content-type":
                json = value.split(b";", 1)[0].strip().lower() == b"application/json"
            elif name == b"content-length":
                length = int(value) if value.isdigit() else -1
            elif name == b"authorization":
                authorization = value.decode("latin-1")
            elif name in fallback:
                return None
        if not json or length < 0 or self._push_app is None:
            return None
        gateway = self._gateway
        if gateway is None:
            gateway = self._gateway = self._push_app.state.gateway
        if length > gateway.settings.max_body_bytes:
            return None
        return authorization

    async def _answer(self, cycle: PushCycle, started: float) -> None:
        assert self._gateway is not None
        chunks = cycle.chunks
        raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        cycle.chunks = []
        client = self.client
        try:
            response = await push_response(self._gateway, raw, client[0] if client else None,
                                           cycle.authorization, started)
            if self.flow.write_paused and not cycle.disconnected:
                await self.flow.drain()
            if cycle.disconnected or self.transport.is_closing():
                return
            status = response.status_code
            if self.access_log:
                # uvicorn's access line, as its cycle logs it.
                self.access_logger.info('%s - "%s %s HTTP/%s" %d',
                                        f"{client[0]}:{client[1]}" if client else "", "POST",
                                        self.url.decode("ascii"), "1.1", status)
            content = [STATUS_LINE[status]]
            for name, value in self.server_state.default_headers:
                content += (name, b": ", value, b"\r\n")
            for name, value in response.raw_headers:
                content += (name, b": ", value, b"\r\n")
            if not cycle.keep_alive:
                content.append(b"connection: close\r\n")
            content += (b"\r\n", bytes(response.body))
            self.transport.write(b"".join(content))
        except Exception:
            log.exception("Exception in the push protocol path")
            self.transport.close()
            return
        cycle.response_complete = True
        if not cycle.keep_alive:
            self.transport.close()
        self.on_response_complete()


def push_protocol(seconds: float) -> type[PushProtocol]:
    """``PushProtocol`` with a read timeout of ``seconds`` (uvicorn makes the protocol
    objects itself)."""
    return type("PushProtocol", (PushProtocol,), {"read_timeout": seconds})
