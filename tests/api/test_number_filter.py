"""Picky's WhatsApp number filter: a push with ``action: 1`` sends nothing, answers like a push
(status 100, a push id, each number's check id as ``msg_id``), charges the channel's
``check_price``, and the answers reach the project's event webhook as ``event_id: 2``, one entry
per number. The sandbox answers by its rule (an even last digit is on WhatsApp), the bridges
ask their session through their fakes' documented check endpoints, the other channels answer
from the number's validity and say so."""

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
from tests.fakes.evolution import FakeEvolution
from tests.fakes.server import serve_app
from tests.fakes.waha import FakeWaha

from pushgate.webhooks.signing import HEADER, verify

ON = "919876500002"    # even last digit: on WhatsApp in the sandbox
OFF = "919876500001"


class EventReceiver:
    """The project's event webhook: keeps each POST's body and signature check."""

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
        return Response(b"{}", media_type="application/json")

    async def entries(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The first ``count`` number answers (event 2), however they were batched."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [entry for body, _ in self.posts if body["event_id"] == 2
                         for entry in body["data"]]
            if len(found) >= count:
                return sorted(found, key=lambda e: int(e["msg_id"]))
            await asyncio.sleep(0.02)
        raise AssertionError(f"{len(self.posts)} event webhook POSTs, want {count} answers")


@pytest.fixture
def receiver() -> Iterator[tuple[EventReceiver, str]]:
    events = EventReceiver()
    with serve_app(events.app) as url:
        yield events, url


async def _project(make: Any, receiver: EventReceiver, url: str,
                   credits: str = "10") -> tuple[Any, str]:
    project, token, secret = await make.project(credits=credits, webhook_url=f"{url}/events")
    receiver.secret = secret
    return project, token


async def _filter(client: Any, token: str, application: str, numbers: list[Any],
                  **extra: Any) -> dict[str, Any]:
    response = await client.post("/api/v2/push", json={
        "token": token, "application": application, "action": "1",
        "data": [{"number": n} for n in numbers], **extra})
    return response.json()


async def test_sandbox_filter_answers_like_a_push_and_reports_event_2(
        app_client: Any, make: Any, query: Any, receiver: tuple[EventReceiver, str]) -> None:
    events, url = receiver
    project, token = await _project(make, events, url)
    channel = await make.channel(project.id, application=10, price="0.5")
    client, _ = await app_client(run_workers=True)

    answer = await _filter(client, token, "10", [ON, int(OFF), "12345", ON],
                           globalmessage="never sent")
    assert answer["status"] == 100 and answer["message"] == "Success", answer
    assert isinstance(answer["push_id"], str)
    on, off, invalid, repeat = answer["data"]
    assert on["number"] == ON and off["number"] == OFF
    assert on["status"] == off["status"] == "0" and on["credit"] == "0"
    assert isinstance(on["msg_id"], str) and isinstance(off["msg_id"], str)
    assert invalid["status"] == 201 and repeat["status"] == 207
    assert repeat["duplicate_of"] == on["msg_id"]
    assert answer["credit_total"] == "0" and answer["balance"] == "10"

    first, second = await events.entries(2)
    assert first == {"push_id": answer["push_id"], "msg_id": on["msg_id"], "number": ON,
                     "status": 1, "is_whatsapp": True, "checked_by": "sandbox",
                     "chat_id": None, "reason": None, "channel_id": channel.id,
                     "time": first["time"]}
    assert (second["number"], second["status"], second["is_whatsapp"]) == (OFF, 0, False)
    body, signed = events.posts[0]
    assert body["project_id"] == project.id and body["event_id"] == 2 and signed
    assert query("SELECT count(*) FROM messages")[0][0] == 0


async def test_a_check_costs_the_channels_check_price(app_client: Any, make: Any,
                                                      receiver: tuple[EventReceiver, str]
                                                      ) -> None:
    events, url = receiver
    project, token = await _project(make, events, url, credits="1")
    await make.channel(project.id, application=10, config={"check_price": "0.4"})
    client, _ = await app_client()
    answer = await _filter(client, token, "10", [ON, OFF])
    assert answer["status"] == 100, answer
    assert [e["credit"] for e in answer["data"]] == ["0.4", "0.4"]
    assert answer["credit_total"] == "0.8" and answer["balance"] == "0.2"
    refused = await _filter(client, token, "10", [ON])
    assert refused["status"] == 420, refused


async def test_an_action_other_than_send_or_filter_is_refused(app_client: Any,
                                                              make: Any) -> None:
    project, token, _ = await make.project()
    await make.channel(project.id, application=10)
    client, _ = await app_client()
    answer = await _filter(client, token, "10", [ON], action=2)
    assert answer["status"] == 842, answer
    only_invalid = await _filter(client, token, "10", ["12"])
    assert only_invalid["status"] == 201 and only_invalid["data"][0]["status"] == 201


