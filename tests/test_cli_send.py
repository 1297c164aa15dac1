"""`pushgate send` end to end (the command in a subprocess) on every store: a CSV campaign cut
into pushes, refused rows in the rejects file, reruns that send nothing twice, and a run
killed after its first push then run again (issue 19.1)."""

from __future__ import annotations

import csv
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pushgate.core.pricing import parse_credits
from pushgate.store.base import Store
from pushgate.store.sqlite.connection import WRITE_LOCK_SUFFIX, WRITE_TURN_SUFFIX
from tests.store.contract.test_store_queue import PRICE, balance


def command(*args: str, url: str, max_recipients: int) -> list[str]:
    return [sys.executable, "-m", "pushgate.cli", "send", *args]


def environment(url: str, max_recipients: int) -> dict[str, str]:
    return {"PUSHGATE_DATABASE_URL": url, "PUSHGATE_MAX_RECIPIENTS": str(max_recipients),
            "PATH": "/usr/bin:/bin"}


def send(*args: str, url: str, max_recipients: int = 2) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(*args, url=url, max_recipients=max_recipients),
                          capture_output=True, text=True, timeout=60,
                          env=environment(url, max_recipients))


def numbers(count: int) -> list[str]:
    return [f"9198765{i:05d}" for i in range(count)]


