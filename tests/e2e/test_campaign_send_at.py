"""``pushgate send --at``: a scheduled CSV campaign, end to end. Its messages wait (status 0)
until their time, then the worker delivers them; the same command again replays, another
``--at`` is another campaign, and a wrong ``--at`` sends nothing (issue 19)."""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import Harness, indian_mobiles, pushgate_command, worker_env

pytestmark = pytest.mark.slow

COUNT = 5
# Far enough ahead that the checks before it run first, however slow the machine.
AHEAD = 10.0
INDIA = timezone(timedelta(hours=5, minutes=30))


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, INDIA).isoformat()


def test_send_at_schedules_the_campaign_and_a_rerun_replays(e2e: Harness,
                                                             tmp_path: Path) -> None:
    e2e.cli("migrate")
    project = e2e.cli_json("project", "create", "later", "--credits", "10")
    e2e.cli_json("channel", "add", "--project", "later", "--type", "sandbox",
                 "--application", "2", "--price", "0.005")
    sheet = tmp_path / "later.csv"
    sheet.write_text("number,name\n" + "".join(f"{n},n{i}\n" for i, n in
                                              enumerate(indian_mobiles(COUNT))))
    send_at = round(time.time()) + AHEAD
    args = ("send", "--project", "later", "--application", "2", "--csv", str(sheet),
            "--message", "Hi {name}", "--at", _iso(send_at))
    out = e2e.cli_json(*args)
    assert out["accepted"] == COUNT and out["rejected"] == 0 and out["rejects_file"] is None
    assert e2e.state_counts() == {"scheduled": COUNT}
    assert {row[0] for row in e2e.query("SELECT send_at FROM pushes")} == {send_at}

    api = e2e.serve("--api-only", name="api")
    token = {"token": project["token"]}
    ids = [row[0] for row in e2e.query("SELECT id FROM messages ORDER BY id")]
    report = httpx.get(f"{api.base_url}/api/v2/messages/{ids[0]}", params=token,
                       timeout=30).json()
    assert report["data"]["status"] == 0, report
    push = httpx.get(f"{api.base_url}/api/v2/pushes/{out['push_ids'][0]}", params=token,
                     timeout=30).json()
    assert push["data"]["send_at"], push

    # The same command (the time written in another offset is the same time): a replay.
    utc_spelling = datetime.fromtimestamp(send_at, UTC).isoformat()
    again = e2e.cli_json(*args[:-1], utc_spelling)
    assert again == out
    assert e2e.query("SELECT count(*) FROM messages") == [(COUNT,)]

    e2e.start("worker", "worker", env=worker_env(e2e, "campaign-at"))
    e2e.wait_until(lambda: e2e.state_counts() == {"delivered": COUNT}, 90,
                   "the scheduled campaign to be delivered",
                   interval=0.2, describe=lambda: str(e2e.state_counts()))
    claimed = [row[0] for row in e2e.query("SELECT first_claim_at FROM messages")]
    assert min(claimed) >= send_at, (claimed, send_at)
    report = httpx.get(f"{api.base_url}/api/v2/messages/{ids[0]}", params=token,
                       timeout=30).json()
    assert report["data"]["status"] != 0 and report["data"]["state"] == "delivered", report

    # After its time, the same command still replays (the key holds the time, not "now").
    assert e2e.cli_json(*args) == out
    # Another time is another campaign.
    other = e2e.cli_json(*args[:-1], _iso(send_at + 3600))
    assert other["accepted"] == COUNT and set(other["push_ids"]).isdisjoint(out["push_ids"])
    assert e2e.query("SELECT count(*) FROM messages") == [(2 * COUNT,)]


@pytest.mark.parametrize("at", ["2026-12-06T09:00", "soon", str(time.time() + 10 ** 9)])
def test_a_wrong_at_sends_nothing(e2e: Harness, tmp_path: Path, at: str) -> None:
    e2e.cli("migrate")
    e2e.cli_json("project", "create", "later", "--credits", "10")
    e2e.cli_json("channel", "add", "--project", "later", "--type", "sandbox",
                 "--application", "2", "--price", "0.005")
    sheet = tmp_path / "later.csv"
    sheet.write_text("number\n919876500001\n")
    done = subprocess.run(pushgate_command("send", "--project", "later", "--application", "2",
                                           "--csv", str(sheet), "--message", "x", "--at", at),
                          env=e2e.env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done
    assert "code 427" in done.stderr and "nothing was sent" in done.stderr, done.stderr
    assert e2e.query("SELECT count(*) FROM pushes") == [(0,)]
    assert not (tmp_path / "later.csv.rejects.csv").exists()
