"""Every request-level status code of the Push API, through the in-process app.

Each refusal is checked three ways: the numeric ``status`` in the JSON body, the HTTP status of
its error class, and that nothing was queued or charged (balance unchanged, no push and no
message rows for the project).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pushgate.core.errors import CODES, Code
from pushgate.core.pricing import parse_credits
from pushgate.core.tokens import hash_token, new_token

NUMBER_A = "919876543210"
NUMBER_B = "14155552671"
NUMBER_C = "919812345678"


async def _setup(app_client, make, credits: str = "10", application: int = 1,
                 price: str = "0.005", **settings: Any):
    client, gateway = await app_client(**settings)
    project, token, _ = await make.project(credits=credits, name="main")
    channel = await make.channel(project.id, application=application, price=price)
    return client, gateway, project, token, channel


def _push(token: str | None, *numbers: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"application": "1", "globalmessage": "hello",
                            "data": [{"number": n} for n in numbers]}
    if token is not None:
        body["token"] = token
    body.update(fields)
    return body


async def _assert_nothing_queued(store, query, project, credits: str) -> None:
    current = await store.get_project(project.id)
    assert current is not None
    assert current.balance_micro == parse_credits(credits), "a refused push was charged"
    assert query("SELECT count(*) FROM messages WHERE project_id = ?", project.id) == [(0,)]
    assert query("SELECT count(*) FROM pushes WHERE project_id = ?", project.id) == [(0,)]


def _assert_refused(response, code: Code) -> dict[str, Any]:
    body = response.json()
    assert body["status"] == int(code), body
    assert response.status_code == CODES[code].http_status, (response.status_code, body)
    assert isinstance(body["message"], str) and body["message"]
    assert body["message"].startswith(CODES[code].message)
    assert "push_id" not in body
    return body


# --- malformed bodies ---------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    b"{not json",
    b'{"token": "x", "data": [',
    b"\xff\xfe garbage",
    b"[1, 2, 3]",
    b'"a string"',
    b"42",
    b"null",
    b"",
    b"   ",
])
async def test_malformed_or_non_object_body_is_400(app_client, make, store, query, raw) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    response = await client.post("/api/v2/push", content=raw,
                                 headers={"content-type": "application/json"})
    _assert_refused(response, Code.MALFORMED_BODY)
    await _assert_nothing_queued(store, query, project, "10")


async def test_form_post_without_data_field_is_400(app_client, make, store, query) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    response = await client.post("/api/v2/push", data={"token": token, "other": "x"})
    _assert_refused(response, Code.MALFORMED_BODY)
    response = await client.post("/api/v2/push", data={"data": "{not json"})
    _assert_refused(response, Code.MALFORMED_BODY)
    await _assert_nothing_queued(store, query, project, "10")


@pytest.mark.parametrize("fields", [
    {"priority": "x"},
    {"priority": 2},
    {"priority": "2"},
    {"priority": -1},
    {"priority ": "high"},
    {"priority": 1.5},
    {"data": "919876543210"},
    {"data": {"number": "919876543210"}},
    {"data": [1, 2]},
    {"data": [{"number": ["919876543210"]}]},
    {"application": "abc"},
    {"application": None},
    {"application": {"id": 1}},
    {"globalmessage": ["a"]},
    {"globalmedia": 5},
    # A number is read as a token (test_picky_body_shapes.py); a list is no token.
    {"token": [123]},
])
async def test_field_of_wrong_type_is_406(app_client, make, store, query, fields) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    response = await client.post("/api/v2/push", json={**_push(token, NUMBER_A), **fields})
    body = _assert_refused(response, Code.INVALID_FIELD)
    assert response.status_code == 422
    await _assert_nothing_queued(store, query, project, "10")
    # The message names the field that is wrong.
    name = next(iter(fields)).strip()
    assert name in body["message"], body["message"]


async def test_missing_application_is_406(app_client, make, store, query) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    body = _push(token, NUMBER_A)
    del body["application"]
    response = await client.post("/api/v2/push", json=body)
    _assert_refused(response, Code.INVALID_FIELD)
    await _assert_nothing_queued(store, query, project, "10")


# --- authentication ------------------------------------------------------------------------------

async def test_unknown_token_is_401(app_client, make, store, query) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    response = await client.post("/api/v2/push", json=_push(new_token(), NUMBER_A))
    body = _assert_refused(response, Code.AUTH_FAILED)
    assert body["message"].startswith("Authentication Failed")
    await _assert_nothing_queued(store, query, project, "10")


@pytest.mark.parametrize("token", [None, "", "   "])
async def test_no_token_is_401(app_client, make, store, query, token) -> None:
    client, gateway, project, _, _ = await _setup(app_client, make)
    response = await client.post("/api/v2/push", json=_push(token, NUMBER_A))
    _assert_refused(response, Code.AUTH_FAILED)
    response = await client.post("/api/v2/push", json=_push(None, NUMBER_A),
                                 headers={"authorization": "Bearer "})
    _assert_refused(response, Code.AUTH_FAILED)
    await _assert_nothing_queued(store, query, project, "10")


async def test_revoked_token_is_402(app_client, make, store, query) -> None:
    client, gateway, project, _, _ = await _setup(app_client, make)
    revoked = new_token()
    token_id = await store.create_token(project.id, hash_token(revoked), "old", [])
    assert await store.revoke_token(token_id)
    response = await client.post("/api/v2/push", json=_push(revoked, NUMBER_A))
    _assert_refused(response, Code.TOKEN_REVOKED)
    assert response.status_code == 401
    # Also as a Bearer header.
    response = await client.post("/api/v2/push", json=_push(None, NUMBER_A),
                                 headers={"authorization": f"Bearer {revoked}"})
    _assert_refused(response, Code.TOKEN_REVOKED)
    await _assert_nothing_queued(store, query, project, "10")


async def test_token_from_ip_not_on_allow_list_is_403(app_client, make, store, query) -> None:
    client, gateway, project, _, _ = await _setup(app_client, make)
    fenced = new_token()
    await store.create_token(project.id, hash_token(fenced), "t", ["10.0.0.0/8"])
    response = await client.post("/api/v2/push", json=_push(fenced, NUMBER_A))
    body = _assert_refused(response, Code.IP_NOT_ALLOWED)
    assert response.status_code == 403
    assert "127.0.0.1" in body["message"]
    await _assert_nothing_queued(store, query, project, "10")

    # A token whose allow-list holds the caller's address works.
    local = new_token()
    await store.create_token(project.id, hash_token(local), "t", ["10.0.0.0/8", "127.0.0.0/8"])
    response = await client.post("/api/v2/push", json=_push(local, NUMBER_A))
    assert response.status_code == 200
    assert response.json()["status"] == 100


async def test_disabled_project_is_405(app_client, make, store, query) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    query("UPDATE projects SET active = ? WHERE id = ?", False, project.id)
    response = await client.post("/api/v2/push", json=_push(token, NUMBER_A))
    body = _assert_refused(response, Code.API_NOT_ACTIVE)
    assert body["message"] == "API Is Not Active For This Project"
    assert response.status_code == 403
    await _assert_nothing_queued(store, query, project, "10")


# --- application, data, sizes ------------------------------------------------------------------

@pytest.mark.parametrize("application", ["8", 3, "999999"])
async def test_unknown_application_is_407(app_client, make, store, query, application) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    response = await client.post("/api/v2/push",
                                 json=_push(token, NUMBER_A, application=application))
    body = _assert_refused(response, Code.UNKNOWN_APPLICATION)
    assert str(application) in body["message"]
    await _assert_nothing_queued(store, query, project, "10")


async def test_channel_id_of_another_project_is_407(app_client, make, store, query) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    other, _, _ = await make.project(credits="10", name="other")
    foreign = await make.channel(other.id, application=2)
    assert foreign.id != 1    # not the application code of the project's own channel
    response = await client.post("/api/v2/push",
                                 json=_push(token, NUMBER_A, application=foreign.id))
    _assert_refused(response, Code.UNKNOWN_APPLICATION)
    await _assert_nothing_queued(store, query, project, "10")
    await _assert_nothing_queued(store, query, other, "10")


@pytest.mark.parametrize("application", [2, 5])
async def test_an_application_code_is_never_read_as_a_channel_id(
        app_client, make, store, query, application) -> None:
    """Application 2 (WhatsApp Business) or 5 (Messenger), which no channel serves, once
    reached whichever channel had id 2 or 5, and was charged there."""
    client, gateway, project, token, _ = await _setup(app_client, make)
    sms = await make.channel(project.id, application=3, price="0.02")
    while sms.id < application:
        sms = await make.channel(project.id, application=3, price="0.02")
    assert sms.id == application
    response = await client.post("/api/v2/push",
                                 json=_push(token, NUMBER_A, application=str(application)))
    body = _assert_refused(response, Code.UNKNOWN_APPLICATION)
    assert f"application {application}" in body["message"]
    await _assert_nothing_queued(store, query, project, "10")


async def test_channel_id_of_another_project_is_421(app_client, make, store, query) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    other, _, _ = await make.project(credits="10", name="other")
    foreign = await make.channel(other.id, application=1)
    for fields in ({"channel_id": foreign.id}, {"channel_id": str(foreign.id), "application": 1},
                   {"channel_id": 999999, "application": None}):
        response = await client.post("/api/v2/push", json=_push(token, NUMBER_A, **fields))
        body = _assert_refused(response, Code.UNKNOWN_CHANNEL)
        assert str(fields["channel_id"]) in body["message"]
    await _assert_nothing_queued(store, query, project, "10")
    await _assert_nothing_queued(store, query, other, "10")


async def test_channel_id_and_another_application_is_422(app_client, make, store,
                                                         query) -> None:
    client, gateway, project, token, whatsapp = await _setup(app_client, make)
    await make.channel(project.id, application=3)
    response = await client.post("/api/v2/push", json=_push(
        token, NUMBER_A, application="3", channel_id=whatsapp.id))
    body = _assert_refused(response, Code.CHANNEL_APPLICATION_MISMATCH)
    assert f"channel {whatsapp.id} serves application 1, not 3" in body["message"]
    await _assert_nothing_queued(store, query, project, "10")


@pytest.mark.parametrize("data", [[], None, "absent"])
async def test_empty_or_missing_data_is_408(app_client, make, store, query, data) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    body = _push(token)
    if data == "absent":
        del body["data"]
    else:
        body["data"] = data
    response = await client.post("/api/v2/push", json=body)
    _assert_refused(response, Code.EMPTY_DATA)
    assert response.status_code == 422
    await _assert_nothing_queued(store, query, project, "10")


async def test_too_many_recipients_is_409(app_client, make, store, query) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make, max_recipients=3)
    numbers = [NUMBER_A, NUMBER_B, NUMBER_C, "919800000001"]
    response = await client.post("/api/v2/push", json=_push(token, *numbers))
    body = _assert_refused(response, Code.TOO_MANY_RECIPIENTS)
    assert response.status_code == 413
    assert "4" in body["message"] and "3" in body["message"]
    await _assert_nothing_queued(store, query, project, "10")
    # At the limit it goes through.
    response = await client.post("/api/v2/push", json=_push(token, *numbers[:3]))
    assert response.status_code == 200
    assert response.json()["status"] == 100
    assert query("SELECT count(*) FROM messages WHERE project_id = ?", project.id) == [(3,)]


async def test_body_too_large_is_413(app_client, make, store, query) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make, max_body_bytes=2048)
    big = _push(token, NUMBER_A, globalmessage="x" * 3000)
    response = await client.post("/api/v2/push", json=big)
    _assert_refused(response, Code.BODY_TOO_LARGE)
    assert response.status_code == 413

    # Without a Content-Length (chunked), the limit is enforced while reading.
    raw = json.dumps(big).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(raw), 500):
            yield raw[start:start + 500]

    response = await client.post("/api/v2/push", content=chunks(),
                                 headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    _assert_refused(response, Code.BODY_TOO_LARGE)
    await _assert_nothing_queued(store, query, project, "10")

    # Under the limit it goes through.
    response = await client.post("/api/v2/push",
                                 json=_push(token, NUMBER_A, globalmessage="x" * 1500))
    assert response.json()["status"] == 100


async def test_insufficient_credit_is_420_and_charges_nothing(app_client, make, store,
                                                              query) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make, credits="0.01")
    response = await client.post("/api/v2/push",
                                 json=_push(token, NUMBER_A, NUMBER_B, NUMBER_C))
    body = _assert_refused(response, Code.INSUFFICIENT_CREDIT)
    assert response.status_code == 402
    assert body["balance"] == "0.01"
    assert body["credit_total"] == "0.015"
    await _assert_nothing_queued(store, query, project, "0.01")

    # A push the balance covers exactly is accepted and empties it.
    response = await client.post("/api/v2/push", json=_push(token, NUMBER_A, NUMBER_B))
    body = response.json()
    assert body["status"] == 100, body
    assert body["balance"] == "0"
    assert (await store.get_project(project.id)).balance_micro == 0

    # Now even one message is refused, and nothing more is queued.
    response = await client.post("/api/v2/push", json=_push(token, NUMBER_C))
    body = _assert_refused(response, Code.INSUFFICIENT_CREDIT)
    assert body["balance"] == "0"
    assert query("SELECT count(*) FROM messages WHERE project_id = ?", project.id) == [(2,)]
    assert query("SELECT count(*) FROM pushes WHERE project_id = ?", project.id) == [(1,)]


async def test_rate_limit_is_429_with_retry_after(app_client, make, store, query) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make, push_rate_per_minute=2)
    for number in (NUMBER_A, NUMBER_B):
        response = await client.post("/api/v2/push", json=_push(token, number))
        assert response.json()["status"] == 100
    response = await client.post("/api/v2/push", json=_push(token, NUMBER_C))
    body = _assert_refused(response, Code.RATE_LIMITED)
    assert response.status_code == 429
    retry_after = response.headers.get("retry-after")
    assert retry_after is not None and retry_after.isdigit(), response.headers
    assert 1 <= int(retry_after) <= 60
    assert "retry_after" not in body
    # Only the first two pushes were queued and charged.
    rows = query("SELECT number FROM messages WHERE project_id = ? ORDER BY id", project.id)
    assert rows == [(NUMBER_A,), (NUMBER_B,)]
    assert (await store.get_project(project.id)).balance_micro == parse_credits("9.99")

    # The limit is per token: another token of the same project still pushes.
    other = new_token()
    await store.create_token(project.id, hash_token(other), "second", [])
    response = await client.post("/api/v2/push", json=_push(other, NUMBER_C))
    assert response.json()["status"] == 100


async def test_store_unavailable_is_503(app_client, make, store, query) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    await gateway.store.close()    # the app's own store; the test's store stays open
    response = await client.post("/api/v2/push", json=_push(token, NUMBER_A))
    _assert_refused(response, Code.UNAVAILABLE)
    assert response.status_code == 503
    health = await client.get("/healthz")
    assert health.status_code == 503
    assert health.json()["status"] == "error"
    await _assert_nothing_queued(store, query, project, "10")


# --- reports of pushes that are not there -------------------------------------------------------

async def test_delivery_report_of_unknown_push_is_404(app_client, make) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    response = await client.post("/api/v2/delivery-report",
                                 json={"token": token, "push_id": "987654"})
    body = _assert_refused(response, Code.NOT_FOUND)
    assert response.status_code == 404
    assert "987654" in body["message"]


async def test_push_of_another_project_is_404(app_client, make) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    other, other_token, _ = await make.project(credits="10", name="other")
    response = await client.post("/api/v2/push", json=_push(token, NUMBER_A))
    accepted = response.json()
    assert accepted["status"] == 100
    push_id, msg_id = accepted["push_id"], accepted["data"][0]["msg_id"]

    response = await client.post("/api/v2/delivery-report",
                                 json={"token": other_token, "push_id": push_id})
    _assert_refused(response, Code.NOT_FOUND)
    auth = {"authorization": f"Bearer {other_token}"}
    response = await client.get(f"/api/v2/pushes/{push_id}", headers=auth)
    _assert_refused(response, Code.NOT_FOUND)
    response = await client.get(f"/api/v2/messages/{msg_id}", headers=auth)
    _assert_refused(response, Code.NOT_FOUND)
    # The owner sees them.
    response = await client.post("/api/v2/delivery-report",
                                 json={"token": token, "push_id": push_id})
    assert response.json()["status"] == 100


async def test_delivery_report_with_bad_push_id_is_406(app_client, make) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    for push_id in ("abc", None):
        response = await client.post("/api/v2/delivery-report",
                                     json={"token": token, "push_id": push_id})
        _assert_refused(response, Code.INVALID_FIELD)


# --- always_http_200 ---------------------------------------------------------------------------

async def test_always_http_200_keeps_the_json_body(app_client, make, store, query) -> None:
    strict, _ = await app_client(max_recipients=2, push_rate_per_minute=0)
    lenient, _ = await app_client(max_recipients=2, push_rate_per_minute=0,
                                  always_http_200=True)
    project, token, _ = await make.project(credits="0.005")
    await make.channel(project.id, application=1, price="0.005")
    revoked = new_token()
    await store.revoke_token(await store.create_token(project.id, hash_token(revoked), "r", []))

    cases: list[tuple[Code, dict[str, Any]]] = [
        (Code.MALFORMED_BODY, {"content": b"{nope",
                               "headers": {"content-type": "application/json"}}),
        (Code.AUTH_FAILED, {"json": _push(new_token(), NUMBER_A)}),
        (Code.TOKEN_REVOKED, {"json": _push(revoked, NUMBER_A)}),
        (Code.INVALID_FIELD, {"json": _push(token, NUMBER_A, priority="x")}),
        (Code.UNKNOWN_APPLICATION, {"json": _push(token, NUMBER_A, application="8")}),
        (Code.EMPTY_DATA, {"json": _push(token)}),
        (Code.TOO_MANY_RECIPIENTS, {"json": _push(token, NUMBER_A, NUMBER_B, NUMBER_C)}),
        (Code.INVALID_NUMBER, {"json": _push(token, "+919876543210")}),
        (Code.NO_VALID_ENTRIES, {"json": _push(token, "+919876543210", NUMBER_A,
                                               globalmessage="")}),
        (Code.INSUFFICIENT_CREDIT, {"json": _push(token, NUMBER_A, NUMBER_B)}),
    ]
    for code, request in cases:
        a = await strict.post("/api/v2/push", **request)
        b = await lenient.post("/api/v2/push", **request)
        assert a.status_code == CODES[code].http_status != 200, (code, a.status_code)
        assert b.status_code == 200, (code, b.status_code)
        assert a.json()["status"] == int(code), (code, a.json())
        assert b.json() == a.json()
    report = await lenient.post("/api/v2/delivery-report", json={"token": token, "push_id": 1})
    assert report.status_code == 200
    assert report.json()["status"] == int(Code.NOT_FOUND)
    await _assert_nothing_queued(store, query, project, "0.005")


async def test_always_http_200_rate_limit_keeps_retry_after(app_client, make) -> None:
    client, gateway, project, token, _ = await _setup(
        app_client, make, push_rate_per_minute=1, always_http_200=True)
    assert (await client.post("/api/v2/push", json=_push(token, NUMBER_A))).json()["status"] \
        == 100
    response = await client.post("/api/v2/push", json=_push(token, NUMBER_B))
    assert response.status_code == 200
    assert response.json()["status"] == int(Code.RATE_LIMITED)
    assert response.headers["retry-after"].isdigit()


# --- values no database column can hold ---------------------------------------------------------

@pytest.mark.parametrize("application", [2**31, "2147483648", 2**63, str(10**30), "²", "１"])
async def test_application_out_of_range_or_not_ascii_is_406(app_client, make, store, query,
                                                            application) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    response = await client.post("/api/v2/push",
                                 json=_push(token, NUMBER_A, application=application))
    body = _assert_refused(response, Code.INVALID_FIELD)
    assert "application" in body["message"]
    await _assert_nothing_queued(store, query, project, "10")


async def test_report_ids_out_of_range_are_406(app_client, make) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    huge = str(2**63)
    response = await client.post("/api/v2/delivery-report",
                                 json={"token": token, "push_id": huge})
    _assert_refused(response, Code.INVALID_FIELD)
    auth = {"authorization": f"Bearer {token}"}
    for path in (f"/api/v2/pushes/{huge}", f"/api/v2/messages/{huge}"):
        body = _assert_refused(await client.get(path, headers=auth), Code.INVALID_FIELD)
        assert "_id" in body["message"]
    # The largest id the database holds is a plain "not found".
    largest = str(2**63 - 1)
    _assert_refused(await client.get(f"/api/v2/pushes/{largest}", headers=auth), Code.NOT_FOUND)
    _assert_refused(await client.get(f"/api/v2/messages/{largest}", headers=auth),
                    Code.NOT_FOUND)
    _assert_refused(await client.post("/api/v2/delivery-report",
                                      json={"token": token, "push_id": largest}),
                    Code.NOT_FOUND)


@pytest.mark.parametrize("path", ["/api/v2/pushes/abc", "/api/v2/messages/1.5",
                                  "/api/v2/sandbox/inbox?limit=abc"])
async def test_bad_path_or_query_parameter_answers_in_api_shape(app_client, make, path) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    response = await client.get(path, headers={"authorization": f"Bearer {token}"})
    body = _assert_refused(response, Code.INVALID_FIELD)
    assert set(body) == {"status", "message"}
