"""``/metrics`` shows the pipeline: a sandbox push moves the sent and final counters by its
size, the queue depth shows queued messages by priority, and webhook POSTs are counted by
their result."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tests.fakes.server import serve_app

NUMBERS = ["919876543210", "919876543211", "919876543212"]


async def scrape(client: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``, by (name, sorted labels)."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def push(client: Any, token: str, priority: int = 0, numbers: list[str] = NUMBERS) -> None:
    response = await client.post("/api/v2/push", json={
        "token": token, "application": "1", "globalmessage": "hello", "priority": priority,
        "data": [{"number": n} for n in numbers]})
    assert response.json()["status"] == 100, response.json()


async def wait_for(check: Any, what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


async def test_a_sandbox_push_moves_sent_and_delivered_by_its_size(app_client, make) -> None:
    posts: list[bytes] = []

    async def hook(request: Request) -> Response:
        posts.append(await request.body())
        return Response("ok")

    with serve_app(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as url:
        project, token, _ = await make.project(credits="10", webhook_url=f"{url}/hook")
        channel = await make.channel(project.id, application=1)
        client, _gateway = await app_client(run_workers=True, idle_poll_seconds=0.05)
        ch = str(channel.id)
        before = await scrape(client)
        await push(client, token)

        async def delivered() -> dict[Any, float] | None:
            now = await scrape(client)
            moved = (value(now, "pushgate_messages_final_total", channel=ch, status="delivered")
                     - value(before, "pushgate_messages_final_total", channel=ch,
                             status="delivered"))
            return now if moved >= 3 else None

        after = await wait_for(delivered, "three messages delivered")
        await wait_for(lambda: asyncio.sleep(0, result=len(posts) > 0), "a webhook POST")
        final = await scrape(client)

    sent = "pushgate_messages_sent_total"
    assert value(after, sent, channel=ch) - value(before, sent, channel=ch) == 3
    assert value(after, "pushgate_messages_final_total", channel=ch, status="delivered") - value(
        before, "pushgate_messages_final_total", channel=ch, status="delivered") == 3
    for status in ("failed", "refunded", "expired"):
        assert value(after, "pushgate_messages_final_total", channel=ch, status=status) == value(
            before, "pushgate_messages_final_total", channel=ch, status=status)
    # Three sends observed in the channel's latency histogram.
    count = "pushgate_send_seconds_count"
    assert value(after, count, channel=ch) - value(before, count, channel=ch) == 3
    deliveries = "pushgate_webhook_deliveries_total"
    assert value(final, deliveries, result="delivered") - value(
        before, deliveries, result="delivered") >= 1
    assert value(final, "pushgate_channel_up", channel=ch) == 1


async def test_queue_depth_shows_queued_messages_by_priority(app_client, make) -> None:
    project, token, _ = await make.project(credits="10")
    channel = await make.channel(project.id, application=1)
    client, _gateway = await app_client()   # no dispatcher: the messages stay queued
    await push(client, token, priority=0)
    await push(client, token, priority=1, numbers=NUMBERS[:2])
    samples = await scrape(client)
    ch = str(channel.id)
    assert value(samples, "pushgate_queue_depth", channel=ch, priority="0") == 3
    assert value(samples, "pushgate_queue_depth", channel=ch, priority="1") == 2
    assert value(samples, "pushgate_webhook_backlog") == 0


async def test_queue_depth_is_a_snapshot_refreshed_every_few_seconds(
        app_client, make, monkeypatch: pytest.MonkeyPatch) -> None:
    project, token, _ = await make.project(credits="10")
    channel = await make.channel(project.id, application=1)
    client, gateway = await app_client()
    reads = 0
    real = gateway.store.queue_depths

    async def counted() -> dict[tuple[int, int], int]:
        nonlocal reads
        reads += 1
        return await real()

    monkeypatch.setattr(gateway.store, "queue_depths", counted)
    await push(client, token)
    for _ in range(5):
        samples = await scrape(client)
    assert reads == 1   # five scrapes, one read of the store
    assert value(samples, "pushgate_queue_depth", channel=str(channel.id), priority="0") == 3
