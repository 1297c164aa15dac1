"""SQLite's writer runs consecutive accepts of a batch as a group (``accept._accept_group``):
the same rows, ids, balances and answers as the accepts run one after another, whatever the
mix (projects, sizes, free channels, a short balance, opt-outs, schedules)."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import Fixture
from tests.store.contract.test_store_accept import make_plan

from pushgate.core.channels import ChannelSpec
from pushgate.core.push import PushPlan
from pushgate.store.factory import store_for_url
from pushgate.store.migrate import upgrade
from pushgate.store.sqlite import accept
from pushgate.store.sqlite.connection import _connect, _Job, _run_jobs

TABLES = ("projects", "pushes", "credit_ledger", "messages")


class Setup:
    """Two projects (A rich, B with ``b_credits``), a priced channel each and a free one."""

    def __init__(self, path: Path, b_credits: str, optout: str | None) -> None:
        self.path = str(path)
        url = f"sqlite:///{path}"
        upgrade(url)

        async def make() -> None:
            store = store_for_url(url)
            await store.open()
            try:
                fixture = Fixture(store)
                a, _, _ = await fixture.project(credits="100", name="a")
                b, _, _ = await fixture.project(credits=b_credits, name="b")
                self.a, self.b = a.id, b.id
                self.channel_a = await fixture.channel(a.id)
                self.channel_b = await fixture.channel(b.id, price="0.01")
                self.free_a = await fixture.channel(a.id, application=2, price="0")
                if optout is not None:
                    await store.add_optouts(a.id, [optout], time.time(), "api")
            finally:
                await store.close()

        asyncio.run(make())


def job(project_id: int, channel: ChannelSpec, plan: PushPlan, now: float,
        expires_at: float | None = None, send_at: float | None = None) -> _Job:
    args = (project_id, channel, plan, accept._message_rows(plan), now, expires_at, send_at)
    return _Job(accept._accept_job, args, None, None)   # type: ignore[arg-type]


def priced(plan: PushPlan, channel: ChannelSpec) -> PushPlan:
    rows = [(*row[:-1], channel.price_micro) for row in plan.accepted]
    return dataclasses.replace(plan, accepted=rows,
                               credit_total=channel.price_micro * len(rows))


def run(path: str, batches: list[list[_Job]],
        seen: list[str] | None = None) -> list[tuple[bool, Any]]:
    conn = _connect(path)
    if seen is not None:
        conn.set_trace_callback(seen.append)
    outcomes: list[tuple[bool, Any]] = []
    try:
        for batch in batches:
            conn.execute("BEGIN IMMEDIATE")
            outcomes += _run_jobs(conn, batch)
    finally:
        conn.close()
    return outcomes


def dump(path: str) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(path)
    try:
        return {table: conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
                for table in TABLES}
    finally:
        conn.close()


def comparable(outcomes: list[tuple[bool, Any]]) -> list[tuple[bool, Any]]:
    return [(ok, value if ok else (type(value).__name__, str(value)))
            for ok, value in outcomes]


def grouped_and_one_by_one(tmp_path: Path, jobs_of: Any, b_credits: str = "100",
                           optout: str | None = None) -> tuple[list[str], list[Any]]:
    """Run the jobs ``jobs_of(setup)`` gives as one batch on one database and one job a
    batch on another made the same way; assert both ended the same. The grouped run's
    statements and its outcomes."""
    grouped = Setup(tmp_path / "grouped.db", b_credits, optout)
    checkpoint = sqlite3.connect(grouped.path)
    checkpoint.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    checkpoint.close()
    alone = copy.copy(grouped)
    alone.path = str(tmp_path / "alone.db")
    shutil.copyfile(grouped.path, alone.path)
    now = time.time()
    seen: list[str] = []
    together = run(grouped.path, [jobs_of(grouped, now)], seen)
    apart = run(alone.path, [[j] for j in jobs_of(alone, now)])
    assert comparable(together) == comparable(apart)
    assert dump(grouped.path) == dump(alone.path)
    return seen, together


def test_a_batch_of_one_recipient_pushes_runs_as_a_few_statements(tmp_path: Path) -> None:
    def jobs(s: Setup, now: float) -> list[_Job]:
        return [job(s.a, s.channel_a, priced(make_plan(1, tag=f"otp {n}"), s.channel_a),
                    now + n / 1000, now + 3600) for n in range(12)]

    seen, outcomes = grouped_and_one_by_one(tmp_path, jobs)
    assert all(ok for ok, _ in outcomes)
    writes = [s for s in seen if s.startswith(("INSERT", "UPDATE"))]
    # One balance UPDATE, and the pushes, ledger lines and messages in 64/16/4/1-row
    # statements (12 = 4 + 4 + 4 each), where one by one is 4 statements a push.
    assert len(writes) == 1 + 3 * 3
    push_ids = [value[0] for _, value in outcomes]
    assert push_ids == list(range(push_ids[0], push_ids[0] + 12))


def test_mixed_projects_sizes_and_a_free_channel_end_as_one_by_one(tmp_path: Path) -> None:
    def jobs(s: Setup, now: float) -> list[_Job]:
        return [
            job(s.a, s.channel_a, priced(make_plan(1, tag="a1"), s.channel_a), now),
            job(s.b, s.channel_b, priced(make_plan(3, tag="b3"), s.channel_b), now + 1, now + 60),
            job(s.a, s.free_a, priced(make_plan(2, tag="free"), s.free_a), now + 2),
            job(s.a, s.channel_a, dataclasses.replace(priced(
                make_plan(accept.GROUP_MAX_ROWS, tag="a20"), s.channel_a), priority=1), now + 3),
            job(s.b, s.channel_b, priced(make_plan(1, tag="b1"), s.channel_b), now + 4),
        ]

    seen, outcomes = grouped_and_one_by_one(tmp_path, jobs)
    assert all(ok for ok, _ in outcomes)
    assert sum(s.startswith("UPDATE projects") for s in seen) == 2   # one per project


def test_a_balance_short_of_the_group_fails_only_the_pushes_it_cannot_pay(
        tmp_path: Path) -> None:
    def jobs(s: Setup, now: float) -> list[_Job]:
        return [job(s.b, s.channel_b, priced(make_plan(1, tag=f"b{n}"), s.channel_b), now)
                for n in range(5)]

    _, outcomes = grouped_and_one_by_one(tmp_path, jobs, b_credits="0.03")
    assert [ok for ok, _ in outcomes] == [True, True, True, False, False]


@pytest.mark.parametrize("odd_one", ["optout", "scheduled", "large", "empty"])
def test_a_push_the_group_does_not_cover_makes_it_run_one_by_one(
        tmp_path: Path, odd_one: str) -> None:
    def jobs(s: Setup, now: float) -> list[_Job]:
        plain = [job(s.a, s.channel_a, priced(make_plan(1, tag=f"a{n}"), s.channel_a), now)
                 for n in range(4)]
        if odd_one == "optout":
            plain.insert(2, job(s.a, s.channel_a, priced(make_plan(3, tag="some"),
                                                         s.channel_a), now))
        elif odd_one == "scheduled":
            plain.insert(2, job(s.a, s.channel_a, priced(make_plan(2, tag="later"),
                                                         s.channel_a), now, None, now + 600))
        elif odd_one == "large":
            plain.insert(2, job(s.a, s.channel_a, priced(
                make_plan(accept.GROUP_MAX_ROWS + 1, tag="big"), s.channel_a), now))
        elif odd_one == "empty":
            empty = make_plan(0)
            plain.insert(2, job(s.a, s.channel_a, empty, now))
        return plain

    # make_plan numbers its entries 919876540000, …: the push of three loses its second.
    optout = "919876540001" if odd_one == "optout" else None
    seen, outcomes = grouped_and_one_by_one(tmp_path, jobs, optout=optout)
    assert all(ok for ok, _ in outcomes)
    assert sum(s.startswith("UPDATE projects") for s in seen) >= 4   # one a push


def _not_replayable(conn: sqlite3.Connection, fail: bool) -> str:
    """A writer job outside the accept path (as the dispatcher's claims and outcome writes
    are): it makes its batch take the savepoint path."""
    conn.execute("UPDATE projects SET name = name WHERE id = -1")
    if fail:
        raise ValueError("this job fails")
    return "done"


def other(fail: bool = False) -> _Job:
    return _Job(_not_replayable, (fail,), None, None)   # type: ignore[arg-type]


@pytest.mark.parametrize("fail", [False, True], ids=["other job passes", "other job fails"])
def test_accepts_beside_another_kind_of_job_are_still_grouped(tmp_path: Path,
                                                               fail: bool) -> None:
    def jobs(s: Setup, now: float) -> list[_Job]:
        def push(n: int) -> _Job:
            return job(s.a, s.channel_a, priced(make_plan(1, tag=f"a{n}"), s.channel_a), now)
        return [push(0), push(1), push(2), other(fail), push(3), push(4)]

    seen, outcomes = grouped_and_one_by_one(tmp_path, jobs)
    assert [ok for ok, _ in outcomes] == [True, True, True, not fail, True, True]
    # A savepoint for each run of accepts and one for the other job; one balance UPDATE a run.
    assert sum(s.startswith("SAVEPOINT") for s in seen) == 3
    assert sum(s.startswith("UPDATE projects SET balance") for s in seen) == 2


def test_a_group_that_fails_beside_another_job_runs_its_jobs_one_by_one(
        tmp_path: Path) -> None:
    def jobs(s: Setup, now: float) -> list[_Job]:
        pushes = [job(s.b, s.channel_b, priced(make_plan(1, tag=f"b{n}"), s.channel_b), now)
                  for n in range(4)]
        return [other(), *pushes]

    seen, outcomes = grouped_and_one_by_one(tmp_path, jobs, b_credits="0.02")
    assert [ok for ok, _ in outcomes] == [True, True, True, False, False]
    # The group's savepoint rolled back, then one savepoint a push.
    assert sum(s.startswith("SAVEPOINT") for s in seen) == 1 + 1 + 4
