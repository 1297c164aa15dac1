"""Scale-out on PostgreSQL with real processes: several workers drain one queue with nothing lost
or sent twice (also when one is killed), two API nodes share one balance without overdrawing it,
and a rate-limited channel keeps its limit however many workers run."""

from __future__ import annotations

import asyncio
import os
import signal
from decimal import Decimal

import httpx
import pytest

from tests.e2e.harness import Harness, Proc, indian_mobiles, project_balance

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only]

TOTAL = 50_000
PUSH_SIZE = 10_000
FAST_LEASES = {"PUSHGATE_MESSAGE_LEASE_SECONDS": "3", "PUSHGATE_CHANNEL_LEASE_SECONDS": "3",
               "PUSHGATE_IDLE_POLL_SECONDS": "0.05"}


def setup(harness: Harness, credits: str, rate: str = "0", price: str = "0.001") -> dict[str, str]:
    harness.cli("migrate")
    project = harness.cli_json("project", "create", "scale", "--credits", credits)
    harness.cli_json("channel", "add", "--project", "scale", "--type", "sandbox",
                     "--application", "1", "--price", price, "--rate", rate,
                     "--config", '{"delivery_delay": 0}')
    return project


def queue(harness: Harness, token: str, total: int) -> None:
    """Queue ``total`` messages through an API-only node (no dispatcher), then stop it."""
    api = harness.serve("--api-only", name="api")
    numbers = indian_mobiles(PUSH_SIZE)
    for start in range(0, total, PUSH_SIZE):
        size = min(PUSH_SIZE, total - start)
        answer = httpx.post(f"{api.base_url}/api/v2/push", timeout=120, json={
            "token": token, "application": 1,
            "data": [{"number": numbers[i], "message": f"bill {start + i}"}
                     for i in range(size)]}).json()
        assert answer["status"] == 100 and answer["accepted"] == size, answer["message"]
    assert api.stop() in (0, -signal.SIGTERM)
    assert harness.state_counts() == {"queued": total}


def start_workers(harness: Harness, count: int) -> list[Proc]:
    return [harness.start(f"worker{i}", "worker", env=harness.env(**FAST_LEASES))
            for i in range(count)]


def wait_all_delivered(harness: Harness, total: int, timeout: float = 180.0) -> None:
    harness.wait_until(lambda: harness.state_counts() == {"delivered": total}, timeout,
                       f"all {total} messages delivered", interval=0.25,
                       describe=lambda: str(harness.state_counts()))


def senders(harness: Harness) -> set[str]:
    """The worker ids that claimed messages: a first claim is in the message's columns, a
    later one a sending event ("worker <id>, attempt n")."""
    rows = harness.query(
        "SELECT first_claim_by FROM messages WHERE first_claim_by IS NOT NULL"
        " UNION SELECT substr(split_part(detail, ',', 1), 8) FROM message_events"
        " WHERE state = 'sending'")
    return {r[0] for r in rows}


def submitted_once(harness: Harness) -> list[tuple[int, int]]:
    """(messages submitted, submissions recorded): a clean submission is the message's
    ``submitted_at``, one with a problem an event row; either way, once per message."""
    return harness.query(
        "SELECT count(*), count(*) + (SELECT count(*) FROM message_events"
        " WHERE state = 'submitted') FROM messages WHERE submitted_at IS NOT NULL")


def test_three_workers_drain_50k_with_nothing_lost_or_doubled(e2e: Harness) -> None:
    project = setup(e2e, credits="1000")
    queue(e2e, project["token"], TOTAL)
    start_workers(e2e, 3)
    wait_all_delivered(e2e, TOTAL)
    assert submitted_once(e2e) == [(TOTAL, TOTAL)]
    assert e2e.query("SELECT count(*) FROM messages WHERE resends > 0 OR attempts <> 1") == [(0,)]
    assert len(senders(e2e)) >= 2, "the work was not shared between workers"
    assert project_balance(e2e, "scale") == Decimal("1000") - TOTAL * Decimal("0.001")


def test_a_worker_killed_midway_loses_nothing(e2e: Harness) -> None:
    project = setup(e2e, credits="1000")
    queue(e2e, project["token"], TOTAL)
    workers = start_workers(e2e, 3)
    victim = workers[0]

    def held_by_victim() -> set[int]:
        return {r[0] for r in e2e.query(
            "SELECT id FROM messages WHERE state = 'sending' AND leased_by LIKE ?",
            f"%:{victim.pid}:%")}

    held: set[int] = set()

    def victim_frozen_mid_batch() -> bool:
        """Freeze the victim (SIGSTOP) while it holds a claimed batch, mid-drain; a frozen
        process cannot record its batch between our look and the kill."""
        nonlocal held
        done = e2e.query("SELECT count(*) FROM messages WHERE state = 'delivered'")[0][0]
        if not TOTAL * 0.05 < done < TOTAL * 0.8:
            return False
        os.kill(victim.pid, signal.SIGSTOP)
        held = held_by_victim()
        if held:
            return True
        os.kill(victim.pid, signal.SIGCONT)
        return False

    e2e.wait_until(victim_frozen_mid_batch, 60, "the victim worker to hold a batch mid-drain",
                   interval=0.01, describe=lambda: str(e2e.state_counts()))
    os.kill(victim.pid, signal.SIGKILL)
    victim.popen.wait(10)
    assert held_by_victim() == held
    wait_all_delivered(e2e, TOTAL)
    resent = {r[0] for r in e2e.query("SELECT id FROM messages WHERE resends > 0")}
    # Only what the dead worker held is sent again, and every such re-send is on record.
    assert resent == held
    flagged = {r[0] for r in e2e.query(
        "SELECT DISTINCT message_id FROM message_events WHERE detail LIKE '%possible re-send%'")}
    assert flagged == resent
    assert submitted_once(e2e) == [(TOTAL, TOTAL)]
    assert project_balance(e2e, "scale") == Decimal("1000") - TOTAL * Decimal("0.001")


