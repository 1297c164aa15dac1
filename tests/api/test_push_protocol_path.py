"""The push path at the HTTP protocol (``api/pushproto.py``).

Against a real ``pushgate serve`` on 127.0.0.1 over raw sockets: its answers are the normal
path's byte for byte (but ``date``), whatever the body; keep-alive, pipelining, ``Connection:
close``, HTTP/1.0, chunked bodies, ``Expect: 100-continue``, a client leaving mid-body and an
``Idempotency-Key`` all work. Then the protocol on its own, over a fake transport: which
requests it answers itself, that pipelined requests are answered in order, flow control, a
client gone mid-answer, and the access log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.responses import Response
from tests.e2e.harness import Harness
from uvicorn.server import ServerState

from pushgate.api import pushproto
from pushgate.api.fastpush import PushApp
from pushgate.api.pushproto import PushCycle, push_protocol

MAX_BODY = 4096
PATIENCE = 30.0


# -- a real server ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[tuple[str, int], str]]:
    harness = Harness(Path(tmp_path_factory.mktemp("pushproto")))
    try:
        harness.cli("migrate")
        token = harness.cli_json("project", "create", "shop", "--credits", "100")["token"]
        harness.cli_json("channel", "add", "--project", "shop", "--type", "sandbox",
                         "--application", "1", "--price", "0.01")
        proc = harness.serve("--api-only",
                             env=harness.env(PUSHGATE_MAX_BODY_BYTES=str(MAX_BODY)))
        assert proc.base_url is not None
        host, port = proc.base_url.removeprefix("http://").split(":")
        yield (host, int(port)), token
    finally:
        harness.stop_all()


def request(path: str, body: bytes, *, extra: str = "", version: str = "1.1",
            length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return (f"POST {path} HTTP/{version}\r\nHost: t\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n{extra}\r\n").encode() + body


class Reader:
    """HTTP/1.1 answers read off a socket, one at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def answer(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            assert self._fill(), f"closed before an answer: {self.buffer!r}"
        head, _, _ = self.buffer.partition(b"\r\n\r\n")
        match = re.search(rb"\r\ncontent-length: (\d+)", head)
        size = len(head) + 4 + (int(match.group(1)) if match else 0)
        while len(self.buffer) < size:
            assert self._fill(), "closed mid-answer"
        answer, self.buffer = self.buffer[:size], self.buffer[size:]
        return answer

    def closed(self) -> bool:
        return self.buffer == b"" and not self._fill()


def connect(address: tuple[str, int]) -> socket.socket:
    return socket.create_connection(address, timeout=PATIENCE)


def exchange(address: tuple[str, int], data: bytes) -> bytes:
    with connect(address) as sock:
        sock.sendall(data)
        return Reader(sock).answer()


def without_date(answer: bytes) -> bytes:
    return re.sub(rb"\r\ndate: [^\r]*", b"", answer)


def payload(answer: bytes) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(answer.partition(b"\r\n\r\n")[2])
    return result


def push_body(token: str, number: str = "919876543210", **fields: Any) -> bytes:
    return json.dumps({"token": token, "application": "1",
                       "data": [{"number": number, "message": "OTP 1234"}], **fields}).encode()


def test_refusals_are_the_normal_paths_byte_for_byte(served) -> None:
    address, token = served
    bodies = {
        "bad JSON": b'{"token": ',
        "empty": b"",
        "wrong token": push_body("not-a-token"),
        "unknown application": push_body(token, application="9"),
        "invalid number": push_body(token, number="12"),
        "no data": json.dumps({"token": token, "application": "1"}).encode(),
    }
    for what, body in bodies.items():
        fast = exchange(address, request("/api/v2/push", body))
        normal = exchange(address, request("/api/v2/push?via=route", body))
        assert without_date(fast) == without_date(normal), what
        assert fast.startswith(b"HTTP/1.1 4") and payload(fast)["status"] != 100, what
    # A declared length past PUSHGATE_MAX_BODY_BYTES: the normal path's 413, on both.
    big = push_body(token) + b" " * MAX_BODY
    fast = exchange(address, request("/api/v2/push", big))
    normal = exchange(address, request("/api/v2/push?via=route", big))
    assert fast.startswith(b"HTTP/1.1 413 ") and without_date(fast) == without_date(normal)


def test_an_accepted_push_is_the_normal_paths_answer(served) -> None:
    address, token = served
    fast = exchange(address, request("/api/v2/push", push_body(token)))
    alias = exchange(address, request("/app/api/v2/push", push_body(token)))
    normal = exchange(address, request("/api/v2/push?via=route", push_body(token)))
    answers = [payload(a) for a in (fast, alias, normal)]
    ids = [int(a["push_id"]) for a in answers]
    assert ids == [ids[0], ids[0] + 1, ids[0] + 2]

    def masked(answer: bytes) -> bytes:
        # The same push three times: only its ids and the balance after it differ.
        answer = without_date(answer)
        answer = re.sub(rb'"(push_id|msg_id|balance)":"[0-9.]+"', rb'"\1":"_"', answer)
        return re.sub(rb"content-length: \d+", b"content-length: _", answer)

    assert masked(fast) == masked(alias) == masked(normal)
    assert fast.startswith(b"HTTP/1.1 200 OK\r\n") and answers[0]["status"] == 100


def test_keep_alive_answers_request_after_request(served) -> None:
    address, token = served
    with connect(address) as sock:
        reader = Reader(sock)
        ids = []
        for n in range(5):
            sock.sendall(request("/api/v2/push", push_body(token, f"91987654{n:04d}")))
            answer = payload(reader.answer())
            assert answer["data"][0]["number"] == f"91987654{n:04d}"
            ids.append(int(answer["push_id"]))
        assert ids == sorted(ids) and len(set(ids)) == 5


def test_pipelined_requests_are_answered_in_order(served) -> None:
    address, token = served
    numbers = ["919800000001", "919800000002", "919800000003", "919800000004"]
    with connect(address) as sock:
        # Two fast ones, one for the normal path (a query string), a fast one: one write.
        sock.sendall(request("/api/v2/push", push_body(token, numbers[0]))
                     + request("/api/v2/push", push_body(token, numbers[1]))
                     + request("/api/v2/push?via=route", push_body(token, numbers[2]))
                     + request("/api/v2/push", push_body(token, numbers[3])))
        reader = Reader(sock)
        answers = [payload(reader.answer()) for _ in numbers]
    assert [a["data"][0]["number"] for a in answers] == numbers
    ids = [int(a["push_id"]) for a in answers]
    assert ids == sorted(ids)


def test_connection_close_and_http_1_0_close_after_the_answer(served) -> None:
    address, token = served
    for extra, version in (("Connection: close\r\n", "1.1"), ("", "1.0")):
        with connect(address) as sock:
            sock.sendall(request("/api/v2/push", push_body(token), extra=extra,
                                 version=version))
            reader = Reader(sock)
            answer = reader.answer()
            assert payload(answer)["status"] == 100
            assert b"\r\nconnection: close\r\n" in answer
            assert reader.closed()
    # Refused with Connection: close: the same bytes as the normal path's.
    body = push_body("not-a-token")
    fast = exchange(address, request("/api/v2/push", body, extra="Connection: close\r\n"))
    normal = exchange(address, request("/api/v2/push?x=1", body, extra="Connection: close\r\n"))
    assert without_date(fast) == without_date(normal)


def test_chunked_and_expect_continue_take_the_normal_path(served) -> None:
    address, token = served
    body = push_body(token)
    chunked = (b"POST /api/v2/push HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n"
               + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
    assert payload(exchange(address, chunked))["status"] == 100
    with connect(address) as sock:
        sock.sendall(request("/api/v2/push", b"", extra="Expect: 100-continue\r\n",
                             length=len(body)))
        reader = Reader(sock)
        assert reader.answer() == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        assert payload(reader.answer())["status"] == 100


def test_a_client_leaving_mid_body_leaves_the_server_answering(served) -> None:
    address, token = served
    body = push_body(token)
    with connect(address) as sock:
        sock.sendall(request("/api/v2/push", body[:20], length=len(body)))
    with connect(address) as sock:   # and one leaving before it reads its answer
        sock.sendall(request("/api/v2/push", body))
    assert payload(exchange(address, request("/api/v2/push", body)))["status"] == 100


def test_an_idempotency_key_is_honoured(served) -> None:
    address, token = served
    sent = request("/api/v2/push", push_body(token, "919811111111"),
                   extra="Idempotency-Key: proto-1\r\n")
    first, again = payload(exchange(address, sent)), payload(exchange(address, sent))
    assert first["status"] == again["status"] == 100
    assert first["push_id"] == again["push_id"]


# -- the protocol alone ----------------------------------------------------------------------

class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False
        self.reading = True
        self.protocol: Any = None

    def write(self, data: bytes) -> None:
        assert not self.closing
        self.writes.append(data)

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.9", 5555), "sockname": ("127.0.0.1", 8000)}.get(
            name, default)


class FakeGateway:
    class settings:  # noqa: N801 (the attribute the protocol reads)
        max_body_bytes = MAX_BODY
        always_http_200 = False


ANSWER = Response(b'{"status":100}', media_type="application/json")


@pytest.fixture
def answered(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What the protocol asked ``push_response`` for; each answer waits for ``release``."""
    seen: dict[str, Any] = {"calls": [], "release": asyncio.Event()}

    async def fake(gateway: Any, raw: bytes, client_ip: str | None, authorization: str,
                   started: float) -> Response:
        seen["calls"].append((raw, client_ip, authorization))
        await seen["release"].wait()
        return ANSWER

    monkeypatch.setattr(pushproto, "push_response", fake)
    return seen


async def connected(access_log: bool = False) -> tuple[Any, FakeTransport]:
    app = PushApp()   # no routes: whatever falls back is uvicorn's path to a 404
    app.push_paths = frozenset({"/api/v2/push"})
    app.state.gateway = FakeGateway()
    config = uvicorn.Config(app, lifespan="off", access_log=access_log, log_config=None,
                            http=push_protocol(30))
    config.load()
    state = ServerState()
    state.default_headers = [(b"date", b"Sun, 06 Dec 2026 06:00:00 GMT"),
                             (b"server", b"uvicorn")]
    protocol = config.http_protocol_class(config=config, server_state=state, app_state={})
    transport = FakeTransport()
    transport.protocol = protocol
    protocol.connection_made(transport)
    return protocol, transport


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


EXPECTED = (b"HTTP/1.1 200 OK\r\ndate: Sun, 06 Dec 2026 06:00:00 GMT\r\nserver: uvicorn\r\n"
            b"content-length: 14\r\ncontent-type: application/json\r\n\r\n"
            b'{"status":100}')


async def test_a_plain_push_is_answered_by_the_protocol_in_one_write(answered) -> None:
    protocol, transport = await connected()
    protocol.data_received(request("/api/v2/push", b'{"a": 1}',
                                   extra="Authorization: Bearer t1\r\n")[:-3])
    assert isinstance(protocol.cycle, PushCycle) and answered["calls"] == []
    protocol.data_received(b" 1}")
    await settle()
    assert answered["calls"] == [(b'{"a": 1}', "127.0.0.9", "Bearer t1")]
    assert transport.writes == []   # the answer is not ready yet
    answered["release"].set()
    await settle()
    assert transport.writes == [EXPECTED] and not transport.closing
    assert protocol.server_state.total_requests == 1
    protocol.data_received(request("/api/v2/push", b"{}", extra="Connection: close\r\n"))
    await settle()
    assert transport.writes[-1] == EXPECTED.replace(
        b"application/json\r\n", b"application/json\r\nconnection: close\r\n")
    assert transport.closing


@pytest.mark.parametrize("other", [
    request("/api/v2/push?x=1", b"{}"),
    request("/api/v2/other", b"{}"),
    request("/api/v2/push", b"{}", version="1.0"),
    request("/api/v2/push", b"{}", extra="Idempotency-Key: k\r\n"),
    request("/api/v2/push", b"{}", extra="Expect: 100-continue\r\n"),
    request("/api/v2/push", b"{}", length=MAX_BODY + 1)[:-2],
    b"POST /api/v2/push HTTP/1.1\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    request("/api/v2/push", b"{}").replace(b"application/json", b"text/plain"),
    b"PUT /api/v2/push HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 0\r\n\r\n",
])
async def test_other_requests_go_to_uvicorns_path(answered, other: bytes) -> None:
    protocol, transport = await connected()
    protocol.data_received(other)
    await settle()
    assert answered["calls"] == []
    assert not isinstance(protocol.cycle, PushCycle)


async def test_a_pipelined_request_waits_for_the_answer_before_it(answered) -> None:
    protocol, transport = await connected()
    protocol.data_received(request("/api/v2/push", b"{}") + request("/api/v2/other", b"{}")
                           + request("/api/v2/push", b"[]", extra="Connection: close\r\n"))
    await settle()
    # The first is being answered here; the others wait in uvicorn's queue, reading paused.
    assert len(answered["calls"]) == 1 and transport.writes == [] and not transport.reading
    answered["release"].set()
    await settle()
    assert transport.writes[0] == EXPECTED
    rest = b"".join(transport.writes[1:])
    # Then /other (uvicorn's 404), then the third push, which the ASGI fast path answered
    # (the fake gateway has no store: its answer is a 500 there) and closed.
    assert rest.startswith(b"HTTP/1.1 404 ") and rest.count(b"HTTP/1.1 ") == 2
    assert b"\r\nconnection: close\r\n" in rest.rpartition(b"HTTP/1.1 ")[2]
    assert len(answered["calls"]) == 1


async def test_a_full_write_buffer_is_drained_first(answered) -> None:
    protocol, transport = await connected()
    protocol.pause_writing()
    answered["release"].set()
    protocol.data_received(request("/api/v2/push", b"{}"))
    await settle()
    assert transport.writes == []
    protocol.resume_writing()
    await settle()
    assert transport.writes == [EXPECTED]


async def test_a_client_gone_mid_answer_gets_nothing(answered) -> None:
    protocol, transport = await connected()
    protocol.data_received(request("/api/v2/push", b"{}"))
    await settle()
    protocol.connection_lost(None)
    answered["release"].set()
    await settle()
    assert transport.writes == [] and len(answered["calls"]) == 1


async def test_mid_body_disconnect_answers_nothing(answered) -> None:
    protocol, transport = await connected()
    protocol.data_received(request("/api/v2/push", b"{}", length=10))
    protocol.connection_lost(None)
    answered["release"].set()
    await settle()
    assert answered["calls"] == [] and transport.writes == []


async def test_the_access_log_line_is_uvicorns(answered, caplog) -> None:
    protocol, transport = await connected(access_log=True)
    logging.getLogger("uvicorn.access").addHandler(logging.NullHandler())
    protocol.access_log = True
    answered["release"].set()
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        protocol.data_received(request("/api/v2/push", b"{}"))
        await settle()
    assert transport.writes == [EXPECTED]
    assert [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"] == [
        '127.0.0.9:5555 - "POST /api/v2/push HTTP/1.1" 200']
