"""``ReadTimeoutProtocol`` over real sockets on 127.0.0.1: connections that send nothing, trickle
their headers or trickle a body are closed once their request is late; requests that arrive on
time, a large body that keeps flowing, and idle kept-alive connections are left alone."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from tests.fakes.server import free_port

from pushgate.api.server import BODY_BYTES_PER_SECOND, read_timeout_protocol

READ_TIMEOUT = 0.5
# Bounds on waiting for the server, far above READ_TIMEOUT: a wait that runs out fails the test.
PATIENCE = 10.0


async def echo_length(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body, answers its length."""
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = str(size).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    port = free_port()
    config = uvicorn.Config(echo_length, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="off", access_log=False, timeout_keep_alive=30,
                            http=read_timeout_protocol(READ_TIMEOUT))
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + PATIENCE
    while not instance.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.01)
    yield "127.0.0.1", port
    instance.should_exit = True
    thread.join(timeout=PATIENCE)


@contextlib.contextmanager
def connection(server: tuple[str, int]) -> Iterator[socket.socket]:
    sock = socket.create_connection(server, timeout=PATIENCE)
    try:
        yield sock
    finally:
        sock.close()


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed the connection (waits up to PATIENCE for it)."""
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


def trickle(sock: socket.socket, data: bytes, pause: float) -> bool:
    """Send ``data`` a byte at a time; False as soon as the server has closed the connection."""
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return False
        time.sleep(pause)
    return True


def answer(sock: socket.socket) -> bytes:
    """One response (status line to the end of its Content-Length body)."""
    data = b""
    while True:
        head, separator, body = data.partition(b"\r\n\r\n")
        if separator:
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            if len(body) >= length:
                return data
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before the answer was complete: {data!r}"
        data += chunk


def request(body: bytes = b"") -> bytes:
    return (b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: " + str(len(body)).encode()
            + b"\r\n\r\n" + body)


def test_a_connection_that_sends_nothing_is_closed(server: tuple[str, int]) -> None:
    with connection(server) as sock:
        assert closed_by_server(sock)


def test_trickled_headers_are_cut(server: tuple[str, int]) -> None:
    with connection(server) as sock:
        # A byte every 0.1 s: ~5 s for these headers, ten times the read timeout.
        finished = trickle(sock, request(), 0.1)
        assert not finished or closed_by_server(sock)


def test_a_trickled_body_is_cut(server: tuple[str, int]) -> None:
    with connection(server) as sock:
        sock.sendall(request(b"x" * 100)[:-100])   # the headers, at once
        finished = trickle(sock, b"x" * 100, 0.1)
        assert not finished or closed_by_server(sock)


def test_many_slow_clients_are_all_closed(server: tuple[str, int]) -> None:
    socks = [socket.create_connection(server, timeout=PATIENCE) for _ in range(50)]
    try:
        for sock in socks:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")   # and never the blank line
        assert all(closed_by_server(sock) for sock in socks)
    finally:
        for sock in socks:
            sock.close()


def test_requests_on_time_and_kept_alive_connections_are_served(
        server: tuple[str, int]) -> None:
    with connection(server) as sock:
        sock.sendall(request(b"hello"))
        assert answer(sock).endswith(b"\r\n\r\n5")
        # Idle between requests for longer than the read timeout: keep-alive rules, not it.
        time.sleep(READ_TIMEOUT * 3)
        sock.sendall(request(b"again"))
        assert answer(sock).endswith(b"\r\n\r\n5")
        # The next request is held to the deadline again.
        finished = trickle(sock, request(), 0.1)
        assert not finished or closed_by_server(sock)


def test_a_large_body_that_keeps_flowing_is_not_cut(server: tuple[str, int]) -> None:
    chunk = b"y" * (64 * 1024)
    chunks = 24   # ~1.5 MB over ~1.2 s: more than the read timeout, well above the rate
    assert len(chunk) / 0.05 > BODY_BYTES_PER_SECOND
    with connection(server) as sock:
        sock.sendall(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: "
                     + str(len(chunk) * chunks).encode() + b"\r\n\r\n")
        for _ in range(chunks):
            sock.sendall(chunk)
            time.sleep(0.05)
        assert answer(sock).endswith(b"\r\n\r\n" + str(len(chunk) * chunks).encode())
