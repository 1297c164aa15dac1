"""`pushgate report` and `pushgate push cancel` end to end (the command in a subprocess), on
every store (issue 19.2, 19.3)."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

from pushgate.cli import pushes
from pushgate.core.models import SendResult
from pushgate.core.policy import RetryPolicy
from pushgate.core.pricing import parse_credits
from pushgate.store.base import Store
from tests.store.contract.test_store_queue import PRICE, balance, queue
from tests.test_cli import pushgate


async def test_report_csv_of_a_2000_message_push(store: Store, make: Any, db_url: str,
                                                 tmp_path: Path) -> None:
    project, _, _ = await make.project(name="school")
    channel = await make.channel(project.id)
    pushed = await queue(store, channel, 2000, time.time(), references=True)
    out = tmp_path / "report.csv"
    done = pushgate("report", str(pushed.push_id), "--project", "school", "--csv", str(out),
                    "--json", url=db_url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"push_id": pushed.push_id, "project_id": project.id,
                                       "rows": 2000, "csv": str(out)}
    with out.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(pushes.COLUMNS)
    assert len(rows) == 2001
    first = dict(zip(rows[0], rows[1], strict=True))
    assert (first["msg_id"], first["number"], first["status"], first["state"]) == (
        str(pushed.message_ids[0]), "919876540000", "0", "queued")
    assert first["reference_number"] == "ref-m-0"
    assert first["updated_at"].endswith("+00:00") and "T" in first["accepted_at"]
    assert [r[0] for r in rows[1:]] == [str(mid) for mid in pushed.message_ids]

    # Piped without --csv: the same CSV on stdout; --json: one JSON document.
    piped = pushgate("report", str(pushed.push_id), url=db_url)
    assert piped.returncode == 0, piped.stderr
    assert len(list(csv.reader(io.StringIO(piped.stdout)))) == 2001
    as_json = json.loads(pushgate("report", str(pushed.push_id), "--json", url=db_url).stdout)
    assert len(as_json["messages"]) == 2000
    assert as_json["messages"][1]["msg_id"] == pushed.message_ids[1]


async def test_report_streams_page_by_page(store: Store, make: Any, tmp_path: Path) -> None:
    project, _, _ = await make.project()
    channel = await make.channel(project.id)
    pushed = await queue(store, channel, 2000, time.time())
    push = await store.get_push(project.id, pushed.push_id)
    assert push is not None
    pages: list[int] = []
    out = io.StringIO()
    write = pushes._csv_writer(out)

    def page(rows: list[dict[str, Any]]) -> None:
        write(rows)
        pages.append(len(rows))

    # Each page is written before the next is read: never the whole push at once.
    assert await pushes.stream_report(store, push, project.id, page, chunk=300) == 2000
    assert pages == [300] * 6 + [200]
    assert out.getvalue().count("\n") == 2001


async def test_report_of_an_unknown_or_another_projects_push_fails(
        store: Store, make: Any, db_url: str) -> None:
    project, _, _ = await make.project(name="clinic")
    await make.project(name="shop")
    channel = await make.channel(project.id)
    pushed = await queue(store, channel, 2, time.time())
    for args, why in ((["--project", "shop"], "not a push of project 'shop'"), ([], "")):
        push_id = str(pushed.push_id) if args else "424242"
        for command in (["report", push_id], ["push", "cancel", push_id]):
            done = pushgate(*command, *args, url=db_url)
            assert done.returncode == 1, done.stdout
            assert (why or "no push 424242") in done.stderr
    assert (await store.get_push(project.id, pushed.push_id)).counts == {"queued": 2}


async def test_push_cancel_refunds_what_no_channel_took(store: Store, make: Any,
                                                        db_url: str) -> None:
    project, _, _ = await make.project(name="shop", webhook_url="http://hooks.test/p")
    channel = await make.channel(project.id)
    start = await balance(store, project.id)
    t0 = time.time()
    pushed = await queue(store, channel, 4, t0)
    claimed = await store.claim_messages(channel.id, "w", 1, t0, 30.0)
    await store.record_outcomes("w", [SendResult.sent(claimed[0].id, "p-1")], t0,
                                RetryPolicy())

    done = pushgate("push", "cancel", str(pushed.push_id), "--project", "shop", "--json",
                    url=db_url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"push_id": pushed.push_id, "cancelled": 3,
                                       "refunded": "0.015", "in_flight": 0, "sent": 1,
                                       "already_ended": 0}
    assert await balance(store, project.id) == start - PRICE
    report = pushgate("report", str(pushed.push_id), url=db_url)
    statuses = [row["status"] for row in csv.DictReader(io.StringIO(report.stdout))]
    assert statuses == ["4", "5", "5", "5"]
    # The event webhook is told of each cancelled message.
    reports = [item.report for batch in await store.claim_outbox("d", 100, time.time(), 30.0)
               for item in batch.items if item.report.state == "cancelled"]
    assert sorted(r.message_id for r in reports) == pushed.message_ids[1:]

    again = pushgate("push", "cancel", str(pushed.push_id), "--json", url=db_url)
    assert json.loads(again.stdout)["cancelled"] == 0
    assert parse_credits(json.loads(again.stdout)["refunded"]) == 0
