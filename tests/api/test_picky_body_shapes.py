"""Every push body shape Picky's documentation pages and sample client code show, accepted by
``POST /api/v2/push`` end to end; each test is named after the page or sample it copies.

Values come as strings or numbers wherever Picky takes them; a value that cannot be read is
refused with its code of docs/error-codes.md, with nothing stored and nothing charged.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from pushgate.core.errors import CODES, Code

N1, N2, N3, N4, N5 = ("919876543210", "14155552671", "919812345678", "919800000001",
                      "447911123456")
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
IMAGE_URL = "http://media.test/offer.jpg"
PDF_URL = "http://media.test/invoice.pdf"


async def _setup(app_client, make, application: int = 1, credits: str = "10"):
    client, _ = await app_client()
    project, token, _ = await make.project(credits=credits, name="main")
    await make.channel(project.id, application=application)
    return client, project, token


async def _accepted(client, body: dict[str, Any], path: str = "/api/v2/push",
                    **kwargs: Any) -> dict[str, Any]:
    response = await client.post(path, json=body, **kwargs) if body else \
        await client.post(path, **kwargs)
    answer = response.json()
    assert response.status_code == 200, answer
    assert answer["status"] == 100 and answer["message"] == "Success", answer
    # Picky's response variables: ids and credit as strings, one entry per number in order.
    assert isinstance(answer["push_id"], str)
    for item in answer["data"]:
        assert isinstance(item["msg_id"], str) and isinstance(item["credit"], str)
    return answer


def _rows(query, project) -> list[tuple[Any, ...]]:
    return query("SELECT number, body, media, media_kind, reference, priority, extra"
                 " FROM messages WHERE project_id = ? ORDER BY id", project.id)


def _balance(query, project) -> int:
    return query("SELECT balance_micro FROM projects WHERE id = ?", project.id)[0][0]


# --- Push API pages -------------------------------------------------------------------------------

async def test_sending_single_message_push_sample(app_client, make, query) -> None:
    client, project, token = await _setup(app_client, make, application=10)
    answer = await _accepted(client, {
        "token": token, "priority ": "0", "application": "10",
        "globalmessage": "your global message ", "globalmedia": IMAGE_URL,
        "data": [{"number": N1}]})
    assert [item["number"] for item in answer["data"]] == [N1]
    assert _rows(query, project) == [(N1, "your global message ", IMAGE_URL, "image", None, 0,
                                      None)]


async def test_sending_bulk_messages_push_page(app_client, make, query) -> None:
    """Bulk: every `message` left blank, the text in `globalmessage`."""
    client, project, token = await _setup(app_client, make)
    numbers = [N1, N2, N3]
    answer = await _accepted(client, {
        "token": token, "priority ": "0", "application": "1", "globalmessage": "Sale today",
        "data": [{"number": n, "message": ""} for n in numbers]})
    assert [item["number"] for item in answer["data"]] == numbers
    assert [(r[0], r[1]) for r in _rows(query, project)] == [(n, "Sale today") for n in numbers]


async def test_sending_dynamic_messages_push_sample_request_body(app_client, make,
                                                                 query) -> None:
    """The page's sample body as given, with real numbers and a media URL in its place."""
    client, project, token = await _setup(app_client, make)
    numbers = [N1, N2, N3, N4, N5]
    answer = await _accepted(client, {
        "token": token, "priority ": "0", "application": "1", "globalmessage": "",
        "globalmedia": IMAGE_URL,
        "data": [{"number": n, "message": f"MESSAGE FOR NUMBER {i}"}
                 for i, n in enumerate(numbers, 1)]})
    assert [item["number"] for item in answer["data"]] == numbers
    assert [(r[0], r[1], r[2]) for r in _rows(query, project)] == [
        (n, f"MESSAGE FOR NUMBER {i}", IMAGE_URL) for i, n in enumerate(numbers, 1)]


async def test_sending_media_attachments_push_base64_globalmedia_code(app_client, make,
                                                                      query) -> None:
    client, project, token = await _setup(app_client, make)
    await _accepted(client, {
        "token": token, "application": 1, "globalmessage": "the caption",
        "globalmedia_code": base64.b64encode(PNG).decode(),
        "data": [{"number": N1}, {"number": N2}]})
    rows = _rows(query, project)
    assert [(r[0], r[1], r[3]) for r in rows] == [(N1, "the caption", "image"),
                                                  (N2, "the caption", "image")]


