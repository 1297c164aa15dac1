"""Hostile requests that used to answer 500: each is now a 4xx in pushgate's shape
(``{"status": <code>, "message": ...}`` on the Picky routes, ``{"message": ...}`` on the
phones' API), through the in-process app on both backends."""

from __future__ import annotations

from typing import Any

import pytest

from pushgate.core.errors import CODES, Code

MOBILE = "/api/mobile/v1"
PRIVATE_TOKEN = "private-token-for-hostile-tests-0123"
PAST_INT_LIMIT = "9" * 5000
DEEP_IN_UNKNOWN_KEY = b'{"unknown": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
PICKY_BODY_ROUTES = ["/api/v2/push", "/api/v2/delivery-report", "/api/v2/device-status",
                     "/api/v2/device-action"]


async def _world(app_client, make) -> tuple[Any, str, dict[str, str]]:
    client, _ = await app_client()
    project, token, _ = await make.project(credits="10")
    await make.channel(project.id, application=1)
    await make.channel(project.id, application=3, kind="android",
                       config={"private_token": PRIVATE_TOKEN})
    registered = await client.post(f"{MOBILE}/device", json={"name": "phone"},
                                   headers={"Authorization": f"Bearer {PRIVATE_TOKEN}"})
    assert registered.status_code == 201, registered.text
    return client, token, {"Authorization": f"Bearer {registered.json()['token']}"}


def _assert_refused(response, code: Code) -> None:
    assert response.status_code == CODES[code].http_status, (response.status_code,
                                                             response.text[:300])
    body = response.json()
    assert body["status"] == int(code), body
    assert body["message"].startswith(CODES[code].message)
    assert len(body["message"]) < 300, "the answer echoes the whole hostile value"


@pytest.mark.parametrize(("route", "field"), [
    ("/api/v2/push", "application"), ("/api/v2/push", "priority"),
    ("/api/v2/push", "priority "), ("/api/v2/delivery-report", "push_id"),
    ("/api/v2/device-status", "application"), ("/api/v2/device-action", "application"),
])
async def test_digit_string_past_the_int_limit_is_invalid_field(
        app_client, make, route: str, field: str) -> None:
    client, token, _ = await _world(app_client, make)
    body = {"token": token, "application": "1", "push_id": "1", "command": "stop-message-queue",
            "globalmessage": "hi", "data": [{"number": "919876543210"}], field: PAST_INT_LIMIT}
    _assert_refused(await client.post(route, json=body), Code.INVALID_FIELD)


@pytest.mark.parametrize("route", PICKY_BODY_ROUTES)
async def test_json_nested_50000_deep_is_malformed_body(app_client, make, route: str) -> None:
    client, _, _ = await _world(app_client, make)
    response = await client.post(route, content=DEEP_IN_UNKNOWN_KEY,
                                 headers={"content-type": "application/json"})
    _assert_refused(response, Code.MALFORMED_BODY)
    assert "nested too deeply" in response.json()["message"]


@pytest.mark.parametrize(("method", "path"), [
    ("POST", f"{MOBILE}/device"), ("PATCH", f"{MOBILE}/device"), ("PATCH", f"{MOBILE}/message"),
])
async def test_phone_bodies_nested_deep_are_400(app_client, make, method: str, path: str) -> None:
    client, _, device_auth = await _world(app_client, make)
    auth = {"Authorization": f"Bearer {PRIVATE_TOKEN}"} if method == "POST" else device_auth
    deep = (b'[{"id": "1", "state": "Sent", "unknown": ' + b"[" * 50_000 + b"]" * 50_000 + b"}]"
            if path.endswith("/message") else DEEP_IN_UNKNOWN_KEY)
    response = await client.request(method, path, content=deep, headers=auth)
    assert response.status_code == 400, response.text[:300]
    assert response.json() == {"message": "invalid request: JSON nested too deeply"}


async def test_phone_health_nested_past_its_bound_is_400(app_client, make) -> None:
    # Stored, then shown by device-status, whose JSON encoder stops at 255 levels.
    client, _, device_auth = await _world(app_client, make)
    battery = b'{"battery": {"level": ' + b"[" * 300 + b"]" * 300 + b"}}"
    response = await client.patch(f"{MOBILE}/device", content=battery, headers=device_auth)
    assert response.status_code == 400, response.text
    assert "nested deeper" in response.json()["message"]


@pytest.mark.parametrize(("method", "body", "problem"), [
    ("POST", {"name": "a\u0000b"}, "NUL"), ("POST", {"simCards": [{"number": "\u0000"}]}, "NUL"),
    ("PATCH", {"battery": {"level": "\u0000"}}, "NUL"), ("PATCH", {"pushToken": "\u0000"}, "NUL"),
    ("PATCH", {"battery": {"level": 2**70}}, "64-bit"),
    ("POST", {"simCards": [{"slot": -(2**70)}]}, "64-bit"),
])
async def test_phone_facts_that_cannot_be_stored_are_400(
        app_client, make, method: str, body: dict[str, Any], problem: str) -> None:
    # PostgreSQL's text and jsonb columns refuse NUL (a 500 there); device-status's JSON
    # encoder refused an integer past 64 bits (a 500 on both stores once stored).
    client, token, device_auth = await _world(app_client, make)
    auth = {"Authorization": f"Bearer {PRIVATE_TOKEN}"} if method == "POST" else device_auth
    response = await client.request(method, f"{MOBILE}/device", json=body, headers=auth)
    assert response.status_code == 400, response.text
    assert problem in response.json()["message"]
    status = await client.post("/api/v2/device-status", json={"token": token,
                                                              "application": "3"})
    assert status.status_code == 200, status.text