def write_csv(path: Path, count: int) -> Path:
    lines = ["number,name,amount"] + [f"{n},name{i},{i}.00" for i, n in enumerate(numbers(count))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def test_send_a_campaign_then_rerun_sends_nothing_twice(
        store: Store, make: Any, db_url: str, query: Any, tmp_path: Path) -> None:
    project, _, _ = await make.project(name="shop", credits="10")
    await make.channel(project.id)
    data = tmp_path / "dues.csv"
    # A BOM, `;` separators, a row without number, a bad number, a row with its own message.
    data.write_bytes("\ufeffnumber;name;amount;message\n"
                     "919876500001;Ana;12,50;\n"
                     ";Nobody;1;\n"
                     "12ab;Bad;2;\n"
                     "919876500002;Bo;7;Bo, call us\n"
                     "919876500003;Cy;3;\n".encode())
    args = ("--project", "shop", "--application", "1", "--csv", str(data),
            "--message", "Hi {name}, {amount} is due", "--json")
    done = send(*args, url=db_url)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    rejects = tmp_path / "dues.csv.rejects.csv"
    assert out["accepted"] == 3 and out["rejected"] == 2
    assert out["rejects_file"] == str(rejects)
    assert len(out["push_ids"]) == 2   # 4 rows with a number, 2 per push
    bodies = dict(query("SELECT number, body FROM messages WHERE project_id = ?", project.id))
    assert bodies == {"919876500001": "Hi Ana, 12,50 is due", "919876500002": "Bo, call us",
                      "919876500003": "Hi Cy, 3 is due"}
    with rejects.open(newline="", encoding="utf-8") as f:
        refused = list(csv.DictReader(f))
    assert [(r["row"], r["name"], r["code"]) for r in refused] == [("3", "Nobody", "201"),
                                                                  ("4", "Bad", "201")]
    assert all(r["reason"] for r in refused)
    assert await balance(store, project.id) == parse_credits("10") - 3 * PRICE

    again = send(*args, url=db_url)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == out
    assert query("SELECT count(*) FROM messages WHERE project_id = ?", project.id) == [(3,)]
    assert await balance(store, project.id) == parse_credits("10") - 3 * PRICE

    # Another message is another campaign.
    other = send(*args[:-3], "--message", "Hello {name}", "--json", url=db_url)
    assert other.returncode == 0, other.stderr
    assert query("SELECT count(*) FROM messages WHERE project_id = ?", project.id) == [(6,)]


async def test_unknown_placeholder_or_number_column_sends_nothing(
        store: Store, make: Any, db_url: str, query: Any, tmp_path: Path) -> None:
    project, _, _ = await make.project(name="shop")
    await make.channel(project.id)
    data = write_csv(tmp_path / "c.csv", 3)
    base = ("--project", "shop", "--application", "1", "--csv", str(data))
    bad = send(*base, "--message", "Hi {name}, {due_date}", url=db_url)
    assert bad.returncode == 1
    assert "{due_date}" in bad.stderr and "nothing was sent" in bad.stderr
    missing = send(*base, "--message", "Hi", "--number-column", "phone", url=db_url)
    assert missing.returncode == 1 and "'phone'" in missing.stderr
    assert query("SELECT count(*) FROM pushes") == [(0,)]
    assert not (tmp_path / "c.csv.rejects.csv").exists()


def _one_write_through(lock: int, turn: int) -> None:
    """Let the writers waiting on the database's write lock have exactly one transaction,
    then hold the lock again: the writer protocol of store/sqlite/connection.py (a waiter
    holds the turn while it waits for the lock, so taking the turn then the lock queues
    this process behind that one transaction)."""
    fcntl.flock(lock, fcntl.LOCK_UN)
    fcntl.flock(turn, fcntl.LOCK_EX)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
    finally:
        fcntl.flock(turn, fcntl.LOCK_UN)


@pytest.mark.sqlite_only
async def test_killed_after_its_first_push_then_rerun_sends_every_row_once(
        store: Store, make: Any, db_url: str, query: Any, tmp_path: Path) -> None:
    project, _, _ = await make.project(name="shop", credits="10")
    await make.channel(project.id)
    data = write_csv(tmp_path / "big.csv", 10)
    args = ("--project", "shop", "--application", "1", "--csv", str(data),
            "--message", "Hi {name}, {amount} is due", "--json")
    path = db_url.removeprefix("sqlite:///")
    lock = os.open(path + WRITE_LOCK_SUFFIX, os.O_RDWR | os.O_CREAT, 0o600)
    turn = os.open(path + WRITE_TURN_SUFFIX, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)   # every writer waits for this test from now on
    child = subprocess.Popen(command(*args, url=db_url, max_recipients=2),
                             env=environment(db_url, 2), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60   # a guard against a hang, not a measurement
        while query("SELECT count(*) FROM pushes") == [(0,)]:
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the first push never came"
            _one_write_through(lock, turn)
            time.sleep(0.05)
        # The first push is in; the command waits for the lock to write its second one.
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)
        os.close(turn)
    assert child.returncode == -signal.SIGKILL
    assert query("SELECT count(*) FROM pushes") == [(1,)]
    assert query("SELECT count(*) FROM messages") == [(2,)]
    first_push = query("SELECT id FROM pushes")[0][0]

    done = send(*args, url=db_url)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["accepted"] == 10 and out["rejected"] == 0 and out["rejects_file"] is None
    assert out["push_ids"][0] == first_push and len(out["push_ids"]) == 5
    assert sorted(query("SELECT number, count(*) FROM messages GROUP BY number")) == [
        (n, 1) for n in numbers(10)]
    assert query("SELECT count(*) FROM pushes") == [(5,)]
    assert query("SELECT sum(delta_micro) FROM credit_ledger WHERE reason = 'push'") == [
        (-10 * PRICE,)]
    assert await balance(store, project.id) == parse_credits("10") - 10 * PRICE


async def test_short_of_credit_stops_then_a_rerun_goes_on(
        store: Store, make: Any, db_url: str, query: Any, tmp_path: Path) -> None:
    project, _, _ = await make.project(name="shop", credits="0.01")   # two messages' worth
    await make.channel(project.id)
    data = write_csv(tmp_path / "c.csv", 5)
    args = ("--project", "shop", "--application", "1", "--csv", str(data),
            "--message", "Hi {name}", "--json")
    short = send(*args, url=db_url)
    assert short.returncode == 2 and "add credits" in short.stderr
    out = json.loads(short.stdout)
    assert (out["accepted"], out["rejected"], len(out["push_ids"])) == (2, 3, 1)
    with (tmp_path / "c.csv.rejects.csv").open(newline="") as f:
        assert {r["code"] for r in csv.DictReader(f)} == {"420"}
    await store.add_credits(project.id, parse_credits("1"), "top-up")
    done = send(*args, url=db_url)
    assert done.returncode == 0, done.stderr
    again = json.loads(done.stdout)
    assert again["accepted"] == 5 and again["push_ids"][0] == out["push_ids"][0]
    assert again["rejects_file"] is None and not (tmp_path / "c.csv.rejects.csv").exists()
    assert sorted(query("SELECT number, count(*) FROM messages GROUP BY number")) == [
        (n, 1) for n in numbers(5)]


async def test_send_an_xlsx_workbook(store: Store, make: Any, db_url: str, query: Any,
                                     tmp_path: Path) -> None:
    import openpyxl

    project, _, _ = await make.project(name="shop", credits="10")
    await make.channel(project.id)
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in (["number", "name", "due"], [919876500001, "Ana", "2026-12-24"],
                [None, "Nobody", None], [919876500002, "Bo", 7.0]):
        sheet.append(row)
    data = tmp_path / "dues.xlsx"
    book.save(data)
    done = send("--project", "shop", "--application", "1", "--csv", str(data),
                "--message", "Hi {name}, due {due}", "--json", url=db_url)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["accepted"] == 2 and out["rejected"] == 1
    assert out["rejects_file"] == str(tmp_path / "dues.xlsx.rejects.csv")
    bodies = dict(query("SELECT number, body FROM messages WHERE project_id = ?", project.id))
    assert bodies == {"919876500001": "Hi Ana, due 2026-12-24", "919876500002": "Hi Bo, due 7"}
