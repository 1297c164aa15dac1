"""A standalone `pushgate worker` rides out a PostgreSQL outage under load.

The worker reaches the database through a TCP proxy (tests/fakes/tcp_proxy.py) that the test
cuts for a few seconds in the middle of a drain: every open connection is reset and new ones
are refused, which is what a worker sees when the server dies, without stopping the machine's
server. Afterwards the worker must still run, every message must be delivered with its webhook
reports, nothing may be sent twice beyond the messages that were out for sending at the cut
(the recorded in-flight window), and the worker's log must say once that the database went away
and once that it is back.
"""

from __future__ import annotations

import signal
import time
import urllib.parse

import httpx
import pytest

from tests.e2e.harness import Harness, WebhookReceiver, indian_mobiles, snapshot, worker_env
from tests.fakes.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only]

TOTAL = 3000
RATE = "600"          # about five seconds of draining
OUTAGE_SECONDS = 4.0
LEASE = 10.0          # longer than the outage: a kept outcome is recorded before its lease ends

OUTAGE_LINE = "database unavailable"
RECOVERY_LINE = "database available again"


def through(proxy: TcpProxy, url: str) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    auth = netloc[0] + "@" if len(netloc) == 2 else ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{auth}127.0.0.1:{proxy.port}"))


def test_worker_survives_a_database_outage_under_load(e2e: Harness,
                                                      receiver: WebhookReceiver) -> None:
    e2e.cli("migrate")
    project = e2e.cli_json("project", "create", "outage", "--credits", "100",
                           "--webhook", receiver.url)
    receiver.secret = project["webhook_secret"]
    e2e.cli_json("channel", "add", "--project", "outage", "--type", "sandbox",
                 "--application", "2", "--price", "0.001", "--rate", RATE,
                 "--config", '{"delivery_delay": 0}')
    api = e2e.serve("--api-only", name="api")
    answer = httpx.post(f"{api.base_url}/api/v2/push", timeout=60, json={
        "token": project["token"], "application": "2",
        "data": [{"number": n, "message": f"bill {i}"}
                 for i, n in enumerate(indian_mobiles(TOTAL))]}).json()
    assert answer["status"] == 100 and answer["accepted"] == TOTAL, answer["message"]
    assert api.stop() in (0, -signal.SIGTERM)

    proxy_target = urllib.parse.urlsplit(e2e.database_url).port or 5432
    with TcpProxy(proxy_target) as proxy:
        env = worker_env(e2e, "outage-1", lease=LEASE)
        env["PUSHGATE_DATABASE_URL"] = through(proxy, e2e.database_url)
        worker = e2e.start("worker", "worker", env=env)

        def delivered() -> int:
            return int(e2e.query(
                "SELECT count(*) FROM messages WHERE state = 'delivered'")[0][0])

        e2e.wait_until(lambda: delivered() >= TOTAL // 4, 60, "a quarter delivered",
                       describe=lambda: str(e2e.state_counts()))
        reset = proxy.cut()
        cut_at = time.monotonic()
        # Nothing reaches the database now: once a COMMIT that arrived just before the cut is
        # through, what is `sending` is the in-flight window.
        time.sleep(0.2)
        at_cut = snapshot(e2e)
        in_flight = at_cut.ids("sending")
        assert reset > 0 and in_flight and at_cut.ids("queued"), e2e.state_counts()
        time.sleep(OUTAGE_SECONDS)
        assert worker.alive, f"the worker died during the outage\n{e2e.logs()}"
        proxy.restore()
        outage = time.monotonic() - cut_at

        e2e.wait_until(lambda: delivered() == TOTAL, 90, "every message delivered",
                       interval=0.25, describe=lambda: str(e2e.state_counts()))
        e2e.wait_until(lambda: len(receiver.delivered_ids()) == TOTAL, 60,
                       "every delivery report", interval=0.25,
                       describe=lambda: f"{len(receiver.delivered_ids())} reports")
        assert worker.alive, e2e.logs()
        log = worker.output()
        # Stopping during an outage is still a clean stop (leases run out by themselves).
        proxy.cut()
        time.sleep(0.5)
        assert worker.stop() == 0, e2e.logs()

    # Each message went out once, except possibly those out for sending at the cut, which are
    # counted as re-sends; nothing was refunded or failed.
    rows = e2e.query("SELECT id, state, attempts, resends FROM messages ORDER BY id")
    assert len(rows) == TOTAL and {r[1] for r in rows} == {"delivered"}
    resent = {r[0] for r in rows if r[3] > 0}
    assert resent <= in_flight, f"{len(resent - in_flight)} re-sent outside the window"
    assert all(r[2] == 1 + r[3] for r in rows), "an attempt not accounted for"
    assert e2e.query("SELECT count(*) FROM messages WHERE submitted_at IS NULL")[0][0] == 0

    # The outage is logged once, the recovery once, and no traceback for a connection error.
    assert log.count(OUTAGE_LINE) == 1, log
    assert log.count(RECOVERY_LINE) == 1, log
    assert "Traceback" not in log, log
    print(f"outage {outage:.1f}s, {reset} connections reset, {len(in_flight)} in flight, "
          f"{len(resent)} re-sent")