def test_two_api_nodes_never_overdraw_one_balance(e2e: Harness) -> None:
    # Each push: 100 recipients × 0.01 = 1 credit; the balance covers 30 of the 60 pushes.
    project = setup(e2e, credits="30.5", price="0.01")
    nodes = [e2e.serve("--api-only", name=f"api{i}",
                       env=e2e.env(PUSHGATE_PUSH_RATE_PER_MINUTE="0")) for i in range(2)]
    numbers = indian_mobiles(100)

    async def push_all() -> list[dict[str, object]]:
        async with httpx.AsyncClient(timeout=60) as client:
            async def one(i: int) -> dict[str, object]:
                node = nodes[i % 2]
                response = await client.post(f"{node.base_url}/api/v2/push", json={
                    "token": project["token"], "application": 1,
                    "data": [{"number": n, "message": f"push {i}"} for n in numbers]})
                return response.json()

            return await asyncio.gather(*(one(i) for i in range(60)))

    answers = asyncio.run(push_all())
    accepted = [a for a in answers if a["status"] == 100]
    refused = [a for a in answers if a["status"] != 100]
    assert len(accepted) == 30
    assert {a["status"] for a in refused} == {420}
    assert project_balance(e2e, "scale") == Decimal("0.5")
    assert e2e.query("SELECT count(*) FROM messages") == [(30 * 100,)]
    assert e2e.query("SELECT count(*) FROM pushes") == [(30,)]


def test_rate_limit_holds_across_three_workers(e2e: Harness) -> None:
    rate, total = 50, 300
    project = setup(e2e, credits="100", rate=str(rate))
    queue(e2e, project["token"], total)
    start_workers(e2e, 3)
    wait_all_delivered(e2e, total, timeout=60)
    # Sends are recorded as `submitted` right after each paced batch (one second's worth), so
    # these times trail the real sends by at most a batch.
    times = sorted(r[0] for r in e2e.query(
        "SELECT submitted_at FROM messages WHERE submitted_at IS NOT NULL"))
    assert len(times) == total
    assert len(senders(e2e)) == 1, "a paced channel must have one sender"
    # A token bucket of one second's burst: any window of W seconds holds at most
    # rate × (W + 1) sends (+ one batch of recording lag). Two senders would put about
    # 2 × rate × W in a long window, and finish in half the time.
    window = 3.0
    for i, start in enumerate(times):
        in_window = sum(1 for t in times[i:] if t < start + window)
        assert in_window <= rate * (window + 2), (start, in_window)
    assert times[-1] - times[0] >= (total - rate) / rate * 0.9


def test_an_api_node_killed_mid_push_leaves_whole_pushes_or_nothing(e2e: Harness) -> None:
    project = setup(e2e, credits="1000")
    api = e2e.serve("--api-only", name="api", env=e2e.env(PUSHGATE_PUSH_RATE_PER_MINUTE="0"))
    numbers = indian_mobiles(PUSH_SIZE)

    async def push_until_killed() -> int:
        answered = 0
        async with httpx.AsyncClient(timeout=60) as client:
            async def one(i: int) -> None:
                nonlocal answered
                try:
                    response = await client.post(f"{api.base_url}/api/v2/push", json={
                        "token": project["token"], "application": 1,
                        "data": [{"number": n, "message": f"push {i}"} for n in numbers]})
                    answered += response.json()["status"] == 100
                except httpx.HTTPError:
                    pass   # the node died under this request

            async def kill_when_busy() -> None:
                # Some pushes committed, others certainly in flight.
                while not e2e.query("SELECT count(*) FROM pushes")[0][0]:
                    await asyncio.sleep(0.01)
                os.kill(api.pid, signal.SIGKILL)

            await asyncio.gather(kill_when_busy(), *(one(i) for i in range(12)))
        return answered

    answered = asyncio.run(push_until_killed())
    api.popen.wait(10)
    pushes = e2e.query("SELECT id, accepted, credit_micro FROM pushes ORDER BY id")
    assert 1 <= len(pushes) < 12, "the kill did not land mid-stream"
    assert answered <= len(pushes)
    for push_id, accepted, _credit in pushes:
        assert e2e.query("SELECT count(*) FROM messages WHERE push_id = ?", push_id) == [
            (accepted,)], f"push {push_id} is partly stored"
    assert e2e.query("SELECT count(*) FROM messages") == [(sum(p[1] for p in pushes),)]
    charged = sum(p[2] for p in pushes)
    assert project_balance(e2e, "scale") == Decimal("1000") - Decimal(charged) / 1_000_000
