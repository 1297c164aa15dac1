"""The lean HTTP/1.1 keep-alive client of the connectors' send path (``channels/http1.py``)
against a small scripted server on 127.0.0.1: connection reuse and its bound, servers that close
connections, chunked / gzip / close-delimited answers, timeouts (a late answer must never reach
the next request), refused connections, disconnects, oversized answers and header checks, and
HTTPS (the Graph API's scheme) with a certificate from a CA of the test's own."""

from __future__ import annotations

import asyncio
import gzip
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest
import trustme

from pushgate.channels import http1
from pushgate.channels.http1 import Http1Pool
from tests.fakes.server import free_port


@dataclass
class Received:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


# A handler gets the request and the connection's writer; it writes the answer itself (or not).
Handler = Callable[[Received, asyncio.StreamWriter], Awaitable[None]]


def answer(body: bytes, *, status: str = "200 OK", extra: str = "", length: bool = True) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}"
    if length:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def echo(request: Received, writer: asyncio.StreamWriter) -> None:
    writer.write(answer(json.dumps({"got": request.body.decode()}).encode()))


async def until(condition: Callable[[], bool]) -> None:
    """Wait (10 s at most) for something the other side does; fail if it never happens."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


@dataclass
class Server:
    url: str
    handler: Handler = echo
    connections: int = 0
    requests: list[Received] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)


@pytest.fixture
def tls_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async for state in _serve(None):
        yield state


@pytest.fixture
async def tls_server(tls_ca: trustme.CA) -> AsyncIterator[Server]:
    """The same server behind TLS, its certificate issued for 127.0.0.1 by ``tls_ca``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("127.0.0.1").configure_cert(context)
    async for state in _serve(context):
        yield state


async def _serve(tls: ssl.SSLContext | None) -> AsyncIterator[Server]:
    port = free_port()
    state = Server(f"{'https' if tls else 'http'}://127.0.0.1:{port}/v1")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        state.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in
                           (line.split(":", 1) for line in lines[1:] if line)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Received(method, target, headers, body)
                state.requests.append(request)
                await state.handler(request, writer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", port, ssl=tls)
    try:
        yield state
    finally:
        for writer in state.writers:
            writer.close()
        listener.close()
        await listener.wait_closed()


async def test_requests_reuse_one_connection(server: Server) -> None:
    pool = Http1Pool(server.url, headers={"Authorization": "Bearer t0k"})
    try:
        for i in range(20):
            response = await pool.post("/send", content=b'{"n": %d}' % i,
                                       headers={"Content-Type": "application/json"})
            assert response.status_code == 200 and response.is_success
            assert response.json() == {"got": f'{{"n": {i}}}'}
    finally:
        await pool.aclose()
    assert server.connections == 1 and pool.connections_opened == 1
    first = server.requests[0]
    assert (first.method, first.target) == ("POST", "/v1/send")
    assert first.headers["authorization"] == "Bearer t0k"
    assert first.headers["content-type"] == "application/json"
    assert first.headers["host"] == server.url.split("/")[2]


async def test_concurrent_requests_stay_within_max_connections(server: Server) -> None:
    release = asyncio.Event()

    async def slow(request: Received, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        await echo(request, writer)

    server.handler = slow
    pool = Http1Pool(server.url, max_connections=3)
    try:
        sends = [asyncio.create_task(pool.post("/send", content=b"%d" % i)) for i in range(12)]
        await until(lambda: len(server.requests) >= 3)   # three are held by the server ...
        release.set()                             # ... the other nine wait in the pool
        answers = await asyncio.gather(*sends)
    finally:
        await pool.aclose()
    assert sorted(r.json()["got"] for r in answers) == sorted(str(i) for i in range(12))
    assert server.connections == 3


async def test_waiting_for_a_connection_times_out_and_keeps_the_count(
        server: Server) -> None:
    release = asyncio.Event()

    async def slow(request: Received, writer: asyncio.StreamWriter) -> None:
        if request.body == b"held":
            await release.wait()
        await echo(request, writer)

    server.handler = slow
    pool = Http1Pool(server.url, max_connections=1, timeout=10)
    try:
        held = asyncio.create_task(pool.post("/a", content=b"held"))
        await until(lambda: len(server.requests) == 1)
        pool.timeout = 0.2                        # read when a request starts
        with pytest.raises(httpx.PoolTimeout):
            await pool.post("/a", content=b"queued")
        assert not held.done()
        release.set()
        assert (await held).json() == {"got": "held"}
        # The one slot is free again, once: two requests still take turns on one connection.
        answers = await asyncio.gather(pool.post("/a", content=b"x"),
                                       pool.post("/a", content=b"y"))
    finally:
        await pool.aclose()
    assert [a.json()["got"] for a in answers] == ["x", "y"]
    assert pool._busy == 0 and server.connections == 1


async def test_connection_closed_by_the_server_is_replaced(server: Server) -> None:
    async def then_close(request: Received, writer: asyncio.StreamWriter) -> None:
        await echo(request, writer)
        await writer.drain()
        writer.close()                            # e.g. the server's keep-alive timeout

    server.handler = then_close
    pool = Http1Pool(server.url)
    try:
        assert (await pool.post("/a", content=b"1")).json() == {"got": "1"}
        await until(lambda: pool._idle[-1].closed)   # the close reaches the client
        server.handler = echo
        assert (await pool.post("/a", content=b"2")).json() == {"got": "2"}
    finally:
        await pool.aclose()
    assert server.connections == 2


async def test_connection_close_answer_is_not_reused(server: Server) -> None:
    async def closing(request: Received, writer: asyncio.StreamWriter) -> None:
        writer.write(answer(b"{}", extra="Connection: close\r\n"))

    server.handler = closing
    pool = Http1Pool(server.url)
    try:
        for _ in range(3):
            assert (await pool.post("/a")).json() == {}
    finally:
        await pool.aclose()
    assert server.connections == 3


async def test_chunked_gzip_answer_is_decoded(server: Server) -> None:
    packed = gzip.compress(b'{"messages": [{"id": "wamid.X"}]}')

    async def chunked(request: Received, writer: asyncio.StreamWriter) -> None:
        half = len(packed) // 2
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part)
                          for part in (packed[:half], packed[half:]))
        writer.write(answer(chunks + b"0\r\n\r\n", length=False,
                            extra="Transfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n"))

    server.handler = chunked
    pool = Http1Pool(server.url)
    try:
        response = await pool.post("/a")
    finally:
        await pool.aclose()
    assert response.json() == {"messages": [{"id": "wamid.X"}]}
    assert "content-encoding" not in response.headers