async def test_sending_media_attachments_push_per_number_media_official(app_client, make,
                                                                        query) -> None:
    """WhatsApp Official takes a `media` per number, its `message` the caption."""
    client, project, token = await _setup(app_client, make, application=8)
    await _accepted(client, {
        "token": token, "application": "8", "globalmessage": "",
        "data": [{"number": N1, "message": "your offer", "media": IMAGE_URL},
                 {"number": N2, "media": PDF_URL}]})
    assert [(r[0], r[1], r[2], r[3]) for r in _rows(query, project)] == [
        (N1, "your offer", IMAGE_URL, "image"), (N2, "", PDF_URL, "document")]


async def test_sending_whatsapp_template_document_push_page(app_client, make, query) -> None:
    client, project, token = await _setup(app_client, make, application=8)
    await _accepted(client, {
        "token": token, "application": "8", "template_id": "invoice_ready", "language": "en",
        "template_globalmessage": ["Asha", "INV-17"], "template_header": "Invoice",
        "globalmedia": PDF_URL,
        "data": [{"number": N1},
                 {"number": N2, "template_message": ["Sam", 18], "language": "en_GB",
                  "template_header": "Your invoice"}]})
    extras = [json.loads(r[6])["template"] for r in _rows(query, project)]
    assert extras == [
        {"name": "invoice_ready", "language": "en", "header": "Invoice",
         "values": ["Asha", "INV-17"]},
        {"name": "invoice_ready", "language": "en_GB", "header": "Your invoice",
         "values": ["Sam", "18"]}]


async def test_third_party_client_template_payload(app_client, make, query) -> None:
    """A real client's template send: no `globalmessage`, `language` per number."""
    client, project, token = await _setup(app_client, make, application=8)
    answer = await _accepted(client, {
        "token": token, "application": "8", "template_id": "JJ8587723",
        "data": [{"number": N1, "template_message": ["User", "123456"], "language": "en_GB"}]})
    assert answer["data"][0]["number"] == N1
    extra = json.loads(_rows(query, project)[0][6])
    assert extra["template"] == {"name": "JJ8587723", "language": "en_GB", "header": None,
                                 "values": ["User", "123456"]}


async def test_quick_start_guide_normal_post_data_query_on_the_older_base(app_client, make,
                                                                          query) -> None:
    """`https://…/app/api/v2/push?data=JSON` for tools that cannot send a JSON body."""
    client, project, token = await _setup(app_client, make)
    payload = json.dumps({"token": token, "priority ": "1", "application": "1",
                          "globalmessage": "from a form tool", "data": [{"number": N1}]})
    await _accepted(client, {}, path="/app/api/v2/push", params={"data": payload})
    assert [(r[0], r[1], r[5]) for r in _rows(query, project)] == [(N1, "from a form tool", 1)]


async def test_third_party_client_otp_template_with_reference_beside_data(app_client, make,
                                                                          query) -> None:
    """A PHP client's template send: `reference_number` beside `data`, not in its entries;
    it counts for every entry without its own."""
    client, project, token = await _setup(app_client, make, application=8)
    await _accepted(client, {
        "token": token, "application": "8", "template_id": "OTP1", "reference_number": "otp_1",
        "data": [{"number": N1, "language": "en", "template_message": ["482913"]},
                 {"number": N2, "language": "en", "template_message": ["112233"],
                  "reference_number": "mine"}]})
    assert [(r[0], r[4]) for r in _rows(query, project)] == [(N1, "otp_1"), (N2, "mine")]


async def test_third_party_client_media_template_per_number(app_client, make, query) -> None:
    """A PHP client's ticket template: each entry's `media` beside its `template_message`."""
    client, project, token = await _setup(app_client, make, application=8)
    await _accepted(client, {
        "token": token, "application": "8", "template_id": "TICKET",
        "data": [{"number": N1, "language": "en", "template_message": ["Asha"],
                  "media": IMAGE_URL}]})
    rows = _rows(query, project)
    assert [(r[0], r[2], r[3]) for r in rows] == [(N1, IMAGE_URL, "image")]
    assert json.loads(rows[0][6])["template"]["values"] == ["Asha"]


