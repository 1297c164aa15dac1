"""The dashboard's send form through the push route's accept path (idempotent, post/redirect/
get), the CSV send (preview, confirm, result, rejects file, the upload bound to its session),
message search and the credits page, over an in-process app on every backend."""

from __future__ import annotations

import re
from typing import Any

import httpx

from pushgate.ui import campaign_pages
from tests.ui.test_dashboard_sessions import KEY, csrf_of, sign_in

GOOD = ["919876543210", "919812345678", "919822334455"]


async def signed_in(app_client: Any, make: Any, credits: str = "10") -> tuple[
        httpx.AsyncClient, Any, Any]:
    project, token, _ = await make.project()
    await make.channel(project.id)
    client, gateway = await app_client(secret_key=KEY)
    await sign_in(client, token)
    return client, gateway, project


async def test_a_form_sent_twice_is_one_push(app_client: Any, make: Any) -> None:
    client, gateway, project = await signed_in(app_client, make)
    page = await client.get("/ui/send")
    once = re.search(r'name="once" value="([^"]+)"', page.text)
    assert once
    form = {"csrf": csrf_of(page.text), "once": once.group(1), "application": "1",
            "numbers": "\n".join([*GOOD[:2], "12345"]), "message": "hi", "priority": "0"}
    first = await client.post("/ui/send", data=form)
    again = await client.post("/ui/send", data=form)
    assert first.status_code == again.status_code == 303
    assert first.headers["location"] == again.headers["location"]
    pushes = await gateway.store.list_pushes(project.id, None, 10)
    assert [p.accepted for p in pushes] == [2]
    shown = (await client.get(first.headers["location"])).text
    assert "12345" in shown and "wrong length" in shown


def csv_form(page: str, **extra: str) -> dict[str, str]:
    return {"csrf": csrf_of(page), "application": "1", "number_column": "phone",
            "message": "Hi {name}, your code is {code}", "priority": "0", **extra}


CSV = ("phone,name,code\n"
       f"{GOOD[0]},Asha,A1\n"
       "12345,Bad,B2\n"
       ",Nobody,C3\n"
       f"{GOOD[1]},Ravi,D4\n").encode()


async def test_csv_preview_then_confirm_sends_once(app_client: Any, make: Any) -> None:
    client, gateway, project = await signed_in(app_client, make)
    page = await client.get("/ui/send/csv")
    preview = await client.post("/ui/send/csv", data=csv_form(page.text),
                                files={"file": ("people.csv", CSV, "text/csv")})
    assert preview.status_code == 200, preview.text
    text = preview.text
    assert "Hi Asha, your code is A1" in text and "Hi Ravi, your code is D4" in text
    assert "wrong length" in text and "no number in column" in text
    summary = re.search(r"id=\"preview-summary\">([^<]*)", text)
    assert summary and summary.group(1).startswith("4 rows in 1 push: 2 to send, 2 refused"), text
    # Nothing is sent before the confirmation.
    assert await gateway.store.list_pushes(project.id, None, 10) == []
    upload = re.search(r'name="upload" value="([0-9a-f]+)"', text)
    assert upload
    confirm = {"csrf": csrf_of(text), "upload": upload.group(1)}
    sent = await client.post("/ui/send/csv/confirm", data=confirm)
    assert sent.status_code == 303
    result = await client.get(sent.headers["location"])
    pushes = await gateway.store.list_pushes(project.id, None, 10)
    assert [p.accepted for p in pushes] == [2]
    assert "2 messages accepted, 2 refused" in result.text
    assert f"/ui/pushes/{pushes[0].id}" in result.text
    rejects = await client.get(f"{sent.headers['location']}/rejects.csv")
    lines = rejects.text.strip().splitlines()
    assert lines[0] == "phone,name,code,row,reason" and len(lines) == 3
    assert lines[1].startswith("12345,Bad,B2,3,") and lines[2].startswith(",Nobody,C3,4,")
    # Confirming again: the upload is gone (and its pushes' keys would replay anyway).
    assert (await client.post("/ui/send/csv/confirm", data=confirm)).status_code == 410
    assert len(await gateway.store.list_pushes(project.id, None, 10)) == 1
    # The same file uploaded again and confirmed replays: no second push.
    page = await client.get("/ui/send/csv")
    preview = await client.post("/ui/send/csv", data=csv_form(page.text),
                                files={"file": ("people.csv", CSV, "text/csv")})
    upload = re.search(r'name="upload" value="([0-9a-f]+)"', preview.text)
    assert upload
    await client.post("/ui/send/csv/confirm",
                      data={"csrf": csrf_of(preview.text), "upload": upload.group(1)})
    assert len(await gateway.store.list_pushes(project.id, None, 10)) == 1


async def test_csv_errors_before_sending(app_client: Any, make: Any) -> None:
    client, gateway, project = await signed_in(app_client, make)
    page = (await client.get("/ui/send/csv")).text
    unknown = await client.post("/ui/send/csv", data=csv_form(page, message="Hi {nom}"),
                                files={"file": ("p.csv", CSV, "text/csv")})
    assert unknown.status_code == 422 and "{nom}" in unknown.text and "425" in unknown.text
    missing = await client.post("/ui/send/csv", data=csv_form(page, number_column="mobile"),
                                files={"file": ("p.csv", CSV, "text/csv")})
    assert missing.status_code == 422 and "no column" in missing.text and "426" in missing.text
    assert await gateway.store.list_pushes(project.id, None, 10) == []


