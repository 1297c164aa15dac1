"""Several `pushgate serve --reuse-port` processes on one port: the kernel spreads connections
among them, and together they lose, double and overdraw nothing (on SQLite their writers take
turns on the store's lock file)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import pytest

from tests.e2e.harness import Harness, free_port, indian_mobiles, project_balance

pytestmark = pytest.mark.slow

PUSHES, PER_PUSH = 60, 50
PRICE = Decimal("0.01")


def push(base_url: str, token: str, n: int) -> list[str]:
    # A fresh connection per push, so the kernel picks a process each time.
    answer = httpx.post(f"{base_url}/api/v2/push", timeout=60, json={
        "token": token, "application": 1,
        "data": [{"number": number, "message": f"reminder {n}.{i}"}
                 for i, number in enumerate(indian_mobiles(PER_PUSH, n * PER_PUSH))]}).json()
    assert answer["status"] == 100 and answer["accepted"] == PER_PUSH, answer
    return [item["msg_id"] for item in answer["data"]]


def test_api_processes_share_a_port_and_lose_or_double_nothing(e2e: Harness) -> None:
    e2e.cli("migrate")
    project = e2e.cli_json("project", "create", "shop", "--credits", "100")
    e2e.cli_json("channel", "add", "--project", "shop", "--type", "sandbox", "--application",
                 "1", "--price", str(PRICE), "--config", '{"delivery_delay": 0}')
    port = free_port()
    fast = e2e.env(PUSHGATE_IDLE_POLL_SECONDS="0.05", PUSHGATE_PUSH_RATE_PER_MINUTE="0")
    full = e2e.serve("--reuse-port", port=port, name="full", env=fast)
    e2e.serve("--reuse-port", "--api-only", port=port, name="api", env=fast)
    assert full.base_url is not None

    # Both processes answer on the port: the one with the dispatcher and the API-only one
    # (which may still be starting: its health check may have been answered by the other).
    seen: set[bool] = set()

    def both_answered() -> bool:
        seen.add(httpx.get(f"{full.base_url}/healthz", timeout=5).json()["dispatcher"])
        return seen == {True, False}

    e2e.wait_until(both_answered, 30, "both processes to answer on the shared port",
                   describe=lambda: f"seen dispatcher={seen}")

    with ThreadPoolExecutor(8) as pool:
        answered = list(pool.map(lambda n: push(full.base_url, project["token"], n),
                                 range(PUSHES)))
    ids = [mid for batch in answered for mid in batch]
    total = PUSHES * PER_PUSH
    assert len(set(ids)) == total
    e2e.wait_until(lambda: e2e.state_counts() == {"delivered": total}, 60,
                   f"all {total} messages delivered",
                   describe=lambda: str(e2e.state_counts()))
    assert e2e.query("SELECT count(*), count(DISTINCT number) FROM messages") == [(total, total)]
    assert project_balance(e2e, "shop") == Decimal("100") - total * PRICE
