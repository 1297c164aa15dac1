"""``POST /api/v2/push-csv`` (a CSV campaign over HTTP) and the ``Idempotency-Key`` header of
``POST /api/v2/push``: a repeated request answers the same and charges nothing (issue 19.1)."""

from __future__ import annotations

from typing import Any

from pushgate.core.pricing import parse_credits

PRICE = parse_credits("0.005")
CSV = ("\ufeffnumber;name;amount\n919876500001;Ana;12\n;Nobody;1\n919876500002;Bo;7\n"
       "919876500003;Cy;3\n").encode()


async def _setup(app_client: Any, make: Any, **settings: Any) -> Any:
    project, token, _ = await make.project(credits="10")
    await make.channel(project.id, application=1, price="0.005")
    client, gateway = await app_client(run_workers=False, **settings)
    return client, gateway, project, token


async def _balance(gateway: Any, project_id: int) -> int:
    project = await gateway.store.get_project(project_id)
    return int(project.balance_micro)


async def test_push_csv_sends_each_row_and_a_repeat_sends_nothing(
        app_client: Any, make: Any, query: Any) -> None:
    client, gateway, project, token = await _setup(app_client, make, max_recipients=2)
    form = {"token": token, "application": "1", "message": "Hi {name}, {amount} is due"}
    response = await client.post("/api/v2/push-csv", data=form,
                                 files={"file": ("dues.csv", CSV, "text/csv")})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["status"] == 100 and answer["accepted"] == 3 and answer["rejected"] == 1
    assert len(answer["push_ids"]) == 2 and answer["push_id"] == answer["push_ids"][0]
    assert [item["row"] for item in answer["data"]] == [2, 3, 4, 5]
    assert answer["data"][1]["status"] == 201 and "msg_id" not in answer["data"][1]
    assert answer["data"][0]["push_id"] == answer["push_ids"][0]
    assert answer["credit_total"] == "0.015"
    bodies = dict(query("SELECT number, body FROM messages WHERE project_id = ?", project.id))
    assert bodies["919876500002"] == "Hi Bo, 7 is due"
    after = await _balance(gateway, project.id)
    assert after == parse_credits("10") - 3 * PRICE

    again = (await client.post("/api/v2/push-csv", data=form,
                               files={"file": ("dues.csv", CSV, "text/csv")})).json()
    assert again["push_ids"] == answer["push_ids"] and again["data"] == answer["data"]
    assert await _balance(gateway, project.id) == after
    assert query("SELECT count(*) FROM messages WHERE project_id = ?", project.id) == [(3,)]


async def test_push_csv_refuses_a_bad_file_before_sending(
        app_client: Any, make: Any, query: Any) -> None:
    client, _, _, token = await _setup(app_client, make)
    cases = [({"message": "Hi {who}"}, CSV, 425), ({"message": "Hi", "number_column": "tel"},
                                                   CSV, 426),
             ({"message": "Hi"}, b"\xff\xfe\x00n", 424)]
    for fields, data, code in cases:
        answer = (await client.post("/api/v2/push-csv",
                                    data={"token": token, "application": "1", **fields},
                                    files={"file": ("x.csv", data, "text/csv")})).json()
        assert answer["status"] == code, answer
    missing = (await client.post("/api/v2/push-csv", data={"token": token, "application": "1",
                                                           "message": "x"},
                                 files={"other": ("x", b"", "text/csv")})).json()
    assert missing["status"] == 406
    assert query("SELECT count(*) FROM pushes") == [(0,)]
    # pushgate's own endpoint: not at Picky's older base path.
    old = await client.post("/app/api/v2/push-csv", data={"token": token},
                            files={"file": ("x.csv", CSV, "text/csv")})
    assert old.status_code == 404