@pytest.mark.parametrize("content_type", ["text/plain; charset=utf-8", None])
async def test_third_party_client_json_without_a_json_content_type(app_client, make, query,
                                                                   content_type) -> None:
    """C#'s `StringContent(json)` posts `text/plain`; Python's `requests` with
    `data=json.dumps(...)` no content type at all: the body is JSON all the same."""
    client, project, token = await _setup(app_client, make)
    raw = json.dumps({"token": token, "priority": "0", "application": "1",
                      "globalmessage": "Please find attached", "data": [{"number": N1}]})
    headers = {"content-type": content_type} if content_type else {}
    request = client.build_request("POST", "/app/api/v2/push", content=raw.encode(),
                                   headers=headers)
    assert request.headers.get("content-type") == content_type
    response = await client.send(request)
    assert response.json()["status"] == 100, response.json()
    assert [(r[0], r[1]) for r in _rows(query, project)] == [(N1, "Please find attached")]


async def test_third_party_client_without_application_is_refused(app_client, make,
                                                                 query) -> None:
    """A sample client sends only `token` and `data`; Picky marks `application` mandatory,
    and so does pushgate (406), nothing done."""
    client, project, token = await _setup(app_client, make)
    response = await client.post("/api/v2/push", json={
        "token": token, "data": [{"number": N1, "message": "hi"}]})
    answer = response.json()
    assert answer["status"] == int(Code.INVALID_FIELD) and "application" in answer["message"]
    assert _rows(query, project) == []


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
async def test_quick_start_guide_normal_post_data_query_with_a_form_content_type(
        app_client, make, query, content_type) -> None:
    """A form tool posting Picky's `push?data=JSON` with its form content type and no `data`
    field in the form."""
    client, project, token = await _setup(app_client, make)
    payload = json.dumps({"token": token, "application": "1", "globalmessage": "from zoho",
                          "data": [{"number": N1}]})
    await _accepted(client, {}, params={"data": payload}, headers={"content-type": content_type})
    assert [(r[0], r[1]) for r in _rows(query, project)] == [(N1, "from zoho")]
    # A form field wins over the query.
    form = json.dumps({"token": token, "application": "1", "globalmessage": "field",
                       "data": [{"number": N2}]})
    await _accepted(client, {}, params={"data": payload}, data={"data": form})
    assert [(r[0], r[1]) for r in _rows(query, project)][-1] == (N2, "field")


# --- API Variables: strings or numbers everywhere ---------------------------------------------

async def test_api_variables_every_value_as_a_string(app_client, make, query) -> None:
    client, project, token = await _setup(app_client, make, application=8)
    await _accepted(client, {
        "token": token, "application": "8", "priority": "1", "action": "0",
        "template_id": "12345", "language": "en", "template_header": "2026",
        "template_globalmessage": ["7", "8"],
        "data": [{"number": N1, "reference_number": "42", "template_message": ["1", "2"]},
                 {"number": N2}]})
    rows = _rows(query, project)
    assert [(r[0], r[4], r[5]) for r in rows] == [(N1, "42", 1), (N2, None, 1)]
    assert [json.loads(r[6])["template"]["values"] for r in rows] == [["1", "2"], ["7", "8"]]


async def test_api_variables_every_value_as_a_number(app_client, make, query) -> None:
    client, project, token = await _setup(app_client, make, application=8)
    await _accepted(client, {
        "token": token, "application": 8, "priority": 1, "priority ": 1, "action": 0,
        "template_id": 12345, "language": 1, "template_header": 2026,
        "template_globalmessage": [7, 8.5],
        "data": [{"number": int(N1), "reference_number": 42, "template_message": [1, 2],
                  "language": 2, "template_header": 2027},
                 {"number": int(N2), "message": 99}]})
    rows = _rows(query, project)
    assert [(r[0], r[4], r[5]) for r in rows] == [(N1, "42", 1), (N2, None, 1)]
    templates = [json.loads(r[6])["template"] for r in rows]
    assert templates == [
        {"name": "12345", "language": "2", "header": "2027", "values": ["1", "2"]},
        {"name": "12345", "language": "1", "header": "2026", "values": ["7", "8.5"]}]


async def test_api_variables_text_sends_with_numbers_as_values(app_client, make,
                                                               query) -> None:
    client, project, token = await _setup(app_client, make)
    await _accepted(client, {"token": token, "application": 1, "globalmessage": 2026,
                             "data": [{"number": int(N1)}, {"number": N2, "message": 7}]})
    assert [(r[0], r[1]) for r in _rows(query, project)] == [(N1, "2026"), (N2, "7")]


