"""SQLite's query plans on the dispatch path: no statement reads the whole `messages` table.

The indexes of `messages` are partial (migration 0006) and SQLite uses a partial index only
when a query repeats its predicate; a query that forgets it still works, but scans the
whole table, which a million queued messages make slow (docs/benchmarks.md). This test
records every statement the store runs while a message goes through its life and asks SQLite
for each one's plan. SQLite plans without statistics here (the store never runs ANALYZE), so
a small table gets the plans a large one would."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
from tests.conftest import Fixture

from pushgate.core.devices import Device, DeviceQuota
from pushgate.core.lifecycle import State
from pushgate.core.models import SendResult, StatusUpdate
from pushgate.core.policy import RetryPolicy
from pushgate.core.push import Limits, decode_push, plan_push
from pushgate.store.factory import store_for_url


@pytest.mark.sqlite_only
async def test_the_dispatch_path_never_scans_messages(
        db_url: str, statements: list[str]) -> None:
    store = store_for_url(db_url)
    await store.open()
    try:
        fixture = Fixture(store)
        project, _token, _secret = await fixture.project()
        channel = await fixture.channel(project.id)
        now = time.time()
        body = decode_push(json.dumps({"priority": 0, "globalmessage": "", "data": [
            {"number": f"91987654{i:04d}", "message": f"m {i}"} for i in range(3)]}))
        plan = plan_push(body, channel, Limits())
        pushed = await store.accept_push(project.id, channel, plan, now, now + 3600)
        assert await store.has_ready_messages(channel.id, now + 1)
        claimed = await store.claim_messages(channel.id, "w", 10, now + 1, 30.0)
        await store.record_outcomes("w", [
            SendResult.sent(claimed[0].id, "p0"),
            SendResult.retry(claimed[1].id, "503"),
            SendResult.delivered(claimed[2].id, "p2"),
        ], now + 2, RetryPolicy())
        await store.apply_status_updates([
            StatusUpdate(State.DELIVERED, now + 3, channel_id=channel.id, provider_id="p0")])
        await store.sent_since(channel.id, now - 3600)
        await store.submitted_before(channel.id, now + 10, 10)
        await store.channel_queue_counts(channel.id)
        await store.expire_due(now + 5, 100)
        # The phone path: a pull channel's device takes its messages and reports them.
        phones = await fixture.channel(project.id, kind="android")
        await store.accept_push(project.id, phones, plan_push(body, phones, Limits()), now,
                                now + 3600)
        await store.register_device(Device(id="phone-1", channel_id=phones.id,
                                           project_id=project.id, name="p", created_at=now,
                                           last_seen_at=now), "hash-1")
        quota = DeviceQuota(per_minute=0, per_hour=0, per_day=0, per_fetch=10,
                            max_in_flight=10, lease_seconds=30.0, offline_after=60.0,
                            sticky_seconds=0.0, delays=(0.0,) * 10)
        handed = await store.claim_for_device("phone-1", quota, now + 1)
        assert handed.messages
        await store.note_device_reports(
            "phone-1", [(m.id, "Processed", now + 2) for m in handed.messages], now + 2, 30.0)
        await store.claim_for_device("phone-1", quota, now + 100)
        await store.cancel_channel_queue(channel.id, now + 6, "test", True)
        assert pushed.message_ids
    finally:
        await store.close()

    path = Path(db_url.split(":///", 1)[1])
    conn = sqlite3.connect(path)
    scans = {}
    checked = 0
    for sql in statements:
        if "messages" not in sql or not sql.lstrip().upper().startswith(
                ("SELECT", "UPDATE", "DELETE", "WITH")):
            continue
        plan = " | ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
        checked += 1
        if "SCAN messages" in plan or "SCAN m " in plan or plan.endswith("SCAN m"):
            scans[sql] = plan
    conn.close()
    assert checked >= 15
    assert scans == {}