async def test_idempotency_key_header_on_push(app_client: Any, make: Any, query: Any) -> None:
    client, gateway, project, token = await _setup(app_client, make)
    body = {"token": token, "application": "1", "globalmessage": "hello",
            "data": [{"number": "919876500001"}, {"number": "bad"},
                     {"number": "919876500002"}]}
    first = (await client.post("/api/v2/push", json=body,
                               headers={"Idempotency-Key": "order-42"})).json()
    assert first["status"] == 100 and first["accepted"] == 2
    after = await _balance(gateway, project.id)
    second = (await client.post("/api/v2/push", json=body,
                                headers={"Idempotency-Key": "order-42"})).json()
    assert second["push_id"] == first["push_id"] and second["data"] == first["data"]
    assert await _balance(gateway, project.id) == after
    other = (await client.post("/api/v2/push", json=body,
                               headers={"Idempotency-Key": "order-43"})).json()
    plain = (await client.post("/api/v2/push", json=body)).json()
    assert len({first["push_id"], other["push_id"], plain["push_id"]}) == 3
    assert query("SELECT count(*) FROM messages WHERE project_id = ?", project.id) == [(6,)]
    bad = (await client.post("/api/v2/push", json=body,
                             headers={"Idempotency-Key": "x" * 256})).json()
    assert bad["status"] == 406
    # The key of another push: refused, not answered with that push's ids.
    charged = await _balance(gateway, project.id)
    reused = (await client.post("/api/v2/push", json={**body, "data": body["data"][:1]},
                                headers={"Idempotency-Key": "order-42"})).json()
    assert reused["status"] == 428 and first["push_id"] in reused["message"]
    # The same size with other texts, or another send_at: refused too (issue 19).
    import time

    for changed in ({**body, "globalmessage": "bye"}, {**body, "send_at": time.time() + 600}):
        again = (await client.post("/api/v2/push", json=changed,
                                   headers={"Idempotency-Key": "order-42"})).json()
        assert again["status"] == 428 and first["push_id"] in again["message"], again
    assert await _balance(gateway, project.id) == charged
    assert query("SELECT count(*) FROM messages WHERE project_id = ?", project.id) == [(6,)]


async def test_push_csv_with_send_at_schedules_every_push(
        app_client: Any, make: Any, query: Any) -> None:
    import time

    client, gateway, project, token = await _setup(app_client, make, max_recipients=2)
    at = round(time.time()) + 600
    form = {"token": token, "application": "1", "message": "Hi {name}", "send_at": str(at)}
    answer = (await client.post("/api/v2/push-csv", data=form,
                                files={"file": ("dues.csv", CSV, "text/csv")})).json()
    assert answer["status"] == 100 and answer["accepted"] == 3, answer
    assert query("SELECT DISTINCT send_at FROM pushes WHERE project_id = ?",
                 project.id) == [(at,)]
    assert query("SELECT DISTINCT state FROM messages WHERE project_id = ?",
                 project.id) == [("scheduled",)]
    # The same upload and time: a replay; another time: another campaign.
    again = (await client.post("/api/v2/push-csv", data=form,
                               files={"file": ("dues.csv", CSV, "text/csv")})).json()
    assert again["push_ids"] == answer["push_ids"]
    later = (await client.post("/api/v2/push-csv", data={**form, "send_at": str(at + 60)},
                               files={"file": ("dues.csv", CSV, "text/csv")})).json()
    assert later["status"] == 100 and set(later["push_ids"]).isdisjoint(answer["push_ids"])
    assert query("SELECT count(*) FROM messages WHERE project_id = ?", project.id) == [(6,)]
    after = await _balance(gateway, project.id)
    for wrong in ("2026-12-06T09:00", "tomorrow", str(at + 10 ** 9)):
        refused = (await client.post("/api/v2/push-csv", data={**form, "send_at": wrong},
                                     files={"file": ("dues.csv", CSV, "text/csv")})).json()
        assert refused["status"] == 427, refused
    assert query("SELECT count(*) FROM pushes WHERE project_id = ?", project.id) == [(4,)]
    assert await _balance(gateway, project.id) == after


async def test_push_csv_takes_an_xlsx_workbook(app_client: Any, make: Any, query: Any) -> None:
    import io

    import openpyxl

    client, _, project, token = await _setup(app_client, make)
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in (["number", "name"], [919876500001, "Ana"], [919876500002, "Bo"]):
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    data = out.getvalue()
    form = {"token": token, "application": "1", "message": "Hi {name}"}
    answer = (await client.post("/api/v2/push-csv", data=form,
                                files={"file": ("dues.xlsx", data, "application/octet-stream")}
                                )).json()
    assert answer["status"] == 100 and answer["accepted"] == 2, answer
    bodies = dict(query("SELECT number, body FROM messages WHERE project_id = ?", project.id))
    assert bodies == {"919876500001": "Hi Ana", "919876500002": "Hi Bo"}
