"""The push fast path (``api/fastpush.py``): which requests it takes, that its answers are the
route's, and the response writer that sends a head with its body (``api/server.py``)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from pushgate.api import fastpush
from pushgate.api.server import HeadWithBody

PUSH = {"application": "1", "data": [{"number": "919876543210", "message": "OTP 1234"}]}


@pytest.fixture
def fast_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the pushes the fast path answered (the route calls ``push.answer_push`` itself,
    not through ``fastpush``)."""
    calls: list[int] = []
    original = fastpush.answer_push

    async def counted(*args: Any) -> Any:
        calls.append(1)
        return await original(*args)

    monkeypatch.setattr(fastpush, "answer_push", counted)
    return calls


async def test_json_push_takes_the_fast_path_with_the_routes_answer(app_client, make,
                                                                    fast_calls) -> None:
    client, _ = await app_client()
    project, token, _ = await make.project(credits="10")
    await make.channel(project.id, application=1, price="0.005")
    fast = await client.post("/api/v2/push", json={"token": token, **PUSH})
    assert len(fast_calls) == 1
    # A query string sends the same push down the normal route.
    routed = await client.post("/api/v2/push?via=route", json={"token": token, **PUSH})
    assert len(fast_calls) == 1
    assert fast.status_code == routed.status_code == 200
    assert fast.headers["content-type"] == routed.headers["content-type"]
    one, two = fast.json(), routed.json()
    assert int(two["push_id"]) == int(one["push_id"]) + 1
    assert int(two["data"][0]["msg_id"]) == int(one["data"][0]["msg_id"]) + 1
    for answer in (one, two):
        del answer["push_id"], answer["data"][0]["msg_id"]
    assert one.pop("balance") == "9.995" and two.pop("balance") == "9.99"
    assert one == two == {"status": 100, "message": "Success", "accepted": 1, "rejected": 0,
                          "credit_total": "0.005",
                          "data": [{"number": "919876543210", "credit": "0.005"}]}


@pytest.mark.parametrize("request_kind", ["form", "idempotency", "query_token", "alias"])
async def test_other_requests_fall_back_to_the_route(app_client, make, fast_calls,
                                                     request_kind: str) -> None:
    client, _ = await app_client()
    project, token, _ = await make.project(credits="10")
    await make.channel(project.id, application=1, price="0.005")
    if request_kind == "form":
        answer = await client.post("/api/v2/push",
                                   data={"data": json.dumps({"token": token, **PUSH})})
    elif request_kind == "idempotency":
        answer = await client.post("/api/v2/push", json={"token": token, **PUSH},
                                   headers={"Idempotency-Key": "k1"})
    elif request_kind == "query_token":
        answer = await client.post(f"/api/v2/push?token={token}", json=PUSH)
    else:   # Picky's older base is a push path too, and fast
        answer = await client.post("/app/api/v2/push", json={"token": token, **PUSH})
    assert answer.status_code == 200 and answer.json()["status"] == 100
    assert len(fast_calls) == (1 if request_kind == "alias" else 0)


async def test_fast_path_refusals_are_the_routes(app_client, make, fast_calls) -> None:
    client, _ = await app_client()
    project, token, _ = await make.project(credits="10")
    await make.channel(project.id, application=1, price="0.005")
    for path in ("/api/v2/push", "/api/v2/push?via=route"):
        wrong = await client.post(path, json={"token": "nope", **PUSH})
        bearer = await client.post(path, json=PUSH, headers={"Authorization": f"Bearer {token}"})
        empty = await client.post(path, content=b" ", headers={"Content-Type": "application/json"})
        broken = await client.post(path, content=b"{", headers={"Content-Type": "application/json"})
        assert wrong.json()["status"] != 100 and bearer.json()["status"] == 100
        answers = [(a.status_code, a.json()["status"]) for a in (wrong, empty, broken)]
        if path == "/api/v2/push":
            fast_answers = answers
            assert len(fast_calls) == 2   # wrong token and bearer; the others fail before
        else:
            assert answers == fast_answers
    oversized = await client.post("/api/v2/push", json={"token": token, **PUSH},
                                  headers={"Content-Length": "999999999999"})
    assert oversized.json()["status"] != 100


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str) -> str:
        return name


async def test_a_head_goes_out_with_its_body_in_one_write() -> None:
    transport = _Transport()
    writes = HeadWithBody(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    writes.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert transport.writes == []
    writes.write(b"{}")
    assert transport.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    writes.write(b"next chunk")   # not a head: straight through
    assert transport.writes[-1] == b"next chunk"
    assert writes.get_extra_info("peername") == "peername"


async def test_a_head_without_its_body_goes_out_on_the_next_turn_or_close() -> None:
    transport = _Transport()
    writes = HeadWithBody(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    writes.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n")
    assert transport.writes == []
    await asyncio.sleep(0)
    assert transport.writes == [b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n"]
    writes.write(b"HTTP/1.1 100 Continue\r\n\r\n")   # never held
    assert transport.writes[-1] == b"HTTP/1.1 100 Continue\r\n\r\n"
    writes.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    writes.close()
    assert transport.writes[-1] == b"HTTP/1.1 204 No Content\r\n\r\n" and transport.closed
