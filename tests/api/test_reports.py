"""Report endpoints, health, the OpenAPI document and the generated error-code table."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from pushgate.core.errors import CODES, Code, render_markdown
from pushgate.core.pricing import parse_credits

REPO = Path(__file__).resolve().parents[2]
NUMBERS = ["919876543210", "14155552671", "919812345678"]


async def _setup(app_client, make, run_workers: bool = False, credits: str = "10",
                 **channel: Any):
    # The channel exists before the app starts, so a dispatcher runs it from its first refresh.
    project, token, _ = await make.project(credits=credits, name="main")
    spec = await make.channel(project.id, application=1, price="0.005", **channel)
    settings: dict[str, Any] = {"idle_poll_seconds": 0.05} if run_workers else {}
    client, gateway = await app_client(run_workers=run_workers, **settings)
    return client, gateway, project, token, spec


async def _push(client, token: str, numbers: list[str] = NUMBERS, **fields: Any) -> dict[str, Any]:
    response = await client.post("/api/v2/push", json={
        "token": token, "application": "1", "globalmessage": "hello",
        "data": [{"number": n, "reference_number": f"ref-{i}"} for i, n in enumerate(numbers)],
        **fields})
    body = response.json()
    assert body["status"] == 100, body
    return body


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def _wait_for(check, what: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


async def test_delivery_report_shape(app_client, make) -> None:
    client, gateway, project, token, channel = await _setup(app_client, make)
    accepted = await _push(client, token)
    response = await client.post("/api/v2/delivery-report",
                                 json={"token": token, "push_id": accepted["push_id"]})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    report = response.json()
    assert report["status"] == 100 and report["message"] == "Success"
    assert report["push_id"] == accepted["push_id"]
    assert report["project_id"] == str(project.id)
    assert report["application"] == 1 and report["channel_id"] == channel.id
    assert [(i["msg_id"], i["number"], i["status"], i["reference_number"])
            for i in report["data"]] == [
        (e["msg_id"], e["number"], 0, f"ref-{n}") for n, e in enumerate(accepted["data"])]
    assert all(i["state"] == "queued" and i["credit"] == "0.005" for i in report["data"])
    # push_id as a number, the token as a Bearer header, and the form post all work.
    by_number = await client.post("/api/v2/delivery-report",
                                  json={"push_id": int(accepted["push_id"])},
                                  headers=_bearer(token))
    assert by_number.json() == report
    form = await client.post("/api/v2/delivery-report", data={"data": json.dumps(
        {"token": token, "push_id": accepted["push_id"]})})
    assert form.json() == report


async def test_delivery_report_of_a_large_push_streams_every_message(app_client, make) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make, credits="100")
    numbers = [f"9198765{i:05d}" for i in range(2500)]    # more than one store chunk
    accepted = await _push(client, token, numbers)
    report = (await client.post("/api/v2/delivery-report",
                                json={"token": token, "push_id": accepted["push_id"]})).json()
    assert [i["msg_id"] for i in report["data"]] == [e["msg_id"] for e in accepted["data"]]


async def test_push_and_message_endpoints_while_queued(app_client, make) -> None:
    client, gateway, project, token, channel = await _setup(app_client, make)
    accepted = await _push(client, token, priority="1")
    push = await client.get(f"/api/v2/pushes/{accepted['push_id']}", headers=_bearer(token))
    assert push.status_code == 200
    body = push.json()
    assert body["status"] == 100
    data = body["data"]
    assert data["push_id"] == int(accepted["push_id"])
    assert data["channel_id"] == channel.id and data["priority"] == 1
    assert data["entries"] == 3 and data["accepted"] == 3
    assert data["credit"] == "0.015"
    assert data["counts"] == {"queued": 3}
    assert datetime.fromisoformat(data["created_at"]).utcoffset() is not None

    msg_id = accepted["data"][1]["msg_id"]
    message = await client.get(f"/api/v2/messages/{msg_id}", params={"token": token})
    assert message.status_code == 200
    data = message.json()["data"]
    assert data["msg_id"] == int(msg_id) and data["number"] == NUMBERS[1]
    assert data["push_id"] == int(accepted["push_id"])
    assert data["state"] == "queued" and data["status"] == 0
    assert data["message"] == "hello" and data["reference_number"] == "ref-1"
    assert data["credit"] == "0.005" and data["priority"] == 1
    assert [e["state"] for e in data["events"]] == ["queued"]
    # pushgate's own endpoints: ISO 8601 times with their offset.
    for stamp in (data["events"][0]["at"], data["created_at"], data["updated_at"]):
        assert datetime.fromisoformat(stamp).utcoffset() is not None, stamp


async def test_reports_follow_the_sandbox_delivery(app_client, make) -> None:
    client, gateway, project, token, channel = await _setup(app_client, make, run_workers=True)
    other, other_token, _ = await make.project(credits="10", name="other")
    await make.channel(other.id, application=1)
    accepted = await _push(client, token)
    push_id = accepted["push_id"]

    async def delivered() -> dict[str, Any] | None:
        body = (await client.get(f"/api/v2/pushes/{push_id}", headers=_bearer(token))).json()
        return body if body["data"]["counts"] == {"delivered": 3} else None

    await _wait_for(delivered, "every message delivered")
    report = (await client.post("/api/v2/delivery-report",
                                json={"token": token, "push_id": push_id})).json()
    assert [(i["msg_id"], i["status"], i["state"]) for i in report["data"]] == [
        (e["msg_id"], 1, "delivered") for e in accepted["data"]]

    message = (await client.get(f"/api/v2/messages/{accepted['data'][0]['msg_id']}",
                                headers=_bearer(token))).json()["data"]
    states = [e["state"] for e in message["events"]]
    assert states[0] == "queued" and states[-1] == "delivered"
    assert "submitted" in states and states.index("submitted") < states.index("delivered")
    times = [datetime.fromisoformat(e["at"]) for e in message["events"]]
    assert times == sorted(times)
    # The texts sort as the times do (one width, one offset).
    assert [e["at"] for e in message["events"]] == sorted(e["at"] for e in message["events"])
    assert message["provider_id"]

    inbox = await client.get("/api/v2/sandbox/inbox", headers=_bearer(token))
    assert inbox.status_code == 200
    rows = inbox.json()["data"]
    assert inbox.json()["status"] == 100
    assert sorted(r["msg_id"] for r in rows) == sorted(int(e["msg_id"]) for e in accepted["data"])
    assert all(r["state"] == "delivered" and r["message"] == "hello" for r in rows)
    assert all(r["credit"] == "0.005" for r in rows)
    assert all(datetime.fromisoformat(r["updated_at"]).utcoffset() is not None for r in rows)
    limited = (await client.get("/api/v2/sandbox/inbox", params={"limit": 2},
                                headers=_bearer(token))).json()["data"]
    assert len(limited) == 2
    # Another project's inbox does not show them.
    assert (await client.get("/api/v2/sandbox/inbox",
                             headers=_bearer(other_token))).json()["data"] == []
    # Delivered messages stay charged.
    assert (await gateway.store.get_project(project.id)).balance_micro == \
        parse_credits("9.985")


async def test_sandbox_inbox_is_empty_while_queued(app_client, make) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    await _push(client, token)
    inbox = await client.get("/api/v2/sandbox/inbox", headers=_bearer(token))
    assert inbox.json() == {"status": 100, "message": "Success", "data": []}


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/api/v2/delivery-report"),
    ("GET", "/api/v2/pushes/{push_id}"),
    ("GET", "/api/v2/messages/{msg_id}"),
    ("GET", "/api/v2/sandbox/inbox"),
])
async def test_report_endpoints_need_a_token(app_client, make, method, path) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    accepted = await _push(client, token)
    url = path.format(push_id=accepted["push_id"], msg_id=accepted["data"][0]["msg_id"])
    body = {"push_id": accepted["push_id"]} if method == "POST" else None
    for headers in ({}, {"authorization": "Bearer pg_not_a_token"}):
        response = await client.request(method, url, json=body, headers=headers)
        assert response.status_code == 401, response.text
        assert response.json()["status"] == int(Code.AUTH_FAILED)
        assert "data" not in response.json()
    response = await client.request(method, url, json=body, headers=_bearer(token))
    assert response.status_code == 200 and response.json()["status"] == 100


async def test_healthz(app_client) -> None:
    client, gateway = await app_client()
    response = await client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["database"] == "ok"
    assert body["dispatcher"] is False


async def test_openapi_documents_the_push_body(app_client) -> None:
    client, gateway = await app_client()
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    push = spec["paths"]["/api/v2/push"]["post"]
    schema = push["requestBody"]["content"]["application/json"]["schema"]
    assert schema["type"] == "object"
    for field in ("token", "application", "globalmessage", "globalmedia", "globalmedia_code",
                  "priority", "data", "template_id", "language", "template_globalmessage",
                  "template_header", "channel_id"):
        assert field in schema["properties"], field
    # `application` (Picky's) or `channel_id` (pushgate's) names the channel.
    assert "data" in schema["required"]
    assert schema["anyOf"] == [{"required": ["application"]}, {"required": ["channel_id"]}]
    entry = schema["properties"]["data"]["items"]
    assert {"number", "message", "media", "reference_number", "template_message"} <= set(
        entry["properties"])
    assert "200" in push["responses"]
    for path in ("/api/v2/delivery-report", "/api/v2/pushes/{push_id}",
                 "/api/v2/messages/{msg_id}", "/api/v2/sandbox/inbox", "/healthz"):
        assert path in spec["paths"], path
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "openapi.json" in docs.text


def test_error_codes_doc_is_generated_from_the_table() -> None:
    path = REPO / "docs" / "error-codes.md"
    assert path.exists(), "run `pushgate docs error-codes`"
    text = path.read_text()
    assert text == render_markdown(), "docs/error-codes.md is stale: run `pushgate docs " \
                                      "error-codes`"
    for code in Code:
        info = CODES[code]
        assert f"| {int(code)} | {info.http_status} | {info.message} |" in text, code


async def test_reports_show_errors_only_for_failed_messages(app_client, make, store) -> None:
    """A message waiting for its retry, or sent with a problem to report, is not failed: the
    delivery report and the event webhook show no error for it (its history has it)."""
    from pushgate.core.models import SendResult
    from pushgate.core.policy import RetryPolicy

    client, gateway, project, token, channel = await _setup(app_client, make)
    accepted = await _push(client, token)
    waiting, partial, failing = (int(e["msg_id"]) for e in accepted["data"])
    now = time.time()
    await store.claim_messages(channel.id, "w", 10, now, 30.0)
    await store.record_outcomes("w", [
        SendResult.retry(waiting, "130429", "Rate limit hit"),
        SendResult.sent(partial, "p", error_code="470", error_message="caption dropped"),
        SendResult.failed(failing, "131026", "undeliverable"),
    ], now, RetryPolicy())
    report = (await client.post("/api/v2/delivery-report", json={
        "token": token, "push_id": accepted["push_id"]})).json()
    assert [(i["status"], i["error_code"], i["error_message"]) for i in report["data"]] == [
        (0, None, ""), (4, None, ""), (5, "131026", "undeliverable")]
    detail = (await client.get(f"/api/v2/messages/{waiting}", headers=_bearer(token))).json()
    assert detail["data"]["error_code"] == "130429"   # why it waits, in the detail view
