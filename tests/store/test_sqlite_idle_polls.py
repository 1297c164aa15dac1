"""SQLite: the webhook deliverer's four polls (outbox, inbound messages, number-check reports,
opt-out events) ask the read connection first, so a poll that finds nothing due runs no
writer job (no turn on the write lock other processes' writers wait for), and each poll
searches its index instead of scanning it. What the claims return is the contract tests'
(``contract/test_store_channel_io.py``, ``test_store_checks.py``, ...)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import Fixture

from pushgate.core.models import InboundMessage

LEASE = 30.0


async def _poll_all(store: Any, now: float) -> list[Any]:
    return [await store.claim_outbox("d", 100, now, LEASE),
            await store.claim_inbound(100, now, LEASE),
            await store.claim_check_reports(100, now, LEASE),
            await store.claim_optout_events(100, now, LEASE)]


@pytest.mark.sqlite_only
async def test_polls_that_find_nothing_due_run_no_writer_job(store: Any, make: Fixture) -> None:
    project, _token, _secret = await make.project()
    channel = await make.channel(project.id, application=8)
    await store.set_incoming_webhook(project.id, "http://127.0.0.1:9/in")
    jobs: list[str] = []
    write = store._write

    def counted(fn: Any, *args: Any) -> Any:
        jobs.append(fn.__name__)
        return write(fn, *args)

    store._write = counted
    now = time.time()
    assert await _poll_all(store, now) == [[], [], [], []]
    assert jobs == []
    # Something due: that poll, and only that one, claims it through the writer.
    inbound = InboundMessage(channel_id=channel.id, number="919876543210", text="hi",
                             provider_id="wamid.in1", at=now)
    assert await store.record_inbound([inbound], now) == 1
    jobs.clear()
    outbox, [item], checks, optouts = await _poll_all(store, now + 1)
    assert (outbox, checks, optouts) == ([], [], [])
    assert item.message.number == "919876543210"
    assert jobs == ["job"]
    # Leased now: the next poll is a read again.
    jobs.clear()
    assert await _poll_all(store, now + 2) == [[], [], [], []]
    assert jobs == []


@pytest.mark.sqlite_only
async def test_the_polls_search_their_indexes(statements: list[str], store: Any, make: Fixture,
                                              db_url: str) -> None:
    project, _token, _secret = await make.project()
    channel = await make.channel(project.id)
    await store.set_incoming_webhook(project.id, "http://127.0.0.1:9/in")
    now = time.time()
    await store.record_inbound([InboundMessage(
        channel_id=channel.id, number="919876543210", text="hi", provider_id="p1", at=now)], now)
    statements.clear()
    await _poll_all(store, now + 1)
    tables = ("outbox", "inbound_messages", "number_checks", "optout_events")
    polls = [sql for sql in statements if sql.lstrip().startswith(("SELECT 1", "UPDATE"))
             and any(f"FROM {table} WHERE" in sql for table in tables)]
    assert len(polls) == 5   # four reads, and the one claim that found its row
    conn = sqlite3.connect(Path(db_url.split(":///", 1)[1]))
    try:
        plans = {sql: " | ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
                 for sql in polls}
    finally:
        conn.close()
    assert {sql: plan for sql, plan in plans.items()
            if "SCAN" in plan or "TEMP B-TREE" in plan} == {}
