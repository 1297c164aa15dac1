"""A scheduled push survives restarts: accepted while a worker runs, both processes stopped
before its send_at, a new worker sends it once its time has come, never before."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from tests.e2e.harness import Harness, indian_mobiles, worker_env

pytestmark = pytest.mark.slow

COUNT = 20
# Far enough ahead that the processes are stopped before it, however slow the machine.
AHEAD = 8.0


def test_a_scheduled_push_is_sent_after_a_restart(e2e: Harness) -> None:
    e2e.cli("migrate")
    project = e2e.cli_json("project", "create", "later", "--credits", "10")
    e2e.cli_json("channel", "add", "--project", "later", "--type", "sandbox",
                 "--application", "2", "--price", "0.005")
    api = e2e.serve("--api-only", name="api")
    first = e2e.start("worker-1", "worker", env=worker_env(e2e, "schedule-1"))
    e2e.wait_until(lambda: "worker schedule-1 ready" in first.output(), 60,
                   "worker-1 to be ready")
    send_at = time.time() + AHEAD
    response = httpx.post(f"{api.base_url}/api/v2/push", timeout=60, json={
        "token": project["token"], "application": "2", "send_at": send_at,
        "data": [{"number": n, "message": f"later {i}"}
                 for i, n in enumerate(indian_mobiles(COUNT))]})
    body = response.json()
    assert body["status"] == 100 and body["accepted"] == COUNT, body

    first.send(signal.SIGTERM)
    assert first.wait(20) == 0, e2e.logs()
    assert api.stop() in (0, -signal.SIGTERM), e2e.logs()
    assert e2e.state_counts() == {"scheduled": COUNT}
    assert e2e.query("SELECT send_at, schedule_due FROM pushes WHERE id = ?",
                     int(body["push_id"])) == [(send_at, send_at)]

    e2e.start("worker-2", "worker", env=worker_env(e2e, "schedule-2"))
    e2e.wait_until(
        lambda: e2e.state_counts() == {"delivered": COUNT}, 90,
        "every scheduled message to be delivered by the new worker",
        interval=0.2, describe=lambda: str(e2e.state_counts()))
    claimed = [row[0] for row in e2e.query("SELECT first_claim_at FROM messages")]
    assert min(claimed) >= send_at, (claimed, send_at)
    assert e2e.query("SELECT schedule_due FROM pushes") == [(None,)]
