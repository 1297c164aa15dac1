"""A channel created while the gateway runs is served at its first push, not at the next lease
renewal (which here is 100 s away: without the wake-up this test would time out)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest


async def test_push_to_a_channel_created_after_start_is_sent(app_client: Any, make: Any) -> None:
    client, gateway = await app_client(run_workers=True, channel_lease_seconds=300.0,
                                       idle_poll_seconds=0.05)
    project, token, _ = await make.project(credits="10")
    await asyncio.sleep(0.1)   # the dispatcher's first refresh has happened without the channel
    await make.channel(project.id, application=1, config={"delivery_delay": 0})
    answer = await client.post("/api/v2/push", json={
        "token": token, "application": 1,
        "data": [{"number": "919876543210", "message": "hello"}]})
    assert answer.json()["status"] == 100
    push_id = answer.json()["push_id"]
    deadline = time.monotonic() + 20
    while True:
        push = await gateway.store.get_push(project.id, int(push_id))
        if push.counts == {"delivered": 1}:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"not delivered within 20 s: {push['counts']}")
        await asyncio.sleep(0.05)
