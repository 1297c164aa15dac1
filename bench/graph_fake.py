"""A lean fake WhatsApp Cloud API (Graph) send endpoint for ``bench/http_channel.py``.

``tests/fakes/graph_api.py`` (Starlette under uvicorn, every request recorded) is the fake the
tests use; it answers a few thousand sends a second at best on this machine, so the benchmark
would measure the fake. This one speaks the same wire format with less around it: an asyncio
protocol with httptools' HTTP/1.1 parser (keep-alive and pipelining as the real service allows),
under uvloop when installed. For ``POST /{version}/{phone_number_id}/messages`` it checks what
Graph checks first and answers as Meta documents:

- ``Authorization: Bearer <token>`` missing or wrong → HTTP 401 with Graph error 190;
- a phone number id it does not serve → HTTP 400 with Graph error 100 (subcode 33);
- a body that is not JSON, without ``messaging_product: whatsapp``, without a digits-only
  ``to``, or a text without ``text.body`` → HTTP 400 with Graph error 100;
- otherwise HTTP 200 ``{"messaging_product": "whatsapp", "contacts": [{"input": <to as
  sent>, "wa_id": <digits>}], "messages": [{"id": "wamid.<base64>"}]}``, with
  ``"message_status": "accepted"`` for templates.

Error bodies come from ``tests.fakes.graph_api.error_body`` (the tests' fake), so both fakes
answer errors identically. Anything else is 404 with a Graph error body.

It counts TCP connections (opened, most open at once) and requests, answered and refused.

    python bench/graph_fake.py --numbers 1001,1002 [--token T] [--latency-ms 0]

prints ``port N`` once listening, and on standard input's end prints one JSON line of counts
and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import sys
import threading
from pathlib import Path
from typing import Any

import httptools
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.fakes.graph_api import error_body  # noqa: E402

_REASONS = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 404: b"Not Found",
            405: b"Method Not Allowed"}


class Stats:
    def __init__(self) -> None:
        self.connections = 0
        self.open = 0
        self.max_open = 0
        self.requests = 0
        self.ok = 0
        self.refused = 0
        self.max_requests_per_connection = 0


class GraphProtocol(asyncio.Protocol):
    def __init__(self, server: LeanGraph) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []
        self.served = 0
        # Answers in request order even when a latency makes them wait (pipelining).
        self.pending: asyncio.Future[None] | None = None

    # --- connection ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        stats = self.server.stats
        stats.connections += 1
        stats.open += 1
        stats.max_open = max(stats.max_open, stats.open)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.stats.open -= 1
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    # --- httptools callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = {}
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        stats = self.server.stats
        stats.requests += 1
        self.served += 1
        stats.max_requests_per_connection = max(stats.max_requests_per_connection, self.served)
        status, payload = self.server.answer(self.parser.get_method(), self.url, self.headers,
                                             b"".join(self.body))
        if status == 200:
            stats.ok += 1
        else:
            stats.refused += 1
        response = _response(status, payload, self.parser.should_keep_alive())
        if self.server.latency > 0:
            previous, self.pending = self.pending, asyncio.get_running_loop().create_future()
            asyncio.ensure_future(self._later(previous, self.pending, response))
        elif self.transport is not None:
            self.transport.write(response)

    async def _later(self, previous: asyncio.Future[None] | None, mine: asyncio.Future[None],
                     response: bytes) -> None:
        await asyncio.sleep(self.server.latency)
        if previous is not None:
            await previous
        if self.transport is not None:
            self.transport.write(response)
        mine.set_result(None)


def _response(status: int, payload: bytes, keep_alive: bool) -> bytes:
    head = (b"HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=UTF-8\r\n"
            b"Content-Length: %d\r\n" % (status, _REASONS.get(status, b"Error"), len(payload)))
    head += b"Connection: keep-alive\r\n\r\n" if keep_alive else b"Connection: close\r\n\r\n"
    return head + payload


class LeanGraph:
    def __init__(self, numbers: set[str], token: str, latency: float) -> None:
        self.numbers = numbers
        self.authorization = f"Bearer {token}".encode()
        self.latency = latency
        self.stats = Stats()
        self.counter = 0

    def answer(self, method: bytes, url: bytes, headers: dict[bytes, bytes],
               body: bytes) -> tuple[int, bytes]:
        parts = url.split(b"?", 1)[0].strip(b"/").split(b"/")
        if len(parts) != 3 or parts[2] != b"messages" or not parts[0].startswith(b"v"):
            return 404, orjson.dumps(error_body(
                100, title="Unsupported get request", subcode=33,
                details="Unknown path components"))
        if method != b"POST":
            return 405, orjson.dumps(error_body(100, details=f"{method.decode()} not allowed"))
        if headers.get(b"authorization") != self.authorization:
            return 401, orjson.dumps(error_body(
                190, title="Invalid OAuth access token - Cannot parse access token",
                details="Invalid OAuth access token"))
        number_id = parts[1].decode()
        if number_id not in self.numbers:
            return 400, orjson.dumps(error_body(
                100, subcode=33, title=f"Unsupported post request. Object with ID "
                f"'{number_id}' does not exist, cannot be loaded due to missing permissions, "
                "or does not support this operation", details="Unknown phone number id"))
        try:
            payload: Any = orjson.loads(body)
        except orjson.JSONDecodeError:
            return 400, orjson.dumps(error_body(100, details="The request body is not valid "
                                                              "JSON."))
        if not isinstance(payload, dict) or payload.get("messaging_product") != "whatsapp":
            return 400, orjson.dumps(error_body(
                100, details="The parameter messaging_product is required."))
        to = payload.get("to")
        if not isinstance(to, str) or not to.lstrip("+").isdigit():
            return 400, orjson.dumps(error_body(
                100, details="The parameter to is required and must be a phone number."))
        kind = payload.get("type", "text")
        if kind == "text" and not (isinstance(payload.get("text"), dict)
                                   and payload["text"].get("body")):
            return 400, orjson.dumps(error_body(
                100, details="The parameter text['body'] is required."))
        self.counter += 1
        wa_id = to.lstrip("+")
        wamid = "wamid." + base64.b64encode(
            b"\x15\x02\x00\x11\x18\x12" + wa_id.encode() + b"%010d" % self.counter).decode()
        message: dict[str, Any] = {"id": wamid}
        if kind == "template":
            message["message_status"] = "accepted"
        return 200, orjson.dumps({"messaging_product": "whatsapp",
                                  "contacts": [{"input": to, "wa_id": wa_id}],
                                  "messages": [message]})


async def serve(numbers: set[str], token: str, latency: float) -> None:
    graph = LeanGraph(numbers, token, latency)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: GraphProtocol(graph), "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"port {port}", flush=True)
    stdin_closed = loop.create_future()

    def wait_stdin() -> None:
        sys.stdin.read()
        loop.call_soon_threadsafe(stdin_closed.set_result, None)

    threading.Thread(target=wait_stdin, daemon=True).start()
    await stdin_closed
    server.close()
    print(orjson.dumps(vars(graph.stats)).decode(), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--numbers", required=True, help="comma-separated phone number ids")
    parser.add_argument("--token", default="EAAG-bench-token")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="hold each answer this long (Graph itself takes 100-500 ms)")
    args = parser.parse_args()
    numbers = set(args.numbers.split(","))
    run = serve(numbers, args.token, args.latency_ms / 1000)
    try:
        import uvloop
    except ImportError:
        asyncio.run(run)
    else:
        with contextlib.suppress(KeyboardInterrupt):
            uvloop.run(run)


if __name__ == "__main__":
    main()
