"""What an operator sees of `serve` and `worker`: JSON log lines (uvicorn's access log
included) with a ready line, and `serve --workers N`: N processes answering on one port, one
dispatcher among them, stopped together."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import Harness, Proc, free_port, indian_mobiles

pytestmark = pytest.mark.slow

JSON_KEYS = {"time", "level", "logger", "message"}


def json_lines(proc: Proc) -> list[dict[str, object]]:
    """Every line the process wrote (stdout and stderr), each parsed as JSON."""
    lines = []
    for line in proc.output().splitlines():
        parsed = json.loads(line)   # a line that is not JSON fails the test here
        assert isinstance(parsed, dict) and parsed.keys() >= JSON_KEYS, line
        lines.append(parsed)
    return lines


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The name (field 2) is in parentheses and may hold spaces: the parent pid follows it.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_json_logs_parse_with_the_ready_and_access_lines(e2e: Harness) -> None:
    e2e.cli("migrate")
    env = e2e.env(PUSHGATE_LOG_FORMAT="json", PUSHGATE_ACCESS_LOG="true")
    server = e2e.serve(env=env)
    assert httpx.get(f"{server.base_url}/healthz", timeout=5).status_code == 200
    worker = e2e.start("worker", "worker", env=env)
    e2e.wait_until(lambda: '"worker ' in worker.output(), 30, "the worker's ready line")
    # uvicorn re-raises the signal after its graceful shutdown: -SIGTERM is a clean stop.
    assert server.stop() in (0, -signal.SIGTERM) and worker.stop() == 0

    lines = json_lines(server)
    messages = [str(line["message"]) for line in lines]
    assert any(m.startswith(f"listening on {server.base_url} (pid {server.pid}, dispatcher")
               for m in messages), messages
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert any(line["path"] == "/healthz" and line["status"] == 200 for line in access), access
    assert all(str(line["time"]).endswith("+00:00") for line in lines)
    assert "Traceback" not in server.output()
    ready = [line for line in json_lines(worker) if "ready" in str(line["message"])]
    assert len(ready) == 1 and " store " in str(ready[0]["message"]), ready
    assert "@" not in str(ready[0]["message"])   # no user or password of the database URL


def test_workers_share_one_port_dispatch_once_and_stop_together(e2e: Harness) -> None:
    e2e.cli("migrate")
    project = e2e.cli_json("project", "create", "shop", "--credits", "10")
    e2e.cli_json("channel", "add", "--project", "shop", "--type", "sandbox", "--application",
                 "1", "--config", '{"delivery_delay": 0}')
    server = e2e.serve("--workers", "2", env=e2e.env(PUSHGATE_IDLE_POLL_SECONDS="0.05"))
    assert server.base_url is not None
    e2e.wait_until(lambda: len(children_of(server.pid)) == 2, 10, "two child processes")
    children = children_of(server.pid)

    seen: dict[int, bool] = {}

    def both_answered() -> bool:
        # A fresh connection each time, so the kernel may pick either process.
        health = httpx.get(f"{server.base_url}/healthz", timeout=5).json()
        seen[health["pid"]] = health["dispatcher"]
        return len(seen) == 2

    e2e.wait_until(both_answered, 30, "both processes to answer on the port",
                   describe=lambda: f"seen {seen}")
    assert set(seen) == children and sorted(seen.values()) == [False, True]

    answer = httpx.post(f"{server.base_url}/api/v2/push", timeout=30, json={
        "token": project["token"], "application": 1,
        "data": [{"number": indian_mobiles(1)[0], "message": "once"}]}).json()
    assert answer["status"] == 100 and answer["accepted"] == 1, answer
    e2e.wait_until(lambda: e2e.state_counts() == {"delivered": 1}, 30, "the message delivered",
                   describe=lambda: str(e2e.state_counts()))
    # Sent once, by the one dispatcher: claimed once, never handed out again.
    assert e2e.query("SELECT attempts, resends FROM messages") == [(1, 0)]
    assert e2e.query("SELECT count(*) FROM message_events WHERE state = 'delivered'") in (
        [(0,)], [(1,)])
    assert e2e.query("SELECT count(*) FROM workers") == [(1,)]

    # Either process's /metrics shows the dispatcher's counters (multiprocess mode); the
    # answering process's per-push counts reach the shared files within a second.
    channel = str(e2e.query("SELECT id FROM channels")[0][0])
    scraped: dict[int, dict[str, float]] = {}

    def both_scraped() -> bool:
        response = httpx.get(f"{server.base_url}/metrics", timeout=5)
        samples = {s.name + str(sorted(s.labels.items())): s.value
                   for family in text_string_to_metric_families(response.text)
                   for s in family.samples}
        scraped[int(response.headers["x-pushgate-pid"])] = {
            "sent": samples.get("pushgate_messages_sent_total" + str([("channel", channel)]),
                                0.0),
            "delivered": samples.get("pushgate_messages_final_total" + str(
                [("channel", channel), ("status", "delivered")]), 0.0),
            "accepted": samples.get("pushgate_messages_accepted_total[]", 0.0)}
        return set(scraped) == children and all(
            v == {"sent": 1, "delivered": 1, "accepted": 1} for v in scraped.values())

    e2e.wait_until(both_scraped, 30, "/metrics from both processes showing the push",
                   describe=lambda: f"scraped {scraped}")

    assert server.stop() == 0
    assert not any(alive(pid) for pid in children)


def test_a_child_exiting_stops_the_others(e2e: Harness) -> None:
    e2e.cli("migrate")
    server = e2e.serve("--workers", "2")
    e2e.wait_until(lambda: len(children_of(server.pid)) == 2, 10, "two child processes")
    first, second = sorted(children_of(server.pid))
    os.kill(second, signal.SIGKILL)
    assert server.wait(30) == 1
    assert f"API process {second} exited with code -9; stopping" in server.output()
    e2e.wait_until(lambda: not alive(first), 10, "the other child to stop")


def test_children_stop_when_the_parent_is_killed(e2e: Harness) -> None:
    """SIGKILL leaves the parent no chance to stop them: Linux tells them (PR_SET_PDEATHSIG),
    so no orphan keeps serving the port."""
    e2e.cli("migrate")
    server = e2e.serve("--workers", "2")
    e2e.wait_until(lambda: len(children_of(server.pid)) == 2, 10, "two child processes")
    children = children_of(server.pid)
    server.send(signal.SIGKILL)
    assert server.wait(10) == -signal.SIGKILL
    e2e.wait_until(lambda: not any(alive(pid) for pid in children), 20,
                   "the children to stop after their parent died")


def test_a_worker_serves_its_counters_on_its_metrics_port(e2e: Harness) -> None:
    e2e.cli("migrate")
    port = free_port()
    worker = e2e.start("worker", "worker", "--metrics-port", str(port),
                       env=e2e.env(PUSHGATE_HOST="127.0.0.1"))
    e2e.wait_until(lambda: "ready" in worker.output(), 30, "the worker's ready line")
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"pushgate_messages_sent", "pushgate_messages_final",
            "pushgate_webhook_deliveries"} <= names
    assert worker.stop() == 0
