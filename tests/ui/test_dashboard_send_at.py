"""The dashboard's "Send at" fields (issue 19): the Send form's and the CSV form's send_at
schedule the push (its messages wait, status 0), the push's page says when, and a wrong
time is refused before anything is sent."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from tests.ui.test_dashboard_campaign_pages import CSV, GOOD, csv_form, signed_in
from tests.ui.test_dashboard_sessions import csrf_of

INDIA = timezone(timedelta(hours=5, minutes=30))


def _later() -> tuple[int, str]:
    at = round(time.time()) + 900
    return at, datetime.fromtimestamp(at, INDIA).isoformat()


async def test_the_send_form_schedules_the_push(app_client: Any, make: Any,
                                                query: Any) -> None:
    client, gateway, project = await signed_in(app_client, make)
    page = await client.get("/ui/send")
    assert 'name="send_at"' in page.text
    once = re.search(r'name="once" value="([^"]+)"', page.text)
    assert once
    at, spelled = _later()
    form = {"csrf": csrf_of(page.text), "once": once.group(1), "application": "1",
            "numbers": "\n".join(GOOD[:2]), "message": "later", "priority": "0",
            "send_at": spelled}
    wrong = await client.post("/ui/send", data={**form, "send_at": "2026-12-06T09:00"})
    assert wrong.status_code == 422 and "offset" in wrong.text
    assert await gateway.store.list_pushes(project.id, None, 10) == []
    sent = await client.post("/ui/send", data=form)
    assert sent.status_code == 303
    pushes = await gateway.store.list_pushes(project.id, None, 10)
    assert len(pushes) == 1 and pushes[0].send_at == at
    assert query("SELECT DISTINCT state FROM messages WHERE push_id = ?",
                 pushes[0].id) == [("scheduled",)]
    shown = (await client.get(sent.headers["location"])).text
    expected = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M")
    scheduled = re.search(r'id="scheduled">([^<]*)<', shown)
    assert scheduled and scheduled.group(1).startswith("Scheduled for") \
        and expected in scheduled.group(1), scheduled


async def test_the_csv_form_schedules_its_pushes(app_client: Any, make: Any,
                                                 query: Any) -> None:
    client, gateway, project = await signed_in(app_client, make)
    page = await client.get("/ui/send/csv")
    at, spelled = _later()
    wrong = await client.post("/ui/send/csv", data=csv_form(page.text, send_at="soon"),
                              files={"file": ("people.csv", CSV, "text/csv")})
    assert wrong.status_code == 422 and "427" in wrong.text
    preview = await client.post("/ui/send/csv", data=csv_form(page.text, send_at=spelled),
                                files={"file": ("people.csv", CSV, "text/csv")})
    assert preview.status_code == 200, preview.text
    upload = re.search(r'name="upload" value="([0-9a-f]+)"', preview.text)
    assert upload
    sent = await client.post("/ui/send/csv/confirm",
                             data={"csrf": csrf_of(preview.text), "upload": upload.group(1)})
    assert sent.status_code == 303
    pushes = await gateway.store.list_pushes(project.id, None, 10)
    assert [(p.accepted, p.send_at) for p in pushes] == [(2, at)]
    assert query("SELECT DISTINCT state FROM messages WHERE push_id = ?",
                 pushes[0].id) == [("scheduled",)]