async def test_waha_asks_check_exists_for_each_number(app_client: Any, make: Any,
                                                      receiver: tuple[EventReceiver, str]
                                                      ) -> None:
    events, url = receiver
    fake = FakeWaha()
    fake.not_on_whatsapp = {ON}
    fake.chat_ids = {"5511999999999": "551199999999@c.us"}
    with serve_app(fake.app) as waha_url:
        project, token = await _project(make, events, url)
        await make.channel(project.id, application=10, kind="waha", delay_ms=0, jitter_ms=0,
                           config={"base_url": waha_url, "api_key": fake.api_key,
                                   "insecure_callbacks": True})
        client, _ = await app_client(run_workers=True)
        answer = await _filter(client, token, "10", [ON, "5511999999999"])
        assert answer["status"] == 100, answer
        off, brazil = await events.entries(2)
    assert (off["number"], off["is_whatsapp"], off["checked_by"]) == (ON, False, "waha")
    assert brazil["is_whatsapp"] is True and brazil["chat_id"] == "551199999999@c.us"
    calls = fake.requests_to("/api/contacts/check-exists")
    assert sorted(c.query["phone"] for c in calls) == sorted([ON, "5511999999999"])
    assert fake.sent == []


async def test_evolution_asks_whatsapp_numbers_once_per_claim(
        app_client: Any, make: Any, receiver: tuple[EventReceiver, str]) -> None:
    events, url = receiver
    fake = FakeEvolution()
    fake.not_on_whatsapp = {OFF}
    with serve_app(fake.app) as evo_url:
        project, token = await _project(make, events, url)
        await make.channel(project.id, application=10, kind="evolution", delay_ms=0,
                           jitter_ms=0,
                           config={"base_url": evo_url, "api_key": fake.api_key,
                                   "instance": fake.instance, "insecure_callbacks": True})
        client, _ = await app_client(run_workers=True)
        answer = await _filter(client, token, "10", [ON, OFF])
        assert answer["status"] == 100, answer
        on, off = await events.entries(2)
    assert (on["is_whatsapp"], on["checked_by"], on["chat_id"]) == (
        True, "evolution", f"{ON}@s.whatsapp.net")
    assert (off["is_whatsapp"], off["chat_id"]) == (False, None)
    [call] = fake.requests_to(f"/chat/whatsappNumbers/{fake.instance}")
    assert call.json == {"numbers": [ON, OFF]} and call.headers["apikey"] == fake.api_key
    assert fake.sent == []


async def test_a_bridge_whose_session_is_down_keeps_the_checks_waiting(
        app_client: Any, make: Any, query: Any, receiver: tuple[EventReceiver, str]) -> None:
    events, url = receiver
    fake = FakeEvolution()
    fake.connection_state = "close"
    with serve_app(fake.app) as evo_url:
        project, token = await _project(make, events, url)
        await make.channel(project.id, application=10, kind="evolution", delay_ms=0,
                           jitter_ms=0,
                           config={"base_url": evo_url, "api_key": fake.api_key,
                                   "instance": fake.instance, "insecure_callbacks": True})
        client, _ = await app_client(run_workers=True)
        assert (await _filter(client, token, "10", [ON]))["status"] == 100
        deadline = time.monotonic() + 10
        while not query("SELECT attempts FROM number_checks")[0][0]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
    assert query("SELECT checked_at FROM number_checks") == [(None,)]
    assert fake.requests_to(f"/chat/whatsappNumbers/{fake.instance}") == []
    assert events.posts == []


