"""Instant reply: the project's incoming webhook answers a user's message with a JSON body and
pushgate sends it back to that user on the channel the message came in on, as a push of its
own (charged, queued, reported with a push id), without a push call. Answers that carry no
reply, or that are too large or too slow, send nothing; one number gets at most one instant
reply per interval; a reply the balance cannot pay is not sent."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from tests.fakes.server import serve_app

USER = "919876543210"
PRICE_MICRO = 5000   # the channel's price, 0.005


class AnsweringWebhook:
    """The project's incoming webhook (``/in``), answering what the test sets, and its event
    webhook (``/events``), keeping the delivery reports."""

    def __init__(self) -> None:
        self.answer: bytes = b"{}"
        self.content_type = "application/json"
        self.trickle = 0.0   # seconds between the answer's two halves, sent as a stream
        self.incoming: list[dict[str, Any]] = []
        self.reports: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.app = Starlette(routes=[Route("/in", self.incoming_post, methods=["POST"]),
                                     Route("/events", self.events_post, methods=["POST"])])

    async def incoming_post(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        with self.lock:
            self.incoming.append(body)
        if not self.trickle:
            return Response(self.answer, media_type=self.content_type)
        answer, pause = self.answer, self.trickle

        async def halves() -> AsyncIterator[bytes]:
            yield answer[: len(answer) // 2]
            await asyncio.sleep(pause)
            yield answer[len(answer) // 2:]

        return StreamingResponse(halves(), media_type=self.content_type)

    async def events_post(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        with self.lock:
            self.reports.extend(body["data"])
        return Response(b"{}", media_type="application/json")

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.incoming) >= count:
                    return
            await asyncio.sleep(0.02)
        raise AssertionError(f"{len(self.incoming)} of {count} incoming webhook POSTs arrived")


@pytest.fixture
def webhook() -> Iterator[tuple[AnsweringWebhook, str]]:
    receiver = AnsweringWebhook()
    with serve_app(receiver.app) as url:
        yield receiver, url


async def _setup(make: Any, store: Any, url: str, credits: str = "100") -> tuple[Any, str, Any]:
    project, token, _secret = await make.project(credits=credits, webhook_url=f"{url}/events")
    await store.set_incoming_webhook(project.id, f"{url}/in")
    channel = await make.channel(project.id, application=10)
    return project, token, channel


async def _user_writes(client: Any, token: str, text: str = "hello",
                       number: str = USER) -> None:
    answer = await client.post("/api/v2/sandbox/inbound", json={
        "token": token, "application": 10, "number": number, "message": text})
    assert answer.json()["status"] == 100, answer.json()


async def _inbox(client: Any, token: str, count: int,
                 timeout: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        data: list[dict[str, Any]] = (await client.get(
            "/api/v2/sandbox/inbox", params={"token": token})).json()["data"]
        if len(data) >= count or time.monotonic() > deadline:
            return data
        await asyncio.sleep(0.05)


async def _nothing_sent(client: Any, token: str, receiver: AnsweringWebhook,
                        posts: int = 1) -> None:
    await receiver.wait_for(posts)
    await asyncio.sleep(0.6)   # time enough for a reply to be accepted, were there one
    assert await _inbox(client, token, 0) == []


async def test_a_message_answer_goes_back_to_the_user_charged_and_reported(
        app_client: Any, make: Any, store: Any, webhook: tuple[AnsweringWebhook, str]) -> None:
    receiver, url = webhook
    project, token, channel = await _setup(make, store, url)
    receiver.answer = orjson.dumps({"message": "Thanks, we are on it"})
    client, _ = await app_client(run_workers=True)

    await _user_writes(client, token, "my meter is broken")
    [reply] = await _inbox(client, token, 1)
    assert (reply["number"], reply["message"], reply["channel_id"]) == (
        USER, "Thanks, we are on it", channel.id)
    assert reply["credit"] == "0.005"
    assert (await store.get_project(project.id)).balance_micro == 100_000_000 - PRICE_MICRO

    detail = (await client.get(f"/api/v2/messages/{reply['msg_id']}",
                               params={"token": token})).json()["data"]
    assert detail["priority"] == 1
    report = (await client.post("/api/v2/delivery-report", json={
        "token": token, "push_id": str(detail["push_id"])})).json()
    assert report["status"] == 100 and report["push_id"] == str(detail["push_id"])
    assert [(item["msg_id"], item["number"]) for item in report["data"]] == [
        (str(reply["msg_id"]), USER)]
    # The event webhook reports it like any pushed message, with its push id.
    deadline = time.monotonic() + 10
    while not any(str(r["push_id"]) == str(detail["push_id"]) for r in receiver.reports):
        assert time.monotonic() < deadline, receiver.reports
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("answer, expected", [
    ({"globalmessage": "Hi from the shop", "globalmedia": "https://cdn.example/menu.jpg"},
     [("Hi from the shop", "https://cdn.example/menu.jpg")]),
    ({"data": [{"number": "910000000001", "message": "first"},
               {"message": "second", "media": "https://cdn.example/map.jpg"}]},
     [("first", None), ("second", "https://cdn.example/map.jpg")]),
    ({"globalmessage": "for each", "data": [{"number": USER}]}, [("for each", None)]),
], ids=["globalmessage", "data-list", "data-with-globalmessage"])
async def test_globalmessage_and_data_list_answers(
        app_client: Any, make: Any, store: Any, webhook: tuple[AnsweringWebhook, str],
        answer: dict[str, Any], expected: list[tuple[str, str | None]]) -> None:
    receiver, url = webhook
    project, token, _channel = await _setup(make, store, url)
    receiver.answer = orjson.dumps(answer)
    client, _ = await app_client(run_workers=True)
    await _user_writes(client, token)
    replies = await _inbox(client, token, len(expected))
    # Every reply goes to the user who wrote, whatever number the answer's data names.
    assert sorted((r["message"], r["media"]) for r in replies) == sorted(expected)
    assert {r["number"] for r in replies} == {USER}
    assert (await store.get_project(project.id)).balance_micro == \
        100_000_000 - PRICE_MICRO * len(expected)


@pytest.mark.parametrize("answer, content_type, trickle", [
    (b"Thanks!", "text/plain", 0.0),
    (b"", "application/json", 0.0),
    (b"{}", "application/json", 0.0),
    (b'["not", "a", "reply"]', "application/json", 0.0),
    (orjson.dumps({"message": "x" * 300}), "application/json", 0.0),
    (orjson.dumps({"message": "x" * 300}), "application/json", 0.01),
    (orjson.dumps({"message": "too slow"}), "application/json", 1.5),
], ids=["not-json", "empty", "empty-object", "not-an-object", "oversize",
        "oversize-streamed", "slow"])
async def test_answers_without_a_usable_reply_send_nothing(
        app_client: Any, make: Any, store: Any, webhook: tuple[AnsweringWebhook, str],
        answer: bytes, content_type: str, trickle: float) -> None:
    receiver, url = webhook
    project, token, _channel = await _setup(make, store, url)
    receiver.answer, receiver.content_type, receiver.trickle = answer, content_type, trickle
    client, _ = await app_client(run_workers=True, instant_reply_max_bytes=200,
                                 webhook_timeout_seconds=0.8)
    await _user_writes(client, token)
    await _nothing_sent(client, token, receiver)
    if trickle > 1:
        await asyncio.sleep(1.0)   # past the answer's end
        assert await _inbox(client, token, 0) == []
    assert (await store.get_project(project.id)).balance_micro == 100_000_000


async def test_one_instant_reply_per_number_per_interval(
        app_client: Any, make: Any, store: Any, webhook: tuple[AnsweringWebhook, str]) -> None:
    receiver, url = webhook
    _project, token, _channel = await _setup(make, store, url)
    receiver.answer = orjson.dumps({"message": "auto-answer"})
    client, _ = await app_client(run_workers=True)
    await _user_writes(client, token, "one")
    await _inbox(client, token, 1)
    await _user_writes(client, token, "two")
    await _user_writes(client, token, "hi", number="919876500000")   # another user
    await receiver.wait_for(3)
    await asyncio.sleep(0.6)
    replies = await _inbox(client, token, 3)
    assert sorted(r["number"] for r in replies) == ["919876500000", USER]


async def test_the_interval_is_configurable(
        app_client: Any, make: Any, store: Any, webhook: tuple[AnsweringWebhook, str]) -> None:
    receiver, url = webhook
    _project, token, _channel = await _setup(make, store, url)
    receiver.answer = orjson.dumps({"message": "auto-answer"})
    client, _ = await app_client(run_workers=True, instant_reply_interval_seconds=0)
    await _user_writes(client, token, "one")
    await _inbox(client, token, 1)
    await _user_writes(client, token, "two")
    assert len(await _inbox(client, token, 2)) == 2


async def test_a_reply_the_balance_cannot_pay_is_not_sent_and_keeps_the_number_free(
        app_client: Any, make: Any, store: Any, webhook: tuple[AnsweringWebhook, str]) -> None:
    receiver, url = webhook
    project, token, _channel = await _setup(make, store, url, credits="0")
    receiver.answer = orjson.dumps({"message": "auto-answer"})
    client, _ = await app_client(run_workers=True)
    await _user_writes(client, token, "one")
    await _nothing_sent(client, token, receiver)
    # Credit added: the next message is answered, the refused reply did not hold the guard.
    await store.add_credits(project.id, 1_000_000, "test")
    await _user_writes(client, token, "two")
    [reply] = await _inbox(client, token, 1)
    assert reply["message"] == "auto-answer"


async def test_a_reply_text_the_channel_refuses_is_not_sent(
        app_client: Any, make: Any, store: Any, webhook: tuple[AnsweringWebhook, str]) -> None:
    receiver, url = webhook
    project, token, _channel = await _setup(make, store, url)
    receiver.answer = orjson.dumps({"message": "x" * 10_000})   # over the channel's length
    client, _ = await app_client(run_workers=True)
    await _user_writes(client, token)
    await _nothing_sent(client, token, receiver)
    assert (await store.get_project(project.id)).balance_micro == 100_000_000
