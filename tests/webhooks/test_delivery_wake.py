"""What the deliverer looks at when it wakes: after ``DeliveryWake.reports()`` (outcomes or
status updates recorded) the outbox alone; after ``set()``, after its idle poll runs out and
after a step that found work, everything (outbox, inbound messages, number check answers,
opt-out events)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tests.fakes.server import serve_app
from tests.store.contract.test_store_outbox import queue, send

from pushgate.store.base import Store
from pushgate.webhooks.deliverer import DeliveryWake, WebhookDeliverer

DEADLINE = 10.0
CLAIMS = ("claim_outbox", "claim_inbound", "claim_check_reports", "claim_optout_events")


def count_claims(store: Store, monkeypatch: pytest.MonkeyPatch) -> collections.Counter[str]:
    """How often each of the deliverer's claims is called, by name."""
    calls: collections.Counter[str] = collections.Counter()
    for name in CLAIMS:
        original = getattr(store, name)

        async def counted(*args: Any, _name: str = name, _original: Any = original,
                          **kwargs: Any) -> Any:
            calls[_name] += 1
            return await _original(*args, **kwargs)

        monkeypatch.setattr(store, name, counted)
    return calls


async def until(check: Any, what: str) -> None:
    end = time.monotonic() + DEADLINE
    while not check():
        if time.monotonic() > end:
            pytest.fail(f"gave up after {DEADLINE}s waiting for {what}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(store: Store, wake: DeliveryWake, idle_poll: float = 600,
                  **options: Any) -> AsyncIterator[WebhookDeliverer]:
    """A deliverer's loop in a task for the block, stopped after it. Its idle poll is far
    beyond the test unless given: only wake-ups make it look."""
    deliverer = WebhookDeliverer(store, "w", timeout=5, schedule=[0.0], idle_poll=idle_poll,
                                 wake=wake, **options)
    run = asyncio.create_task(deliverer.run())
    try:
        yield deliverer
    finally:
        deliverer.stop()
        await asyncio.wait_for(run, DEADLINE)


async def after_the_first_look(calls: collections.Counter[str]) -> dict[str, int]:
    """At its start the deliverer looks everywhere once, finds nothing and waits."""
    await until(lambda: calls["claim_optout_events"] == 1, "the first look")
    return await settled(calls)


async def settled(calls: collections.Counter[str]) -> dict[str, int]:
    """The counts once the deliverer has gone idle (no claim for a while)."""
    before: dict[str, int] = {}
    while before != dict(calls):
        before = dict(calls)
        await asyncio.sleep(0.1)
    return before


async def test_a_reports_wake_looks_at_the_outbox_alone(
    store: Store, make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    posted: list[bytes] = []

    async def hook(request: Request) -> Response:
        posted.append(await request.body())
        return Response("")

    calls = count_claims(store, monkeypatch)
    wake = DeliveryWake()
    with serve_app(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as url:
        project, _, _ = await make.project(webhook_url=f"{url}/hook")
        channel = await make.channel(project.id)
        async with running(store, wake, allow_private=True):
            assert await after_the_first_look(calls) == {name: 1 for name in CLAIMS}

            wake.reports()
            await until(lambda: calls["claim_outbox"] == 2, "the outbox look")
            assert await settled(calls) == {"claim_outbox": 2, "claim_inbound": 1,
                                            "claim_check_reports": 1,
                                            "claim_optout_events": 1}

            wake.set()
            await until(lambda: calls["claim_optout_events"] == 2, "the look everywhere")
            assert await settled(calls) == {"claim_outbox": 3, "claim_inbound": 2,
                                            "claim_check_reports": 2,
                                            "claim_optout_events": 2}

            # Reports to post: the outbox look finds and posts them, and the step after
            # one that found work looks everywhere again.
            now = time.time()
            await queue(store, channel, 2, now)
            await send(store, channel, now)
            wake.reports()
            await until(lambda: len(posted) == 1, "the reports' POST")
            assert await settled(calls) == {"claim_outbox": 5, "claim_inbound": 3,
                                            "claim_check_reports": 3,
                                            "claim_optout_events": 3}


async def test_a_wake_for_anything_is_not_narrowed_by_a_reports_wake_after_it(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An inbound message's ``set()`` followed by an outcome write's ``reports()`` before
    the deliverer looks: it looks everywhere."""
    calls = count_claims(store, monkeypatch)
    wake = DeliveryWake()
    async with running(store, wake):
        await after_the_first_look(calls)
        wake.set()
        wake.reports()
        await until(lambda: calls["claim_optout_events"] == 2, "the look everywhere")
        assert await settled(calls) == {name: 2 for name in CLAIMS}


async def test_the_idle_poll_looks_everywhere(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_claims(store, monkeypatch)
    async with running(store, DeliveryWake(), idle_poll=0.02):
        await until(lambda: calls["claim_optout_events"] >= 3, "three polls")
    assert len(set(dict(calls).values())) == 1, calls   # every claim as often as the others


async def test_the_step_after_a_failed_one_looks_everywhere(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``set()`` consumed by a step that failed is not lost: the step after the back-off
    looks everywhere, not at the outbox alone."""
    calls = count_claims(store, monkeypatch)
    counted_outbox = store.claim_outbox
    failures = [RuntimeError("a bug, once")]

    async def failing_once(*args: Any, **kwargs: Any) -> Any:
        if failures:
            calls["claim_outbox"] += 1
            raise failures.pop()
        return await counted_outbox(*args, **kwargs)

    wake = DeliveryWake()
    async with running(store, wake):
        await after_the_first_look(calls)
        monkeypatch.setattr(store, "claim_outbox", failing_once)
        wake.set()
        await until(lambda: calls["claim_optout_events"] == 2, "the look after the failure")
        assert await settled(calls) == {"claim_outbox": 3, "claim_inbound": 2,
                                        "claim_check_reports": 2,
                                        "claim_optout_events": 2}


async def test_a_wake_during_a_step_makes_it_look_again_at_once(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row committed after the step's claim read it (here: its ``set()`` while the first
    look runs) is not left for the idle poll: the deliverer looks again without waiting."""
    calls = count_claims(store, monkeypatch)
    counted_outbox = store.claim_outbox
    wake = DeliveryWake()

    async def woken_meanwhile(*args: Any, **kwargs: Any) -> Any:
        claimed = await counted_outbox(*args, **kwargs)
        if calls["claim_outbox"] == 1:
            wake.set()
        return claimed

    monkeypatch.setattr(store, "claim_outbox", woken_meanwhile)
    async with running(store, wake):
        await until(lambda: calls["claim_optout_events"] == 2, "the second look")
        assert await settled(calls) == {name: 2 for name in CLAIMS}