@pytest.mark.parametrize("kind", ["whatsapp_cloud", "android"])
async def test_cloud_and_sms_channels_answer_from_validity(
        app_client: Any, make: Any, receiver: tuple[EventReceiver, str], kind: str) -> None:
    events, url = receiver
    project, token = await _project(make, events, url)
    if kind == "whatsapp_cloud":
        application = 8
        config: dict[str, Any] = {"phone_number_id": "1", "access_token": "t",
                                  "app_secret": "s", "verify_token": "v"}
    else:
        application = 3
        config = {"private_token": "private-token-for-tests-0123456789"}
    await make.channel(project.id, application=application, kind=kind, config=config)
    client, gateway = await app_client(run_workers=True, channel_lease_seconds=0.3)
    answer = await _filter(client, token, str(application), [OFF])
    assert answer["status"] == 100, answer
    [entry] = await events.entries(1)
    assert (entry["number"], entry["is_whatsapp"], entry["checked_by"]) == (
        OFF, True, "validity")


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_checks_of_a_bridge_that_stays_down_give_up_and_are_reported(
        app_client: Any, make: Any, receiver: tuple[EventReceiver, str]) -> None:
    events, url = receiver
    fake = FakeWaha()
    fake.fail_next(10_000, 503)       # every check-exists call, for the whole test
    with serve_app(fake.app) as waha_url:
        project, token = await _project(make, events, url)
        channel = await make.channel(project.id, application=10, kind="waha", delay_ms=0,
                                     jitter_ms=0,
                                     config={"base_url": waha_url, "api_key": fake.api_key,
                                             "insecure_callbacks": True})
        client, _ = await app_client(run_workers=True, channel_lease_seconds=0.3,
                                     number_check_timeout_seconds=1.0)
        answer = await _filter(client, token, "10", [ON, OFF])
        assert answer["status"] == 100, answer
        on, off = await events.entries(2)
        pushed = await client.get(f"/api/v2/pushes/{answer['push_id']}",
                                  headers=_bearer(token))
    assert fake.requests_to("/api/contacts/check-exists"), "the bridge was asked"
    for entry, number in ((on, ON), (off, OFF)):
        assert (entry["number"], entry["status"], entry["is_whatsapp"], entry["checked_by"],
                entry["channel_id"]) == (number, None, None, "gave_up", channel.id)
        assert "1 s" in entry["reason"]
    assert fake.sent == []
    data = pushed.json()["data"]
    assert data["action"] == 1 and data["accepted"] == 2
    assert [(c["number"], c["state"], c["status"], c["checked_by"]) for c in data["checks"]] == [
        (ON, "gave_up", None, "gave_up"), (OFF, "gave_up", None, "gave_up")]
    assert data["checks"][0]["reason"] == on["reason"]
    assert [str(c["msg_id"]) for c in data["checks"]] == [on["msg_id"], off["msg_id"]]


async def test_a_project_without_event_webhook_reads_its_answers_on_the_push(
        app_client: Any, make: Any) -> None:
    project, token, _ = await make.project()
    await make.channel(project.id, application=10)
    client, _ = await app_client(run_workers=True)
    answer = await _filter(client, token, "10", [ON, OFF])
    push_url = f"/api/v2/pushes/{answer['push_id']}"
    deadline = time.monotonic() + 10
    while True:
        data = (await client.get(push_url, headers=_bearer(token))).json()["data"]
        if all(c["state"] == "checked" for c in data["checks"]):
            break
        assert time.monotonic() < deadline, data
        await asyncio.sleep(0.05)
    on, off = data["checks"]
    assert on["msg_id"] == int(answer["data"][0]["msg_id"])
    assert (on["number"], on["status"], on["is_whatsapp"], on["checked_by"], on["reason"]) == (
        ON, 1, True, "sandbox", None)
    assert (off["number"], off["status"], off["is_whatsapp"]) == (OFF, 0, False)
    assert on["checked_at"] is not None and on["attempts"] == 1
    assert data["counts"] == {}


async def test_a_large_filter_push_streams_every_check_on_the_push(app_client: Any,
                                                                   make: Any) -> None:
    project, token, _ = await make.project()
    await make.channel(project.id, application=10)
    client, _ = await app_client()
    numbers = [f"9198765{i:05d}" for i in range(2500)]
    answer = await _filter(client, token, "10", numbers)
    assert answer["status"] == 100, answer
    response = await client.get(f"/api/v2/pushes/{answer['push_id']}", headers=_bearer(token))
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["status"] == 100 and body["message"] == "Success"
    checks = body["data"]["checks"]
    assert [c["number"] for c in checks] == numbers
    assert {(c["state"], c["status"], c["checked_by"], c["checked_at"]) for c in checks} == {
        ("queued", None, None, None)}
    sent = (await client.post("/api/v2/push", json={
        "token": token, "application": "10", "globalmessage": "hi",
        "data": [{"number": ON}]})).json()
    assert sent["status"] == 100, sent
    plain = (await client.get(f"/api/v2/pushes/{sent['push_id']}",
                              headers=_bearer(token))).json()["data"]
    assert "checks" not in plain and "action" not in plain


async def test_checks_of_a_paused_channel_give_up_unasked(
        app_client: Any, make: Any, receiver: tuple[EventReceiver, str]) -> None:
    events, url = receiver
    project, token = await _project(make, events, url)
    await make.channel(project.id, application=10, paused=True)
    client, _ = await app_client(run_workers=True, channel_lease_seconds=0.3,
                                 number_check_timeout_seconds=0.5)
    answer = await _filter(client, token, "10", [ON])
    assert answer["status"] == 100, answer
    [entry] = await events.entries(1)
    assert (entry["number"], entry["is_whatsapp"], entry["checked_by"]) == (
        ON, None, "gave_up")
    [check] = (await client.get(f"/api/v2/pushes/{answer['push_id']}",
                                headers=_bearer(token))).json()["data"]["checks"]
    assert (check["state"], check["attempts"], check["reason"]) == (
        "gave_up", 0, entry["reason"])