async def test_an_upload_is_its_session_s_alone(app_client: Any, make: Any) -> None:
    project, token, _ = await make.project()
    await make.channel(project.id)
    client, gateway = await app_client(secret_key=KEY)
    other, _ = await app_client(secret_key=KEY)
    await sign_in(client, token)
    await sign_in(other, token)
    page = (await client.get("/ui/send/csv")).text
    preview = await client.post("/ui/send/csv", data=csv_form(page),
                                files={"file": ("p.csv", CSV, "text/csv")})
    upload = re.search(r'name="upload" value="([0-9a-f]+)"', preview.text)
    assert upload
    theirs = (await other.get("/ui/send/csv")).text
    stolen = await other.post("/ui/send/csv/confirm",
                              data={"csrf": csrf_of(theirs), "upload": upload.group(1)})
    assert stolen.status_code == 410
    assert await gateway.store.list_pushes(project.id, None, 10) == []
    # A path outside the uploads folder is no id.
    assert campaign_pages._valid_id("../../etc/passwd") is None


async def test_a_file_over_the_body_limit_is_refused(app_client: Any, make: Any) -> None:
    project, token, _ = await make.project()
    await make.channel(project.id)
    client, gateway = await app_client(secret_key=KEY, max_body_bytes=1024)
    await sign_in(client, token)
    page = (await client.get("/ui/send/csv")).text
    big = b"phone,name\n" + b"".join(f"{GOOD[0]},{'x' * 40}\n".encode() for _ in range(40))
    refused = await client.post("/ui/send/csv", data=csv_form(page, message="hi"),
                                files={"file": ("p.csv", big, "text/csv")})
    assert refused.status_code == 413 and "larger than 1 KiB" in refused.text
    assert await gateway.store.list_pushes(project.id, None, 10) == []


async def test_messages_search_by_number_and_reference(app_client: Any, make: Any) -> None:
    project, token, _ = await make.project()
    await make.channel(project.id)
    client, _ = await app_client(secret_key=KEY)
    for ref in ("order-1", "order-2"):
        answer = await client.post("/api/v2/push", json={
            "token": token, "application": "1", "globalmessage": f"about {ref}",
            "data": [{"number": GOOD[0], "reference_number": ref}, {"number": GOOD[1]}]})
        assert answer.json()["status"] == 100
    await sign_in(client, token)
    found = await client.get("/ui/messages", params={"q": "+91 98765-43210"})
    assert found.text.count("about order-") == 2 and GOOD[1] not in found.text
    found = await client.get("/ui/messages", params={"q": "order-2", "by": "reference"})
    assert "about order-2" in found.text and "about order-1" not in found.text
    assert 'href="/ui/pushes/' in found.text
    none = await client.get("/ui/messages", params={"q": "order-2"})
    assert 'id="search-error"' in none.text
    empty = await client.get("/ui/messages", params={"q": GOOD[2]})
    assert 'id="found-none"' in empty.text


async def test_messages_search_pages(app_client: Any, make: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(campaign_pages, "FOUND_PAGE", 2)
    project, token, _ = await make.project()
    await make.channel(project.id)
    client, _ = await app_client(secret_key=KEY)
    for n in range(3):
        await client.post("/api/v2/push", json={
            "token": token, "application": "1", "globalmessage": f"note {n}",
            "data": [{"number": GOOD[0]}]})
    await sign_in(client, token)
    first = await client.get("/ui/messages", params={"q": GOOD[0]})
    assert "note 2" in first.text and "note 1" in first.text and "note 0" not in first.text
    older = re.search(r'href="(/ui/messages\?[^"]+)" id="older"', first.text)
    assert older
    rest = await client.get(older.group(1).replace("&amp;", "&"))
    assert "note 0" in rest.text and "note 1" not in rest.text
    assert 'id="older"' not in rest.text


async def test_a_search_that_found_nothing_in_its_window_offers_older_ones(
        app_client: Any, make: Any, monkeypatch: Any) -> None:
    from pushgate.store import rows

    monkeypatch.setattr(rows, "SEARCH_WINDOW", 2)
    project, token, _ = await make.project()
    await make.channel(project.id)
    client, _ = await app_client(secret_key=KEY)
    for n, number in enumerate([GOOD[0], GOOD[1], GOOD[1], GOOD[1]]):
        await client.post("/api/v2/push", json={
            "token": token, "application": "1", "globalmessage": f"note {n}",
            "data": [{"number": number}]})
    await sign_in(client, token)
    page = await client.get("/ui/messages", params={"q": GOOD[0]})
    assert 'id="found-none"' in page.text and "searched so far" in page.text
    older = re.search(r'href="(/ui/messages\?[^"]+)" id="older"', page.text)
    assert older
    rest = await client.get(older.group(1).replace("&amp;", "&"))
    assert "note 0" in rest.text and 'id="found-none"' not in rest.text


async def test_credits_balance_and_history(app_client: Any, make: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(campaign_pages, "LEDGER_PAGE", 2)
    project, token, _ = await make.project()
    await make.channel(project.id)
    client, gateway = await app_client(secret_key=KEY)
    await gateway.store.add_credits(project.id, 3_000_000, "top-up")
    answer = await client.post("/api/v2/push", json={
        "token": token, "application": "1", "globalmessage": "hi",
        "data": [{"number": GOOD[0]}]})
    push_id = answer.json()["push_id"]
    await sign_in(client, token)
    page = await client.get("/ui/credits")
    balance = (await gateway.store.get_project(project.id)).balance_micro
    from pushgate.core.pricing import format_credits
    assert f'id="credit-balance">{format_credits(balance)}<' in page.text
    assert f'href="/ui/pushes/{push_id}"' in page.text and "top-up" in page.text
    older = re.search(r'href="(/ui/credits\?before=\d+)" id="older"', page.text)
    assert older
    rest = await client.get(older.group(1))
    assert "top-up" not in rest.text and f"/ui/pushes/{push_id}" not in rest.text