async def test_phone_report_error_text_with_nul_is_recorded(app_client, make, query) -> None:
    client, token, device_auth = await _world(app_client, make)
    pushed = await client.post("/api/v2/push", json={
        "token": token, "application": "3", "globalmessage": "hi",
        "data": [{"number": "919876543210"}]})
    msg_id = pushed.json()["data"][0]["msg_id"]
    fetched = await client.get(f"{MOBILE}/message", headers=device_auth)
    assert [m["id"] for m in fetched.json()] == [msg_id]
    response = await client.patch(f"{MOBILE}/message", headers=device_auth, json=[
        {"id": msg_id, "state": "Failed",
         "recipients": [{"phoneNumber": "919876543210", "state": "Failed",
                         "error": "RESULT_ERROR\u0000_GENERIC"}]}])
    assert response.status_code == 204, response.text
    assert query("SELECT state, error_message FROM messages WHERE id = ?", int(msg_id)) == [
        ("refunded", "phone phone: RESULT_ERROR_GENERIC")]


@pytest.mark.parametrize("route", ["/api/v2/push", "/api/v2/delivery-report"])
@pytest.mark.parametrize(("content_type", "body", "detail"), [
    ("multipart/form-data", b"--B\r\n", "Missing boundary"),
    ("multipart/form-data; boundary=B",
     b"".join(b'--B\r\nContent-Disposition: form-data; name="f%d"\r\n\r\n1\r\n' % i
              for i in range(1001)) + b"--B--\r\n", "Too many fields"),
])
async def test_unparseable_multipart_is_malformed_body(
        app_client, make, route: str, content_type: str, body: bytes, detail: str) -> None:
    client, _, _ = await _world(app_client, make)
    response = await client.post(route, content=body, headers={"content-type": content_type})
    _assert_refused(response, Code.MALFORMED_BODY)
    assert detail in response.json()["message"]


async def test_multipart_data_field_past_one_megabyte_is_accepted(app_client, make) -> None:
    # Starlette stops a field at 1 MB by default; the body limit is PUSHGATE_MAX_BODY_BYTES.
    import json

    client, token, _ = await _world(app_client, make)
    data = json.dumps({"token": token, "application": "1", "globalmessage": "hi",
                       "data": [{"number": "919876543210", "reference_number": "r" * 200}]
                       * 6000})
    assert len(data) > 1024 * 1024
    response = await client.post("/api/v2/push", files={"data": (None, data)})
    body = response.json()
    assert body["status"] == int(Code.SUCCESS), body["message"]


@pytest.mark.parametrize(("method", "path", "code", "http"), [
    ("GET", "/api/v2/nowhere", Code.NOT_FOUND, 404),
    ("GET", "/api/v2/push", Code.METHOD_NOT_ALLOWED, 405),
    ("DELETE", "/api/v2/delivery-report", Code.METHOD_NOT_ALLOWED, 405),
])
async def test_router_refusals_answer_in_pushgate_shape(
        app_client, make, method: str, path: str, code: Code, http: int) -> None:
    client, _, _ = await _world(app_client, make)
    response = await client.request(method, path)
    _assert_refused(response, code)
    assert response.status_code == http
    if http == 405:
        assert "POST" in response.headers["allow"]


async def test_content_length_of_thousands_of_digits_is_body_too_large(app_client, make) -> None:
    client, _, _ = await _world(app_client, make)
    response = await client.post("/api/v2/push", content=b"{}",
                                 headers={"content-length": PAST_INT_LIMIT})
    _assert_refused(response, Code.BODY_TOO_LARGE)


async def test_signed_callback_with_nul_in_a_users_text_is_recorded(
        app_client, make, store, query) -> None:
    # A 500 here had Meta retry the webhook forever (PostgreSQL refuses NUL in text).
    import hashlib
    import hmac
    import json

    client, _ = await app_client()
    project, _, _ = await make.project()
    channel = await make.channel(project.id, application=101, kind="whatsapp_cloud", config={
        "phone_number_id": "1", "access_token": "t", "app_secret": "s", "verify_token": "v",
        "graph_base_url": "http://127.0.0.1:9"})
    body = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
        {"field": "messages", "value": {"metadata": {"phone_number_id": "1"}, "messages": [
            {"from": "919876543210", "id": "wamid.1", "timestamp": "1700000000",
             "type": "text", "text": {"body": "hi\u0000there"}}]}}]}]}).encode()
    signature = "sha256=" + hmac.new(b"s", body, hashlib.sha256).hexdigest()
    response = await client.post(f"/channels/{channel.id}/callback", content=body,
                                 headers={"x-hub-signature-256": signature,
                                          "content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert query("SELECT body FROM inbound_messages") == [("hithere",)]
