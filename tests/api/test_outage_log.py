"""A database outage seen only by requests (an `--api-only` process) is logged once when it
starts and once when it ends, however many requests it refuses."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from pushgate.core.errors import Code
from pushgate.store import outage as outage_module
from pushgate.store.errors import StoreUnavailable

DEADLINE = 10.0


def _count(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in record.getMessage() for record in caplog.records)


async def test_refused_requests_log_one_outage_and_one_recovery(
        app_client: Any, make: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(outage_module, "WATCH_EVERY_SECONDS", 0.02)
    client, gateway = await app_client(lookup_cache_seconds=0)
    _project, token, _ = await make.project()
    store = gateway.store
    real_ping = store.ping
    down = True

    async def away(*_args: Any, **_kwargs: Any) -> Any:
        raise StoreUnavailable("PostgreSQL: connection refused")

    async def ping() -> None:
        if down:
            await away()
        await real_ping()

    monkeypatch.setattr(store, "authenticate", away)
    monkeypatch.setattr(store, "ping", ping)
    body = {"token": token, "application": "1", "globalmessage": "hi",
            "data": [{"number": "919876543210"}]}
    for _ in range(5):
        answer = await client.post("/api/v2/push", json=body)
        assert answer.json()["status"] == int(Code.UNAVAILABLE)
    await asyncio.sleep(0.1)   # the watcher tries (and fails) meanwhile
    assert _count(caplog, "database unavailable") == 1
    assert _count(caplog, "database available again") == 0
    assert _count(caplog, "store unavailable") == 0   # no line per request

    down = False
    async with asyncio.timeout(DEADLINE):
        while _count(caplog, "database available again") == 0:
            await asyncio.sleep(0.02)
    assert _count(caplog, "database unavailable") == 1
    assert _count(caplog, "database available again") == 1
