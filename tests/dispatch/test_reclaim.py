"""A runner looks for expired leases (messages a dead worker left ``sending``) on its first
claim and then at most once every ``RECLAIM_EVERY_SECONDS``, except after a batch filled
with re-claims, when more may be waiting."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from pushgate.core.push import PushPlan
from pushgate.dispatch import runner as runner_module
from pushgate.dispatch.worker import Dispatcher
from pushgate.store.base import Store

DEADLINE = 10.0


def _plan(count: int, first: int = 0) -> PushPlan:
    rows = [(i, f"9198765{first + i:05d}", f"message {first + i}", None, None, None, 1, 1,
             1_000) for i in range(count)]
    return PushPlan(priority=0, accepted=rows, refused=[], credit_total=1_000 * count,
                    inline_media=None, total_entries=count)


async def test_expired_leases_are_looked_for_on_the_first_claim_and_while_they_fill_batches(
    store: Store, make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, _token, _secret = await make.project()
    channel = await make.channel(project.id)
    now = time.time()
    # A worker that died mid-send: its three messages' leases ran out long ago.
    dead = await store.accept_push(project.id, channel, _plan(3), now - 100, None)
    assert len(await store.claim_messages(channel.id, "dead", 10, now - 100, 1.0)) == 3
    fresh = await store.accept_push(project.id, channel, _plan(2, first=3), now, None)

    claims: list[tuple[bool, int, int]] = []   # (looked for expired leases, re-sends, fresh)
    original = store.claim_messages

    async def recorded(*args: Any, **kwargs: Any) -> Any:
        claimed = await original(*args, **kwargs)
        resends = sum(m.possible_resend for m in claimed)
        claims.append((kwargs.get("reclaim", True), resends, len(claimed) - resends))
        return claimed

    monkeypatch.setattr(store, "claim_messages", recorded)
    # Far beyond the test: only the first claim and those after a batch of re-claims look.
    monkeypatch.setattr(runner_module, "RECLAIM_EVERY_SECONDS", 3600.0)
    dispatcher = Dispatcher(store, worker_id="w", claim_batch=2, send_lanes=1, idle_poll=0.02)
    run = asyncio.create_task(dispatcher.run())
    try:
        end = time.monotonic() + DEADLINE
        while True:
            messages = [await store.get_message(project.id, mid)
                        for mid in dead.message_ids + fresh.message_ids]
            if all(m is not None and m.state not in ("queued", "sending") for m in messages):
                break
            assert time.monotonic() < end, "the messages were not all sent"
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)   # a few idle claims more
    finally:
        dispatcher.stop()
        await asyncio.wait_for(run, DEADLINE)

    # The first claim fills the batch with re-claims, so the second looks too and finds the
    # last one; from then on claims leave expired leases alone.
    assert claims[:2] == [(True, 2, 0), (True, 1, 1)]
    assert len(claims) > 3
    assert all(not looked for looked, _resends, _fresh in claims[2:])
    for mid in dead.message_ids:
        message = await store.get_message(project.id, mid)
        assert message is not None and message.resends == 1
