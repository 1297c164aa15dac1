"""Opt-outs over HTTP: ``GET/POST/DELETE /api/v2/optouts`` keep the project's list; a push to
an opted-out number is refused in its place (213, credit "0"); a user's STOP played through
``POST /api/v2/sandbox/inbound`` opts the number out, sends the project's confirmation (the
one message an opted-out number gets) and event 4 to its event webhook; START opts it back in.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tests.fakes.server import serve_app

from pushgate.core.optouts import KeywordSettings
from pushgate.webhooks.signing import HEADER, verify

USER = "919876543210"


class EventReceiver:
    def __init__(self) -> None:
        self.secret = ""
        self.posts: list[tuple[dict[str, Any], bool]] = []
        self.lock = threading.Lock()
        self.app = Starlette(routes=[Route("/events", self.event, methods=["POST"])])

    async def event(self, request: Request) -> Response:
        body = await request.body()
        with self.lock:
            self.posts.append((orjson.loads(body),
                               verify(self.secret, request.headers.get(HEADER, ""), body)))
        return Response(b"ok")

    async def events(self, event_id: int, count: int, timeout: float = 10.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [body for body, signed in self.posts
                         if body["event_id"] == event_id and signed]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.02)
        raise AssertionError(f"{len(found)} of {count} event {event_id} POSTs arrived")


async def sandbox_sent(client: Any, token: str, count: int,
                       timeout: float = 10.0) -> list[tuple[str, str]]:
    """What the project's sandbox channels have sent, once ``count`` messages are there."""
    deadline = time.monotonic() + timeout
    sent: list[tuple[str, str]] = []
    while time.monotonic() < deadline:
        inbox = await client.get("/api/v2/sandbox/inbox", params={"token": token})
        sent = [(m["number"], m["message"]) for m in inbox.json()["data"]]
        if len(sent) >= count:
            return sent
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(sent)} of {count} messages sent")


@pytest.fixture
def receiver() -> Iterator[tuple[EventReceiver, str]]:
    events = EventReceiver()
    with serve_app(events.app) as url:
        yield events, url


async def test_the_list_over_http_in_any_spelling(app_client: Any, make: Any) -> None:
    project, token, _ = await make.project()
    client, _ = await app_client()
    added = await client.post("/api/v2/optouts", json={
        "token": token, "numbers": ["+91 98765 43210", 919876543211, "0091-98765-43212"]})
    assert added.json() == {"status": 100, "message": "Success", "added": 3,
                            "numbers": ["919876543210", "919876543211", "919876543212"]}
    again = await client.post("/api/v2/optouts", json={"token": token, "number": USER})
    assert again.json()["added"] == 0
    bad = await client.post("/api/v2/optouts", json={"token": token, "numbers": ["12", "x"]})
    assert bad.json()["status"] == 406
    page = await client.get("/api/v2/optouts", params={"limit": 2},
                            headers={"Authorization": f"Bearer {token}"})
    body = page.json()
    assert body["total"] == 3 and body["next"] == "919876543211"
    assert [(i["number"], i["source"]) for i in body["data"]] == [
        ("919876543210", "api"), ("919876543211", "api")]
    rest = await client.get("/api/v2/optouts", params={"token": token, "after": body["next"]})
    assert [i["number"] for i in rest.json()["data"]] == ["919876543212"]
    assert rest.json()["next"] is None
    removed = await client.request("DELETE", "/api/v2/optouts",
                                   json={"token": token, "numbers": ["+919876543211"]})
    assert removed.json()["removed"] == 1
    gone = await client.request("DELETE", f"/api/v2/optouts?token={token}&number={USER}")
    assert gone.json()["removed"] == 1
    unauthorised = await client.get("/api/v2/optouts", params={"token": "nope"})
    assert unauthorised.json()["status"] == 401
    other, other_token, _ = await make.project()
    assert (await client.get("/api/v2/optouts", params={"token": other_token})).json()[
        "total"] == 0
    assert project.id != other.id


async def test_a_push_entry_to_an_opted_out_number_is_refused_in_place(
        app_client: Any, make: Any, store: Any) -> None:
    project, token, _ = await make.project(credits="1")
    await make.channel(project.id)
    client, _ = await app_client()
    await client.post("/api/v2/optouts", json={"token": token, "numbers": [f"+{USER}"]})
    answer = await client.post("/api/v2/push", json={
        "token": token, "application": 1, "globalmessage": "hi",
        "data": [{"number": "919876543219"}, {"number": USER}, {"number": "919876543218"}]})
    body = answer.json()
    assert body["status"] == 100
    assert [item.get("status") for item in body["data"]] == [None, 213, None]
    assert body["data"][1]["credit"] == "0" and body["data"][1]["number"] == USER
    assert (body["accepted"], body["rejected"], body["credit_total"]) == (2, 1, "0.01")
    only = await client.post("/api/v2/push", json={
        "token": token, "application": 1, "globalmessage": "hi", "data": [{"number": USER}]})
    refused = only.json()
    assert refused["status"] == 213
    assert refused["data"] == [{"number": USER, "credit": "0", "status": 213,
                                "message": refused["data"][0]["message"]}]
    after = await store.get_project(project.id)
    assert after is not None and after.balance_micro == 1_000_000 - 2 * 5_000


async def test_a_users_stop_opts_out_confirms_and_reports_event_4_and_start_opts_back_in(
        app_client: Any, make: Any, store: Any,
        receiver: tuple[EventReceiver, str]) -> None:
    events, url = receiver
    project, token, secret = await make.project(credits="1", webhook_url=f"{url}/events")
    events.secret = secret
    channel = await make.channel(project.id, application=10)
    await store.set_keyword_settings(project.id, KeywordSettings(
        stop_reply="You will get no more messages. Write START to come back."))
    client, _ = await app_client(run_workers=True)

    wrote = await client.post("/api/v2/sandbox/inbound", json={
        "token": token, "application": "10", "number": USER, "message": " Stop "})
    assert wrote.json()["status"] == 100
    (stopped,) = await events.events(4, 1)
    assert stopped["project_id"] == project.id
    assert [(d["number"], d["status"], d["keyword"], d["channel_id"])
            for d in stopped["data"]] == [(USER, "opted_out", "STOP", channel.id)]
    assert [o.number for o in await store.list_optouts(project.id, "", 10)] == [USER]
    # The confirmation went to the number that just opted out, as its one message.
    assert await sandbox_sent(client, token, 1) == [
        (USER, "You will get no more messages. Write START to come back.")]

    refused = await client.post("/api/v2/push", json={
        "token": token, "application": 10, "globalmessage": "sale!",
        "data": [{"number": USER}]})
    assert refused.json()["status"] == 213
    assert refused.json()["data"][0]["credit"] == "0"

    await client.post("/api/v2/sandbox/inbound", json={
        "token": token, "application": "10", "number": USER, "message": "start"})
    started = await events.events(4, 2)
    assert started[1]["data"][0]["status"] == "opted_in"
    assert await store.count_optouts(project.id) == 0
    sent = await client.post("/api/v2/push", json={
        "token": token, "application": 10, "globalmessage": "welcome back",
        "data": [{"number": USER}]})
    assert sent.json()["status"] == 100 and "status" not in sent.json()["data"][0]
