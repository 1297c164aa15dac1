"""The Push API's accepted shapes, per-entry refusals, pricing and credit atomicity (dispatcher
off: every accepted message stays queued where the test can look at it)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from pushgate.core.errors import CODES, Code
from pushgate.core.pricing import format_credits, parse_credits

NUMBER_A = "919876543210"
NUMBER_B = "14155552671"
NUMBER_C = "919812345678"
NUMBER_D = "919800000001"

PNG_HEADER = b"\x89PNG\r\n\x1a\n"


async def _setup(app_client, make, credits: str = "10", application: int = 1,
                 price: str = "0.005", settings: dict[str, Any] | None = None,
                 **channel: Any):
    client, gateway = await app_client(**(settings or {}))
    project, token, _ = await make.project(credits=credits, name="main")
    spec = await make.channel(project.id, application=application, price=price, **channel)
    return client, gateway, project, token, spec


def _balance(query, project) -> int:
    return query("SELECT balance_micro FROM projects WHERE id = ?", project.id)[0][0]


def _messages(query, project) -> list[tuple[Any, ...]]:
    return query("SELECT id, number, body, media, media_kind, reference, priority, parts,"
                 " segments, credit_micro, state FROM messages WHERE project_id = ? ORDER BY id",
                 project.id)


def _pushes(query, project) -> int:
    return query("SELECT count(*) FROM pushes WHERE project_id = ?", project.id)[0][0]


async def _ok(client, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    response = await client.post("/api/v2/push", json=body, **kwargs)
    answer = response.json()
    assert response.status_code == 200, answer
    assert answer["status"] == 100, answer
    assert answer["message"] == "Success"
    return answer


# --- per-entry refusals -------------------------------------------------------------------------

@pytest.mark.parametrize(("number", "reason"), [
    ("+919876543210", "no '+'"),
    ("0919876543210", "must not start with 0"),
    ("91987abc3210", "digits only"),
    ("91 98765 43210", "digits only"),
    ("91", "too short"),
    ("9198", "wrong length"),
    ("9198765432101234", "too long"),
    ("11234567890", "not a valid number for US"),
    ("", "digits only"),
])
async def test_invalid_number_is_refused_in_place(app_client, make, query, number,
                                                  reason) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    answer = await _ok(client, {"token": token, "application": "1", "globalmessage": "hi",
                                "data": [{"number": NUMBER_A}, {"number": number},
                                         {"number": NUMBER_B}]})
    first, refused, last = answer["data"]
    assert refused == {"number": number, "credit": "0", "status": int(Code.INVALID_NUMBER),
                       "message": refused["message"]}
    assert reason in refused["message"]
    assert [first["number"], last["number"]] == [NUMBER_A, NUMBER_B]
    assert int(first["msg_id"]) < int(last["msg_id"])
    assert answer["accepted"] == 2 and answer["rejected"] == 1
    assert answer["credit_total"] == "0.01"
    assert [m[1] for m in _messages(query, project)] == [NUMBER_A, NUMBER_B]
    assert _balance(query, project) == parse_credits("9.99")


async def test_number_sent_as_integer_is_validated_too(app_client, make, query) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    answer = await _ok(client, {"token": token, "application": 1, "globalmessage": "hi",
                                "data": [{"number": 919876543210}, {"number": 11234567890}]})
    assert answer["data"][0]["number"] == NUMBER_A and "msg_id" in answer["data"][0]
    assert answer["data"][1]["status"] == int(Code.INVALID_NUMBER)
    assert answer["data"][1]["number"] == "11234567890"
    assert [m[1] for m in _messages(query, project)] == [NUMBER_A]


async def test_empty_message_is_refused_in_place(app_client, make, query) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    answer = await _ok(client, {"token": token, "application": "1", "globalmessage": "",
                                "data": [{"number": NUMBER_A, "message": "hi"},
                                         {"number": NUMBER_B, "message": ""},
                                         {"number": NUMBER_C}]})
    assert "msg_id" in answer["data"][0]
    for item, number in zip(answer["data"][1:], (NUMBER_B, NUMBER_C), strict=True):
        assert item["status"] == int(Code.EMPTY_MESSAGE)
        assert item["credit"] == "0" and "msg_id" not in item and item["number"] == number
    assert len(_messages(query, project)) == 1


async def test_message_too_long_for_the_channel(app_client, make, query) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make, max_chars=10)
    answer = await _ok(client, {"token": token, "application": "1",
                                "data": [{"number": NUMBER_A, "message": "x" * 10},
                                         {"number": NUMBER_B, "message": "x" * 11}]})
    assert "msg_id" in answer["data"][0]
    refused = answer["data"][1]
    assert refused["status"] == int(Code.MESSAGE_TOO_LONG) and refused["credit"] == "0"
    assert "11" in refused["message"] and "10" in refused["message"]
    assert [m[2] for m in _messages(query, project)] == ["x" * 10]


async def test_sms_parts_limit_is_message_too_long(app_client, make, query) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make, application=3,
                                                      price="0.01", max_segments=2)
    answer = await _ok(client, {"token": token, "application": "3",
                                "data": [{"number": NUMBER_A, "message": "a" * 306},
                                         {"number": NUMBER_B, "message": "a" * 307}]})
    assert answer["data"][0]["credit"] == "0.02"
    assert answer["data"][1]["status"] == int(Code.MESSAGE_TOO_LONG)
    assert "3 SMS parts" in answer["data"][1]["message"]
    assert _balance(query, project) == parse_credits("9.98")


async def test_media_not_allowed_on_sms(app_client, make, query) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make, application=3,
                                                      price="0.01")
    # Global media on a text-only channel refuses the whole push.
    response = await client.post("/api/v2/push", json={
        "token": token, "application": "3", "globalmessage": "hi",
        "globalmedia": "https://example.com/a.png", "data": [{"number": NUMBER_A}]})
    assert response.status_code == CODES[Code.MEDIA_NOT_ALLOWED].http_status == 422
    assert response.json()["status"] == int(Code.MEDIA_NOT_ALLOWED)
    response = await client.post("/api/v2/push", json={
        "token": token, "application": "3", "globalmessage": "hi",
        "globalmedia_code": base64.b64encode(PNG_HEADER + b"\0" * 64).decode(),
        "data": [{"number": NUMBER_A}]})
    assert response.json()["status"] == int(Code.MEDIA_NOT_ALLOWED)
    assert _messages(query, project) == [] and _pushes(query, project) == 0
    assert _balance(query, project) == parse_credits("10")
    # Per-entry media is refused in place.
    answer = await _ok(client, {"token": token, "application": "3", "globalmessage": "hi",
                                "data": [{"number": NUMBER_A},
                                         {"number": NUMBER_B,
                                          "media": "https://example.com/b.png"}]})
    assert answer["data"][1]["status"] == int(Code.MEDIA_NOT_ALLOWED)
    assert answer["data"][1]["credit"] == "0"
    assert [m[1] for m in _messages(query, project)] == [NUMBER_A]


async def test_inline_media_too_large(app_client, make, query) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    image = PNG_HEADER + b"\0" * (5 * 1024 * 1024 + 1 - len(PNG_HEADER))
    assert len(image) == 5 * 1024 * 1024 + 1
    response = await client.post("/api/v2/push", json={
        "token": token, "application": "1", "globalmessage": "look",
        "globalmedia_code": base64.b64encode(image).decode(), "data": [{"number": NUMBER_A}]})
    body = response.json()
    assert body["status"] == int(Code.MEDIA_TOO_LARGE) == 205
    assert response.status_code == 413
    assert str(len(image)) in body["message"]
    assert _messages(query, project) == [] and _pushes(query, project) == 0
    assert query("SELECT count(*) FROM media")[0][0] == 0
    assert _balance(query, project) == parse_credits("10")


async def test_inline_media_within_limit_is_stored_once(app_client, make, query) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    image = PNG_HEADER + b"\x01" * 1000
    answer = await _ok(client, {
        "token": token, "application": "1", "globalmessage": "look",
        "globalmedia_code": base64.b64encode(image).decode(),
        "data": [{"number": NUMBER_A}, {"number": NUMBER_B}]})
    assert [e["credit"] for e in answer["data"]] == ["0.005", "0.005"]
    rows = query("SELECT id, kind, content_type, data FROM media WHERE project_id = ?",
                 project.id)
    assert len(rows) == 1
    media_id, kind, content_type, data = rows[0]
    assert (kind, content_type, bytes(data)) == ("image", "image/png", image)
    messages = _messages(query, project)
    assert [(m[3], m[4], m[7]) for m in messages] == [(None, "image", 1)] * 2
    assert query("SELECT media_id FROM messages WHERE project_id = ?", project.id) == [
        (media_id,)] * 2


@pytest.mark.parametrize("fields", [
    {"globalmedia_code": "@@@ not base64 @@@"},
    {"globalmedia_code": "iVBORw0KGgo"},           # bad padding
    {"globalmedia_code": "   "},
    {"globalmedia": "ftp://example.com/a.png"},
    {"globalmedia": "/etc/passwd"},
])
async def test_invalid_global_media_refuses_the_push(app_client, make, query, fields) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    response = await client.post("/api/v2/push", json={
        "token": token, "application": "1", "globalmessage": "hi",
        "data": [{"number": NUMBER_A}], **fields})
    body = response.json()
    assert body["status"] == int(Code.INVALID_MEDIA), body
    assert response.status_code == 422
    assert _messages(query, project) == [] and _pushes(query, project) == 0
    assert _balance(query, project) == parse_credits("10")


async def test_invalid_entry_media_is_refused_in_place(app_client, make, query) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    answer = await _ok(client, {"token": token, "application": "1", "globalmessage": "hi",
                                "data": [{"number": NUMBER_A, "media": "file:///etc/passwd"},
                                         {"number": NUMBER_B,
                                          "media": "https://example.com/x.jpg"}]})
    assert answer["data"][0]["status"] == int(Code.INVALID_MEDIA)
    assert "msg_id" not in answer["data"][0] and answer["data"][0]["credit"] == "0"
    assert [(m[1], m[3], m[4]) for m in _messages(query, project)] == [
        (NUMBER_B, "https://example.com/x.jpg", "image")]


async def test_duplicates_are_sent_once(app_client, make, query) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    answer = await _ok(client, {"token": token, "application": "1", "globalmessage": "",
                                "data": [{"number": NUMBER_A, "message": "same"},
                                         {"number": NUMBER_A, "message": "other"},
                                         {"number": NUMBER_A, "message": "same"},
                                         {"number": NUMBER_B, "message": "same"},
                                         {"number": NUMBER_A, "message": "same"}]})
    data = answer["data"]
    assert len(data) == 5
    for dup in (data[2], data[4]):
        assert dup["status"] == int(Code.DUPLICATE) == 207
        assert dup["duplicate_of"] == data[0]["msg_id"]
        assert dup["credit"] == "0" and "msg_id" not in dup and dup["number"] == NUMBER_A
    assert all("msg_id" in data[i] for i in (0, 1, 3))
    assert answer["accepted"] == 3 and answer["credit_total"] == "0.015"
    assert [(m[1], m[2]) for m in _messages(query, project)] == [
        (NUMBER_A, "same"), (NUMBER_A, "other"), (NUMBER_B, "same")]
    assert _balance(query, project) == parse_credits("9.985")


async def test_duplicate_via_globalmessage(app_client, make, query) -> None:
    """An entry spelling out the global text repeats an entry that inherits it."""
    client, gateway, project, token, _ = await _setup(app_client, make)
    answer = await _ok(client, {"token": token, "application": "1", "globalmessage": "G",
                                "data": [{"number": NUMBER_A},
                                         {"number": NUMBER_A, "message": "G"}]})
    assert answer["data"][1]["status"] == int(Code.DUPLICATE)
    assert answer["data"][1]["duplicate_of"] == answer["data"][0]["msg_id"]
    assert len(_messages(query, project)) == 1


async def test_reference_number_limit(app_client, make, query) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    answer = await _ok(client, {"token": token, "application": "1", "globalmessage": "hi",
                                "data": [{"number": NUMBER_A, "reference_number": "r" * 255},
                                         {"number": NUMBER_B, "reference_number": "r" * 256}]})
    assert "msg_id" in answer["data"][0]
    refused = answer["data"][1]
    assert refused["status"] == int(Code.INVALID_REFERENCE) and refused["credit"] == "0"
    assert "msg_id" not in refused
    assert [m[5] for m in _messages(query, project)] == ["r" * 255]


async def test_mixed_push_keeps_request_order(app_client, make, query) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make, max_chars=20)
    entries = [
        {"number": NUMBER_A},                                   # ok
        {"number": "+14155552671"},                             # 201
        {"number": NUMBER_B, "message": "y" * 21},              # 203
        {"number": NUMBER_C, "message": "own text"},            # ok
        {"number": NUMBER_A},                                   # 207
        {"number": NUMBER_D, "reference_number": "x" * 300},    # 208
        {"number": NUMBER_D, "reference_number": 7},            # ok
    ]
    answer = await _ok(client, {"token": token, "application": "1", "globalmessage": "hello",
                                "data": entries})
    data = answer["data"]
    assert [e.get("status") for e in data] == [None, 201, 203, None, 207, 208, None]
    assert [e["number"] for e in data] == [NUMBER_A, "+14155552671", NUMBER_B, NUMBER_C,
                                           NUMBER_A, NUMBER_D, NUMBER_D]
    accepted = [e for e in data if "status" not in e]
    refused = [e for e in data if "status" in e]
    assert all(e["credit"] == "0.005" and e["msg_id"].isdigit() for e in accepted)
    assert all(e["credit"] == "0" and "msg_id" not in e and e["message"] for e in refused)
    ids = [int(e["msg_id"]) for e in accepted]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert answer["accepted"] == 3 and answer["rejected"] == 4
    assert answer["credit_total"] == "0.015" and answer["balance"] == "9.985"
    rows = _messages(query, project)
    assert [(r[0], r[1], r[2], r[5]) for r in rows] == [
        (ids[0], NUMBER_A, "hello", None), (ids[1], NUMBER_C, "own text", None),
        (ids[2], NUMBER_D, "hello", "7")]
    assert _balance(query, project) == parse_credits("9.985")


async def test_all_invalid_for_one_reason_answers_that_code(app_client, make, query) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    response = await client.post("/api/v2/push", json={
        "token": token, "application": "1", "globalmessage": "hi",
        "data": [{"number": "+919876543210"}, {"number": "0919876543210"}]})
    body = response.json()
    assert body["status"] == int(Code.INVALID_NUMBER)
    assert response.status_code == 422
    assert "push_id" not in body
    assert [e["status"] for e in body["data"]] == [201, 201]
    assert all(e["credit"] == "0" and "msg_id" not in e for e in body["data"])
    assert _messages(query, project) == [] and _pushes(query, project) == 0
    assert _balance(query, project) == parse_credits("10")


async def test_all_invalid_for_different_reasons_is_416(app_client, make, query) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    response = await client.post("/api/v2/push", json={
        "token": token, "application": "1", "globalmessage": "",
        "data": [{"number": "+919876543210", "message": "hi"}, {"number": NUMBER_B},
                 {"number": NUMBER_C, "message": "x", "reference_number": "r" * 256}]})
    body = response.json()
    assert body["status"] == int(Code.NO_VALID_ENTRIES) == 416
    assert response.status_code == 422
    assert [e["status"] for e in body["data"]] == [201, 202, 208]
    assert _messages(query, project) == [] and _pushes(query, project) == 0
    assert _balance(query, project) == parse_credits("10")


# --- push variants -------------------------------------------------------------------------------

async def test_bulk_push_sends_the_global_text(app_client, make, query) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    numbers = [NUMBER_A, NUMBER_B, NUMBER_C, NUMBER_D]
    answer = await _ok(client, {"token": token, "application": "1",
                                "globalmessage": "Sale today", "priority": "0",
                                "data": [{"number": n} for n in numbers]})
    assert [e["number"] for e in answer["data"]] == numbers
    rows = _messages(query, project)
    assert [(r[1], r[2], r[6], r[10]) for r in rows] == [(n, "Sale today", 0, "queued")
                                                         for n in numbers]
    for item in answer["data"]:
        message = (await client.get(f"/api/v2/messages/{item['msg_id']}",
                                    headers={"authorization": f"Bearer {token}"})).json()
        assert message["data"]["message"] == "Sale today"


async def test_dynamic_and_single_push(app_client, make, query) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    answer = await _ok(client, {"token": token, "application": "1", "globalmessage": "",
                                "data": [{"number": NUMBER_A, "message": "one"},
                                         {"number": NUMBER_B, "message": "two"}]})
    assert len(answer["data"]) == 2
    single = await _ok(client, {"token": token, "application": "1",
                                "data": [{"number": NUMBER_C, "message": "solo"}]})
    assert len(single["data"]) == 1 and single["push_id"] != answer["push_id"]
    assert [(r[1], r[2]) for r in _messages(query, project)] == [
        (NUMBER_A, "one"), (NUMBER_B, "two"), (NUMBER_C, "solo")]


async def test_entry_message_wins_over_globalmessage(app_client, make, query) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    await _ok(client, {"token": token, "application": "1", "globalmessage": "global",
                       "data": [{"number": NUMBER_A, "message": "mine"},
                                {"number": NUMBER_B, "message": ""},
                                {"number": NUMBER_C},
                                {"number": NUMBER_D, "message": 12345}]})
    assert [r[2] for r in _messages(query, project)] == ["mine", "global", "global", "12345"]


async def test_values_as_numbers(app_client, make, query) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    answer = await _ok(client, {"token": token, "application": 1, "priority": 1,
                                "globalmessage": "hi",
                                "data": [{"number": 919876543210, "reference_number": 42}]})
    assert answer["data"][0]["number"] == NUMBER_A
    assert isinstance(answer["push_id"], str) and isinstance(answer["data"][0]["msg_id"], str)
    rows = _messages(query, project)
    assert [(r[1], r[5], r[6]) for r in rows] == [(NUMBER_A, "42", 1)]


@pytest.mark.parametrize(("fields", "expected"), [
    ({"priority ": "1"}, 1),
    ({"priority ": 1}, 1),
    ({"priority ": "0"}, 0),
    ({"priority": "1"}, 1),
    ({}, 0),
])
async def test_priority_with_trailing_space_is_honoured(app_client, make, query, fields,
                                                       expected) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    answer = await _ok(client, {"token": token, "application": "1", "globalmessage": "hi",
                                "data": [{"number": NUMBER_A}], **fields})
    push = (await client.get(f"/api/v2/pushes/{answer['push_id']}",
                             headers={"authorization": f"Bearer {token}"})).json()
    assert push["data"]["priority"] == expected
    assert [r[6] for r in _messages(query, project)] == [expected]


async def test_token_as_bearer_header(app_client, make, query) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    await _ok(client, {"application": "1", "globalmessage": "hi", "data": [{"number": NUMBER_A}]},
              headers={"authorization": f"Bearer {token}"})
    await _ok(client, {"application": "1", "globalmessage": "hi", "data": [{"number": NUMBER_B}]},
              headers={"authorization": f"bearer {token}"})
    assert len(_messages(query, project)) == 2


async def test_normal_post_form_field_and_query(app_client, make, query) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    payload = json.dumps({"token": token, "application": "1", "globalmessage": "form",
                          "data": [{"number": NUMBER_A}]})
    response = await client.post("/api/v2/push", data={"data": payload})
    assert response.request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert response.status_code == 200 and response.json()["status"] == 100, response.json()

    payload = json.dumps({"token": token, "application": "1", "globalmessage": "query",
                          "data": [{"number": NUMBER_B}]})
    response = await client.post("/api/v2/push", params={"data": payload})
    assert response.request.content == b""
    assert response.status_code == 200 and response.json()["status"] == 100, response.json()

    # multipart form as well
    payload = json.dumps({"token": token, "application": "1", "globalmessage": "multipart",
                          "data": [{"number": NUMBER_C}]})
    response = await client.post("/api/v2/push", data={"data": payload},
                                 files={"unused": ("a.txt", b"x")})
    assert response.status_code == 200 and response.json()["status"] == 100, response.json()
    assert [(r[1], r[2]) for r in _messages(query, project)] == [
        (NUMBER_A, "form"), (NUMBER_B, "query"), (NUMBER_C, "multipart")]


async def test_reference_number_is_echoed_by_delivery_report(app_client, make) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    answer = await _ok(client, {"token": token, "application": "1", "globalmessage": "hi",
                                "data": [{"number": NUMBER_A, "reference_number": "order-17"},
                                         {"number": NUMBER_B},
                                         {"number": NUMBER_C, "reference_number": 99}]})
    report = (await client.post("/api/v2/delivery-report",
                                json={"token": token, "push_id": answer["push_id"]})).json()
    assert [(i["msg_id"], i["number"], i["reference_number"]) for i in report["data"]] == [
        (answer["data"][0]["msg_id"], NUMBER_A, "order-17"),
        (answer["data"][1]["msg_id"], NUMBER_B, None),
        (answer["data"][2]["msg_id"], NUMBER_C, "99")]


async def test_channel_id_picks_one_channel_explicitly(app_client, make, query) -> None:
    client, gateway, project, token, whatsapp = await _setup(app_client, make, price="0.005")
    second = await make.channel(project.id, application=1, price="0.02")
    sms = await make.channel(project.id, application=3, price="0.01")
    hi = {"token": token, "globalmessage": "hi", "data": [{"number": NUMBER_A}]}
    # `channel_id` alone, or with the channel's own application code, picks that channel.
    assert (await _ok(client, {**hi, "channel_id": str(second.id)}))["data"][0]["credit"] \
        == "0.02"
    assert (await _ok(client, {**hi, "channel_id": sms.id, "application": "3"}))["data"][0][
        "credit"] == "0.01"
    # `application` alone: the lowest id of the two channels serving it.
    assert (await _ok(client, {**hi, "application": 1}))["data"][0]["credit"] == "0.005"
    assert query("SELECT channel_id FROM messages WHERE project_id = ? ORDER BY id",
                 project.id) == [(second.id,), (sms.id,), (whatsapp.id,)]


async def test_of_two_channels_on_one_application_the_unpaused_lowest_id_wins(
        app_client, make, store, query) -> None:
    client, gateway, project, token, first = await _setup(app_client, make, price="0.005")
    second = await make.channel(project.id, application=1, price="0.02")
    third = await make.channel(project.id, application=1, price="0.03")
    assert first.id < second.id < third.id
    hi = {"token": token, "application": "1", "globalmessage": "hi",
          "data": [{"number": NUMBER_A}]}
    assert (await _ok(client, hi))["data"][0]["credit"] == "0.005"
    await store.update_channel(first.id, paused=True)
    gateway.lookups.forget()
    assert (await _ok(client, hi))["data"][0]["credit"] == "0.02"
    for channel in (second, third):
        await store.update_channel(channel.id, paused=True)
    gateway.lookups.forget()
    # All paused: still the lowest id (its queue waits; the operator resumes it).
    assert (await _ok(client, hi))["data"][0]["credit"] == "0.005"
    assert [r[0] for r in query("SELECT channel_id FROM messages ORDER BY id")] == [
        first.id, second.id, first.id]


async def test_sms_charges_per_segment(app_client, make, query) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make, application=3,
                                                      price="0.01")
    texts = [
        "a" * 160,                 # GSM-7, one part
        "a" * 161,                 # GSM-7, two parts of 153
        "a" * 159 + "€",           # extension character counts twice: 161 septets
        "Hi 😀",                   # UCS-2, one part
        "a" * 68 + "😀",           # 70 UTF-16 units: one part
        "a" * 69 + "😀",           # 71 units: two parts of 67
        "a" * 66 + "😀" + "a" * 10,  # the pair would straddle unit 67: still two parts
    ]
    expected_segments = [1, 2, 2, 1, 1, 2, 2]
    numbers = [f"9198765432{i:02d}" for i in range(len(texts))]
    answer = await _ok(client, {"token": token, "application": "3", "data": [
        {"number": n, "message": t} for n, t in zip(numbers, texts, strict=True)]})
    assert [e["credit"] for e in answer["data"]] == [
        format_credits(parse_credits("0.01") * s) for s in expected_segments]
    total = parse_credits("0.01") * sum(expected_segments)
    assert answer["credit_total"] == format_credits(total)
    rows = _messages(query, project)
    assert [r[8] for r in rows] == expected_segments
    assert [r[9] for r in rows] == [parse_credits("0.01") * s for s in expected_segments]
    assert _balance(query, project) == parse_credits("10") - total


@pytest.mark.parametrize(("url", "kind", "parts"), [
    ("https://example.com/pic.jpg", "image", 1),
    ("https://example.com/clip.mp4?x=1", "video", 1),
    ("https://example.com/voice.mp3", "audio", 2),
])
async def test_global_media_caption_or_separate_text(app_client, make, query, url, kind,
                                                     parts) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make, price="0.005")
    answer = await _ok(client, {"token": token, "application": "1", "globalmessage": "caption",
                                "globalmedia": url,
                                "data": [{"number": NUMBER_A},
                                         {"number": NUMBER_B, "message": ""}]})
    credit = format_credits(parse_credits("0.005") * parts)
    assert [e["credit"] for e in answer["data"]] == [credit, credit]
    rows = _messages(query, project)
    assert [(r[2], r[3], r[4], r[7]) for r in rows] == [("caption", url, kind, parts)] * 2
    message = (await client.get(f"/api/v2/messages/{answer['data'][0]['msg_id']}",
                                headers={"authorization": f"Bearer {token}"})).json()["data"]
    assert message["parts"] == parts and message["media_kind"] == kind


async def test_media_without_text_is_one_part(app_client, make, query) -> None:
    client, gateway, project, token, _ = await _setup(app_client, make)
    answer = await _ok(client, {"token": token, "application": "1", "globalmessage": "",
                                "globalmedia": "https://example.com/voice.mp3",
                                "data": [{"number": NUMBER_A}]})
    assert answer["data"][0]["credit"] == "0.005"
    assert [(r[2], r[7]) for r in _messages(query, project)] == [("", 1)]


# --- credits under concurrency -------------------------------------------------------------------

async def test_concurrent_pushes_never_overdraw(app_client, make, query) -> None:
    client, gateway, project, token, _ = await _setup(
        app_client, make, credits="0.1", price="0.005", settings={"push_rate_per_minute": 0})
    initial = parse_credits("0.1")
    pushes = []
    for i in range(20):
        size = 1 + i % 4                              # 1..4 entries: 0.005..0.02 each
        pushes.append([f"91987654{i:02d}{j:02d}" for j in range(size)])
    assert sum(len(p) for p in pushes) * parse_credits("0.005") > initial * 2

    async def push(numbers: list[str]):
        return await client.post("/api/v2/push", json={
            "token": token, "application": "1", "globalmessage": "race",
            "data": [{"number": n} for n in numbers]})

    responses = await asyncio.gather(*(push(p) for p in pushes))
    final = _balance(query, project)
    assert final >= 0
    charged = 0
    accepted_entries = 0
    accepted_numbers: set[str] = set()
    refused_costs = []
    for numbers, response in zip(pushes, responses, strict=True):
        body = response.json()
        cost = len(numbers) * parse_credits("0.005")
        if body["status"] == 100:
            assert response.status_code == 200
            assert sum(parse_credits(e["credit"]) for e in body["data"]) == cost
            charged += cost
            accepted_entries += len(numbers)
            accepted_numbers.update(numbers)
        else:
            assert body["status"] == int(Code.INSUFFICIENT_CREDIT), body
            assert response.status_code == 402
            assert body["credit_total"] == format_credits(cost)
            refused_costs.append(cost)
    assert charged == initial - final
    assert refused_costs, "the balance was meant to run out"
    assert charged > 0
    # Every refused push cost more than the balance at its turn, which is never below the end.
    assert all(cost > final for cost in refused_costs)
    rows = _messages(query, project)
    assert len(rows) == accepted_entries
    assert {r[1] for r in rows} == accepted_numbers
    assert sum(r[9] for r in rows) == charged
    assert _pushes(query, project) == sum(1 for r in responses if r.json()["status"] == 100)
    ledger = query("SELECT coalesce(sum(delta_micro), 0) FROM credit_ledger WHERE project_id = ?",
                   project.id)[0][0]
    assert ledger == final
