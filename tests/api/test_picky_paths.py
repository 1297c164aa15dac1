"""Every base path Picky clients use, and one envelope for every answer under ``/api/``.

Picky's V4 base (``/api/v2``) and its older V3 base (``/app/api/v2``) serve the same routes, and
one client's v1 ``device-status`` path too. Whatever refuses a request under ``/api/`` (no such
path, a wrong method, a parameter FastAPI checks, any other HTTP refusal, a bug) answers
``{"status": <code>, "message": ...}`` with a code of docs/error-codes.md; the phones' API keeps
the shape its app reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import HTTPException

from pushgate.core.errors import CODES, Code

NUMBERS = ["919876543210", "14155552671"]
BASES = ["/api/v2", "/app/api/v2"]
MOBILE = "/api/mobile/v1"
ERROR_CODES_DOC = Path(__file__).resolve().parents[2] / "docs" / "error-codes.md"


async def _setup(app_client, make, **settings: Any):
    client, gateway = await app_client(**settings)
    project, token, _ = await make.project(credits="10", name="main")
    channel = await make.channel(project.id, application=1)
    return client, gateway, project, token, channel


def _push_body(token: str) -> dict[str, Any]:
    return {"token": token, "application": "1", "globalmessage": "hello",
            "data": [{"number": n} for n in NUMBERS]}


def _app_of(client: httpx.AsyncClient) -> Any:
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    return transport.app


def _assert_envelope(response: httpx.Response, code: Code,
                     http_status: int | None = None) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"status", "message"}, body
    assert body["status"] == int(code), body
    assert response.status_code == (http_status or CODES[code].http_status), response.text
    assert body["message"].startswith(CODES[code].message)
    assert f"| {int(code)} |" in ERROR_CODES_DOC.read_text(), f"{int(code)} is not documented"
    return body


# --- every base path --------------------------------------------------------------------------

@pytest.mark.parametrize("base", BASES)
async def test_push_and_delivery_report_answer_on_every_base(app_client, make, query,
                                                             base) -> None:
    client, _gateway, project, token, _channel = await _setup(app_client, make)
    pushed = await client.post(f"{base}/push", json=_push_body(token))
    assert pushed.status_code == 200, pushed.text
    answer = pushed.json()
    assert answer["status"] == 100 and isinstance(answer["push_id"], str)
    assert [item["number"] for item in answer["data"]] == NUMBERS
    assert all(isinstance(item["msg_id"], str) for item in answer["data"])
    assert query("SELECT count(*) FROM messages WHERE project_id = ?", project.id) == [(2,)]

    report = await client.post(f"{base}/delivery-report",
                               json={"token": token, "push_id": answer["push_id"]})
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["status"] == 100 and body["push_id"] == answer["push_id"]
    assert isinstance(body["project_id"], str)
    assert [item["msg_id"] for item in body["data"]] == [i["msg_id"] for i in answer["data"]]


async def test_the_older_base_takes_a_form_post_and_refuses_in_the_envelope(app_client,
                                                                            make) -> None:
    client, _gateway, _project, token, _channel = await _setup(app_client, make)
    form = await client.post("/app/api/v2/push", data={"data": json.dumps(_push_body(token))})
    assert form.status_code == 200 and form.json()["status"] == 100, form.text
    refused = await client.post("/app/api/v2/push", json={**_push_body(token), "token": "nope"})
    _assert_envelope(refused, Code.AUTH_FAILED)


@pytest.mark.parametrize("path", ["/api/v2/device-status", "/app/api/v2/device-status",
                                  "/api/v1/device-status", "/app/api/v1/device-status"])
async def test_device_status_answers_on_every_path(app_client, make, path) -> None:
    client, _gateway, project, token, _channel = await _setup(app_client, make)
    response = await client.post(path, json={"token": token})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["project_id"] == str(project.id)
    assert body["status"] in ("CONNECTED", "OFFLINE", "TIMEOUT", "UNPAIRED")
    assert "message_queue_count" in body and body["time"]


@pytest.mark.parametrize("base", BASES)
async def test_device_action_answers_on_every_base(app_client, make, base) -> None:
    client, _gateway, _project, token, channel = await _setup(app_client, make)
    stopped = await client.post(f"{base}/device-action",
                                json={"token": token, "command": "stop-message-queue"})
    assert stopped.json() == {"status": 100, "message": "Success"}, stopped.text
    status = (await client.post(f"{base}/device-status", json={"token": token})).json()
    assert status["queue_stopped"] is True and status["channel_id"] == channel.id
    resumed = await client.post(f"{base}/device-action",
                                json={"token": token, "command": "resume-message-queue"})
    assert resumed.json() == {"status": 100, "message": "Success"}


async def test_only_the_canonical_paths_are_in_the_openapi_document(app_client) -> None:
    client, _gateway = await app_client()
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {"/api/v2/push", "/api/v2/delivery-report", "/api/v2/device-status",
            "/api/v2/device-action"} <= set(paths)
    assert not [p for p in paths if p.startswith(("/app/", "/api/v1/"))]


async def test_v1_has_only_device_status(app_client, make) -> None:
    client, _gateway, _project, token, _channel = await _setup(app_client, make)
    for path in ("/api/v1/push", "/app/api/v1/push", "/app/api/v2/pushes/1"):
        _assert_envelope(await client.post(path, json=_push_body(token)), Code.NOT_FOUND)


# --- one envelope -----------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/api/nothing", "/api/v2/nothing", "/app/api/v2/nothing",
                                  "/api/v3/push"])
async def test_unknown_path_under_api_is_the_envelope(app_client, path) -> None:
    client, _gateway = await app_client()
    for method in ("GET", "POST"):
        body = _assert_envelope(await client.request(method, path), Code.NOT_FOUND)
        assert "no such route" in body["message"]


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("GET", "/api/v2/push", "POST"),
    ("GET", "/app/api/v2/push", "POST"),
    ("PUT", "/api/v2/delivery-report", "POST"),
    ("GET", "/app/api/v2/device-status", "POST"),
    ("DELETE", "/api/v1/device-status", "POST"),
    ("POST", "/api/v2/sandbox/inbox", "GET"),
    ("POST", "/api/v2/pushes/1", "GET"),
])
async def test_wrong_method_under_api_is_the_envelope(app_client, method, path,
                                                      allowed) -> None:
    client, _gateway = await app_client()
    response = await client.request(method, path)
    body = _assert_envelope(response, Code.METHOD_NOT_ALLOWED)
    assert response.headers["allow"] == allowed
    assert method in body["message"]


@pytest.mark.parametrize("path", ["/api/v2/pushes/abc", "/api/v2/messages/1.5",
                                  "/api/v2/sandbox/inbox?limit=many"])
async def test_validation_error_under_api_is_the_envelope(app_client, make, path) -> None:
    client, _gateway, _project, token, _channel = await _setup(app_client, make)
    response = await client.get(path, headers={"Authorization": f"Bearer {token}"})
    body = _assert_envelope(response, Code.INVALID_FIELD)
    assert "detail" not in body


async def test_always_http_200_applies_to_the_router_refusals(app_client) -> None:
    client, _gateway = await app_client(always_http_200=True)
    _assert_envelope(await client.get("/app/api/v2/nothing"), Code.NOT_FOUND, 200)
    wrong = await client.get("/app/api/v2/push")
    _assert_envelope(wrong, Code.METHOD_NOT_ALLOWED, 200)
    assert wrong.headers["allow"] == "POST"
    _assert_envelope(await client.get("/api/v2/pushes/abc"), Code.INVALID_FIELD, 200)


@pytest.mark.parametrize(("status", "code"), [
    (400, Code.MALFORMED_BODY), (413, Code.BODY_TOO_LARGE), (429, Code.RATE_LIMITED),
    (418, Code.REQUEST_REFUSED), (409, Code.REQUEST_REFUSED)])
async def test_any_http_exception_under_api_is_the_envelope(app_client, status, code) -> None:
    client, _gateway = await app_client()

    async def refuse() -> None:
        raise HTTPException(status, "refused by the HTTP layer", headers={"X-Why": "test"})

    app = _app_of(client)
    app.router.add_api_route("/api/v2/test-refusal", refuse, methods=["GET"])
    app.router.add_api_route("/elsewhere/test-refusal", refuse, methods=["GET"])
    response = await client.get("/api/v2/test-refusal")
    body = _assert_envelope(response, code, status)
    assert "refused by the HTTP layer" in body["message"]
    assert response.headers["x-why"] == "test"
    # Outside /api/ FastAPI's own shape stays.
    outside = await client.get("/elsewhere/test-refusal")
    assert outside.status_code == status
    assert outside.json() == {"detail": "refused by the HTTP layer"}


async def test_a_bug_under_api_is_the_envelope_and_elsewhere_plain(app_client, make,
                                                                   monkeypatch) -> None:
    client, gateway, _project, token, _channel = await _setup(app_client, make)

    async def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(gateway.store, "get_push", broken)
    monkeypatch.setattr(gateway.store, "ping", broken)
    quiet = httpx.AsyncClient(transport=httpx.ASGITransport(app=_app_of(client),
                                                            raise_app_exceptions=False),
                              base_url="http://testserver")
    async with quiet:
        for path in ("/api/v2/pushes/1", "/app/api/v2/delivery-report"):
            response = await (quiet.get(path, headers={"Authorization": f"Bearer {token}"})
                              if "pushes" in path
                              else quiet.post(path, json={"token": token, "push_id": "1"}))
            _assert_envelope(response, Code.INTERNAL_ERROR)
        # Outside /api/ Starlette's own answer stays.
        health = await quiet.get("/healthz")
        assert health.status_code == 500 and health.text == "Internal Server Error"


# --- outside the envelope ---------------------------------------------------------------------

async def test_the_phones_api_keeps_its_own_shape(app_client, make) -> None:
    client, _gateway, _project, _token, _channel = await _setup(app_client, make)
    for method, path in (("GET", "/message"), ("PATCH", "/message"), ("GET", "/settings"),
                         ("GET", "/events"), ("PATCH", "/device"), ("GET", "/webhooks")):
        response = await client.request(method, MOBILE + path,
                                        headers={"Authorization": "Bearer wrong"})
        assert response.status_code == 401, (path, response.text)
        assert response.json() == {"message": "invalid device token"}
    registration = await client.post(f"{MOBILE}/device", json={"name": "x"},
                                     headers={"Authorization": "Bearer wrong"})
    assert registration.status_code == 401
    assert registration.json() == {"message": "invalid private token"}
    # Unauthenticated GET /device answers the caller's address, as the app expects.
    assert set((await client.get(f"{MOBILE}/device")).json()) == {"externalIp"}
    # The router's refusals carry `message`, which is what the app reads.
    wrong = await client.delete(f"{MOBILE}/device")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, PATCH, POST"
    assert wrong.json()["message"]


async def test_paths_outside_api_keep_their_answers(app_client) -> None:
    client, _gateway = await app_client()
    health = await client.get("/healthz")
    assert health.status_code == 200 and "status" in health.json()
    assert (await client.get("/metrics")).headers["content-type"].startswith("text/plain")
    assert (await client.get("/docs")).status_code == 200