async def test_answer_delimited_by_the_end_of_the_connection(server: Server) -> None:
    async def until_close(request: Received, writer: asyncio.StreamWriter) -> None:
        writer.write(answer(b'{"done": true}', length=False))
        await writer.drain()
        writer.close()

    server.handler = until_close
    pool = Http1Pool(server.url)
    try:
        assert (await pool.post("/a")).json() == {"done": True}
    finally:
        await pool.aclose()


async def test_late_answer_never_reaches_the_next_request(server: Server) -> None:
    held: list[tuple[Received, asyncio.StreamWriter]] = []

    async def hold_first(request: Received, writer: asyncio.StreamWriter) -> None:
        if not held:
            held.append((request, writer))        # answered only after the client gave up
            return
        await echo(request, writer)

    server.handler = hold_first
    pool = Http1Pool(server.url, timeout=0.2)
    try:
        with pytest.raises(httpx.ReadTimeout):
            await pool.post("/a", content=b"first")
        request, writer = held[0]
        await echo(request, writer)               # the stale answer arrives now
        response = await pool.post("/a", content=b"second")
    finally:
        await pool.aclose()
    assert response.json() == {"got": "second"}
    assert server.connections == 2


async def test_refused_connection_is_a_connect_error() -> None:
    pool = Http1Pool(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(httpx.ConnectError):
            await pool.post("/a")
    finally:
        await pool.aclose()


async def test_disconnect_without_answer_is_a_protocol_error(server: Server) -> None:
    async def hang_up(request: Received, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server.handler = hang_up
    pool = Http1Pool(server.url)
    try:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await pool.post("/a")
        server.handler = echo
        assert (await pool.post("/a", content=b"again")).json() == {"got": "again"}
    finally:
        await pool.aclose()


async def test_oversized_answer_is_refused(server: Server,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http1, "MAX_ANSWER_BYTES", 1000)

    async def big(request: Received, writer: asyncio.StreamWriter) -> None:
        writer.write(answer(b"x" * 5000))

    server.handler = big
    pool = Http1Pool(server.url)
    try:
        with pytest.raises(httpx.RemoteProtocolError, match="larger than"):
            await pool.post("/a")
    finally:
        await pool.aclose()


def test_header_injection_is_refused() -> None:
    with pytest.raises(ValueError, match="Authorization"):
        Http1Pool("http://127.0.0.1:1", headers={"Authorization": "Bearer x\r\nX-Evil: 1"})


async def test_request_target_with_spaces_is_refused(server: Server) -> None:
    pool = Http1Pool(server.url)
    try:
        with pytest.raises(httpx.InvalidURL):
            await pool.post("/a b HTTP/1.1\r\nX-Evil: 1")
    finally:
        await pool.aclose()
    assert server.requests == []


def test_proxy_configured_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy",
                 "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert not http1.proxy_configured()
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert http1.proxy_configured()


async def test_https_requests_reuse_one_verified_connection(
    tls_server: Server, tls_ca: trustme.CA
) -> None:
    context = ssl.create_default_context()
    tls_ca.configure_trust(context)
    pool = Http1Pool(tls_server.url, ssl_context=context)
    try:
        for i in range(3):
            response = await pool.post("/messages", content=f"m{i}".encode())
            assert (response.status_code, response.json()) == (200, {"got": f"m{i}"})
    finally:
        await pool.aclose()
    assert tls_server.connections == 1 and pool.connections_opened == 1
    assert tls_server.requests[0].headers["host"] == tls_server.url.split("/")[2]


async def test_https_refuses_a_certificate_it_cannot_verify(tls_server: Server) -> None:
    """Without the test CA (the default context: the system's CAs) the handshake fails: a
    connect error, and nothing was sent."""
    pool = Http1Pool(tls_server.url)
    try:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await pool.post("/messages", content=b"secret")
    finally:
        await pool.aclose()
    assert tls_server.requests == []


async def test_https_refuses_a_certificate_for_another_host(tls_ca: trustme.CA) -> None:
    """A certificate the CA issued for another name does not pass for 127.0.0.1."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("graph.example.com").configure_cert(server_context)
    async for state in _serve(server_context):
        context = ssl.create_default_context()
        tls_ca.configure_trust(context)
        pool = Http1Pool(state.url, ssl_context=context)
        try:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED|mismatch"):
                await pool.post("/messages", content=b"secret")
        finally:
            await pool.aclose()
        assert state.requests == []