async def test_api_variables_token_as_a_number_is_read(app_client, make, query) -> None:
    """A token of digits sent as a JSON number is a token (unknown here: 401), not a field of
    the wrong type."""
    client, project, _ = await _setup(app_client, make)
    response = await client.post("/api/v2/push", json={
        "token": 123456789, "application": 1, "globalmessage": "hi",
        "data": [{"number": N1}]})
    assert response.json()["status"] == int(Code.AUTH_FAILED), response.json()
    for path, body in [("/api/v2/delivery-report", {"push_id": 1}),
                       ("/app/api/v2/device-status", {"application": 1}),
                       ("/api/v2/device-action", {"application": 1, "command": "restart"}),
                       ("/api/v2/sandbox/inbound", {"application": 1, "number": N1,
                                                    "message": "hi"})]:
        response = await client.post(path, json={"token": 123456789, **body})
        assert response.json()["status"] == int(Code.AUTH_FAILED), (path, response.json())
    assert _rows(query, project) == []


async def test_api_variables_options_pushgate_does_not_offer_are_ignored(app_client, make,
                                                                        query) -> None:
    """`voice`, `sticker`, `media_name`, `messenger_id`, `location`, `contact` and clients'
    `sleep` are read past: the message goes as its text."""
    client, project, token = await _setup(app_client, make)
    await _accepted(client, {
        "token": token, "application": "1", "globalmessage": "plain", "voice": 1,
        "sticker": "1", "media_name": "file.pdf", "messenger_id": 1234, "sleep": 5,
        "location": {"name": "x", "address": "y", "lat": 1.5, "long": 2.5},
        "contact": [{"first_name": "Test"}],
        "data": [{"number": N1, "media_code": "AAAA"}]})
    assert [(r[0], r[1], r[2], r[3]) for r in _rows(query, project)] == [
        (N1, "plain", None, None)]


async def test_shared_number_as_application_is_not_offered(app_client, make, query) -> None:
    """The single-message page's shared numbers (`application: 919737001155`): pushgate has
    none, and such a value is past any application code (406), nothing done."""
    client, project, token = await _setup(app_client, make)
    for application in (919737001155, "556140404433"):
        response = await client.post("/api/v2/push", json={
            "token": token, "application": application, "globalmessage": "hi",
            "data": [{"number": N1}]})
        answer = response.json()
        assert answer["status"] == int(Code.INVALID_FIELD), answer
        assert "application" in answer["message"]
    assert _rows(query, project) == []


@pytest.mark.parametrize(("fields", "code"), [
    ({"application": True}, Code.INVALID_FIELD),
    ({"application": 1.5}, Code.INVALID_FIELD),
    ({"application": "one"}, Code.INVALID_FIELD),
    ({"priority": "high"}, Code.INVALID_FIELD),
    ({"priority ": 2}, Code.INVALID_FIELD),
    ({"action": "filter"}, Code.INVALID_FIELD),
    ({"action": 5}, Code.INVALID_ACTION),
    ({"token": {"value": "x"}}, Code.INVALID_FIELD),
    ({"globalmessage": ["hi"]}, Code.INVALID_FIELD),
    ({"globalmedia": 5}, Code.INVALID_FIELD),
    ({"template_id": {"id": 1}}, Code.INVALID_FIELD),
    ({"data": "919876543210"}, Code.INVALID_FIELD),
    ({"data": [{"number": [919876543210]}]}, Code.INVALID_FIELD),
    ({"data": [{"number": N1, "message": None, "reference_number": {"a": 1}}]},
     Code.INVALID_FIELD),
    ({"data": [{"number": N1, "template_message": "User"}]}, Code.INVALID_FIELD),
    ({"data": []}, Code.EMPTY_DATA),
])
async def test_api_variables_unreadable_value_refuses_with_nothing_done(
        app_client, make, query, fields: dict[str, Any], code: Code) -> None:
    client, project, token = await _setup(app_client, make)
    before = _balance(query, project)
    body = {"token": token, "application": "1", "globalmessage": "hi",
            "data": [{"number": N1}], **fields}
    response = await client.post("/api/v2/push", json=body)
    answer = response.json()
    assert set(answer) == {"status", "message"}, answer
    assert answer["status"] == int(code), answer
    assert response.status_code == CODES[code].http_status
    assert _rows(query, project) == []
    assert query("SELECT count(*) FROM pushes WHERE project_id = ?", project.id)[0][0] == 0
    assert _balance(query, project) == before
