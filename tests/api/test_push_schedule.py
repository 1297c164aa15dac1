"""Scheduled pushes through the HTTP API (issue 19.3): ``send_at`` in every body shape,
credits reserved at accept, messages pending (status 0) until their time, validity counted
from send_at, refusals that charge nothing, cancel before the time, and the dispatcher
sending them once due."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from pushgate.core.errors import Code
from pushgate.core.pricing import parse_credits

N1, N2 = "919876543210", "14155552671"
PRICE = parse_credits("0.005")
VALIDITY = 3600.0


async def _setup(app_client, make, run_workers: bool = False):
    project, token, _ = await make.project(credits="10")
    await make.channel(project.id, application=1, price="0.005")
    client, gateway = await app_client(run_workers=run_workers,
                                       message_validity_seconds=VALIDITY)
    return client, gateway, project, token


def _body(token: str, send_at: Any) -> dict[str, Any]:
    return {"token": token, "application": "1", "globalmessage": "later",
            "data": [{"number": N1}, {"number": N2}], "send_at": send_at}


def _messages(query, push_id: str) -> list[tuple[Any, ...]]:
    return query("SELECT state, expires_at FROM messages WHERE push_id = ? ORDER BY id",
                 int(push_id))


def _balance(query, project) -> int:
    return query("SELECT balance_micro FROM projects WHERE id = ?", project.id)[0][0]


def _shapes(token: str, send_at: Any) -> list[dict[str, Any]]:
    """The same push as a JSON body, a form's `data` field and the query's `data`."""
    payload = json.dumps(_body(token, send_at))
    return [{"json": _body(token, send_at)}, {"data": {"data": payload}},
            {"params": {"data": payload}}]


@pytest.mark.parametrize("shape", [0, 1, 2], ids=["json", "form", "query"])
@pytest.mark.parametrize("spelling", ["iso", "iso-z", "unix", "unix-string"])
async def test_send_at_is_read_in_every_body_shape_and_spelling(app_client, make, query,
                                                                shape, spelling) -> None:
    client, _, project, token = await _setup(app_client, make)
    at = round(time.time()) + 600
    moment = datetime.fromtimestamp(at, timezone(timedelta(hours=5, minutes=30)))
    value = {"iso": moment.isoformat(),
             "iso-z": datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z"),
             "unix": at, "unix-string": str(at)}[spelling]
    before = _balance(query, project)
    answer = (await client.post("/api/v2/push", **_shapes(token, value)[shape])).json()
    assert answer["status"] == 100, answer
    # Reserved now, pending until send_at, valid from send_at on.
    assert _balance(query, project) == before - 2 * PRICE
    assert _messages(query, answer["push_id"]) == [("scheduled", at + VALIDITY)] * 2
    assert query("SELECT send_at FROM pushes WHERE id = ?", int(answer["push_id"])) == [(at,)]


async def test_scheduled_push_reports_pending_and_its_send_at(app_client, make) -> None:
    client, _, _, token = await _setup(app_client, make)
    at = round(time.time()) + 600
    answer = (await client.post("/api/v2/push", json=_body(token, at))).json()
    report = (await client.post("/api/v2/delivery-report",
                                json={"token": token, "push_id": answer["push_id"]})).json()
    assert [item["status"] for item in report["data"]] == [0, 0]
    push = (await client.get(f"/api/v2/pushes/{answer['push_id']}",
                             headers={"authorization": f"Bearer {token}"})).json()
    assert push["data"]["send_at"].startswith(
        datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    assert push["data"]["counts"] == {"scheduled": 2}
    message = (await client.get(f"/api/v2/messages/{answer['data'][0]['msg_id']}",
                                headers={"authorization": f"Bearer {token}"})).json()
    assert message["data"]["status"] == 0


async def test_a_past_send_at_sends_now(app_client, make, query) -> None:
    client, _, _, token = await _setup(app_client, make)
    started = time.time()
    answer = (await client.post("/api/v2/push", json=_body(token, "2020-01-01T00:00:00Z"))).json()
    assert answer["status"] == 100, answer
    rows = _messages(query, answer["push_id"])
    assert [state for state, _ in rows] == ["queued", "queued"]
    # Validity from the accept time, as for any push sent now.
    assert all(started + VALIDITY <= expires <= time.time() + VALIDITY for _, expires in rows)
    assert query("SELECT send_at FROM pushes WHERE id = ?", int(answer["push_id"])) == [(None,)]


@pytest.mark.parametrize("value", [
    "tomorrow", "2026-13-01T00:00:00Z", "2030-01-01T09:00:00", "", True, 12.5,
    "1e12", 10**12, [1],
])
async def test_an_unreadable_or_too_distant_send_at_charges_nothing(app_client, make, query,
                                                                    value) -> None:
    client, _, project, token = await _setup(app_client, make)
    before = _balance(query, project)
    response = await client.post("/api/v2/push", json=_body(token, value))
    answer = response.json()
    # Not a string nor a number: the decoder refuses its type.
    expected = Code.INVALID_FIELD if isinstance(value, list | bool) else Code.INVALID_SEND_AT
    assert answer["status"] == int(expected), answer
    assert response.status_code == 422
    assert _balance(query, project) == before
    assert query("SELECT count(*) FROM messages") == [(0,)]


async def test_the_horizon_is_a_setting(app_client, make) -> None:
    project, token, _ = await make.project(credits="10")
    await make.channel(project.id, application=1)
    client, _ = await app_client(max_schedule_seconds=60)
    far = (await client.post("/api/v2/push", json=_body(token, time.time() + 120))).json()
    assert far["status"] == int(Code.INVALID_SEND_AT)
    assert "more than 60 seconds ahead" in far["message"]
    near = (await client.post("/api/v2/push", json=_body(token, time.time() + 30))).json()
    assert near["status"] == 100


async def test_cancel_a_scheduled_push_refunds_it(app_client, make, query) -> None:
    client, _, project, token = await _setup(app_client, make)
    before = _balance(query, project)
    answer = (await client.post("/api/v2/push", json=_body(token, time.time() + 600))).json()
    cancelled = (await client.post("/api/v2/push-cancel",
                                   json={"token": token, "push_id": answer["push_id"]})).json()
    assert (cancelled["status"], cancelled["cancelled"], cancelled["refunded"],
            cancelled["in_flight"]) == (100, 2, "0.01", 0)
    assert _balance(query, project) == before
    report = (await client.post("/api/v2/delivery-report",
                                json={"token": token, "push_id": answer["push_id"]})).json()
    assert [item["status"] for item in report["data"]] == [5, 5]


async def test_the_dispatcher_sends_a_scheduled_push_once_due(app_client, make, query) -> None:
    client, _, _, token = await _setup(app_client, make, run_workers=True)
    at = time.time() + 1.5
    scheduled = (await client.post("/api/v2/push", json=_body(token, at))).json()
    now = (await client.post("/api/v2/push", json={**_body(token, None)})).json()
    assert scheduled["status"] == 100 and now["status"] == 100
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = query("SELECT m.state, m.first_claim_at FROM messages m WHERE m.push_id = ?",
                     int(scheduled["push_id"]))
        if all(state not in ("scheduled", "queued", "sending") for state, _ in rows):
            break
        await asyncio.sleep(0.1)
    assert {state for state, _ in rows} <= {"submitted", "delivered", "read"}, rows
    # Never handed to the channel before its time.
    assert all(claimed >= at for _, claimed in rows), (rows, at)
