"""A wake-up that arrives while a channel runner is in the middle of a step is not lost.

With a long idle poll (workers that rely on NOTIFY instead of polling), a lost wake-up would
leave queued messages waiting for the poll, and a stop waiting for it too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from pushgate.core.push import PushPlan
from pushgate.dispatch.worker import Dispatcher
from pushgate.store.base import Store

DEADLINE = 10.0
IDLE_POLL = 120.0   # far beyond DEADLINE: only a wake-up can make the runner act in time


def _plan(count: int) -> PushPlan:
    rows = [(i, f"9198765{i:05d}", f"message {i}", None, None, None, 1, 1, 1_000)
            for i in range(count)]
    return PushPlan(priority=0, accepted=rows, refused=[], credit_total=1_000 * count,
                    inline_media=None, total_entries=count)


async def _until(check: Callable[[], Awaitable[bool] | bool], what: str) -> None:
    end = time.monotonic() + DEADLINE
    while True:
        result = check()
        if await result if isinstance(result, Awaitable) else result:
            return
        if time.monotonic() > end:
            pytest.fail(f"gave up after {DEADLINE}s waiting for {what}")
        await asyncio.sleep(0.02)


class _HookedClaims:
    """Runs ``during`` inside the first empty claim of the channel, as if a push's wake-up (or
    a stop) landed while the runner was still working."""

    def __init__(self, store: Store, during: Callable[[], Awaitable[None]]) -> None:
        self.store = store
        self.during = during
        self.fired = False
        self.original = store.claim_messages

    async def claim_messages(self, *args: Any, **kwargs: Any) -> Any:
        claimed = await self.original(*args, **kwargs)
        if not claimed and not self.fired:
            self.fired = True
            await self.during()
        return claimed


async def test_a_wake_up_during_a_step_is_not_lost(store: Store, make: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    project, _token, _secret = await make.project()
    channel = await make.channel(project.id)
    dispatcher = Dispatcher(store, worker_id="w", idle_poll=IDLE_POLL)
    pushed: list[int] = []

    async def push_and_wake() -> None:
        result = await store.accept_push(project.id, channel, _plan(3), time.time(), None)
        pushed.extend(result.message_ids)
        dispatcher.wake(channel.id)

    hooked = _HookedClaims(store, push_and_wake)
    monkeypatch.setattr(store, "claim_messages", hooked.claim_messages)
    run = asyncio.create_task(dispatcher.run())
    try:
        await _until(lambda: hooked.fired, "the first, empty claim")

        async def all_submitted() -> bool:
            for mid in pushed:
                message = await store.get_message(project.id, mid)
                if message is None or message.state in ("queued", "sending"):
                    return False
            return True

        await _until(all_submitted, "the messages queued during the empty claim to be sent")
    finally:
        dispatcher.stop()
        await asyncio.wait_for(run, DEADLINE)


async def test_a_stop_during_a_step_ends_the_runner_at_once(
    store: Store, make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, _token, _secret = await make.project()
    channel = await make.channel(project.id)
    dispatcher = Dispatcher(store, worker_id="w", idle_poll=IDLE_POLL)
    stopping = asyncio.Event()

    async def stop_meanwhile() -> None:
        runner = dispatcher.runners[channel.id][0]
        dispatcher.stop()
        # The dispatcher now stops its runner (sets its wake-up) while this step runs.
        await _until(lambda: runner.stopping, "the runner to be told to stop")
        stopping.set()

    hooked = _HookedClaims(store, stop_meanwhile)
    monkeypatch.setattr(store, "claim_messages", hooked.claim_messages)
    run = asyncio.create_task(dispatcher.run())
    await asyncio.wait_for(run, DEADLINE)
    assert stopping.is_set()
    assert await store.acquire_channel_leases("other", time.time(), 15) != []
