"""Wake-up hints between processes (``dispatch/hints.py``): an API process that accepted a
push tells the dispatcher's process of the same host, so the channel's idle runner claims at
once rather than at its next poll. Only a hint: lost ones cost latency, never a message."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from pushgate.core.push import PushPlan
from pushgate.dispatch.hints import (
    MAX_IDS_PER_DATAGRAM,
    HintListener,
    HintSender,
    decode,
    encode,
)
from pushgate.dispatch.worker import Dispatcher
from pushgate.store.base import Store

DEADLINE = 10.0
IDLE_POLL = 120.0   # far beyond DEADLINE: only a wake-up can make the runner act in time


def _plan(count: int) -> PushPlan:
    rows = [(i, f"9198765{i:05d}", f"message {i}", None, None, None, 1, 1, 1_000)
            for i in range(count)]
    return PushPlan(priority=0, accepted=rows, refused=[], credit_total=1_000 * count,
                    inline_media=None, total_entries=count)


async def _until(check: Any, what: str) -> None:
    end = time.monotonic() + DEADLINE
    while True:
        result = check()
        if await result if asyncio.iscoroutine(result) else result:
            return
        if time.monotonic() > end:
            pytest.fail(f"gave up after {DEADLINE}s waiting for {what}")
        await asyncio.sleep(0.02)


def test_channel_ids_survive_the_wire_and_long_lists_split() -> None:
    ids = list(range(1, 2 * MAX_IDS_PER_DATAGRAM + 2))
    datagrams = encode(ids)
    assert len(datagrams) == 3
    assert [i for d in datagrams for i in decode(d)] == ids
    assert decode(encode([7])[0] + b"\x00\x01") == [7]   # a torn tail is ignored


async def test_the_channels_of_one_turn_go_in_one_datagram(tmp_path: Path) -> None:
    heard: list[int] = []
    listener = HintListener(str(tmp_path / "wake.sock"), heard.append)
    assert listener.open()
    sender = HintSender(listener.path)
    try:
        for channel_id in (5, 7, 5, 5):
            sender.queued(channel_id)
        await _until(lambda: len(heard) == 2, "both channels to be heard")
        assert sorted(heard) == [5, 7]
        assert (sender.sent, sender.dropped) == (1, 0)
        sender.queued(9)   # a later turn: a datagram of its own
        await _until(lambda: 9 in heard, "the next turn's channel")
        assert sender.sent == 2
    finally:
        sender.close()
        listener.close()
    assert not os.path.exists(listener.path)


async def test_a_hint_nobody_hears_is_dropped_quietly(tmp_path: Path) -> None:
    sender = HintSender(str(tmp_path / "nobody.sock"))
    sender.queued(3)
    await _until(lambda: sender.dropped == 1, "the hint to be dropped")
    assert sender.sent == 0
    sender.close()


async def test_a_listener_that_cannot_bind_leaves_polling(tmp_path: Path) -> None:
    listener = HintListener(str(tmp_path / "missing" / "wake.sock"), lambda _c: None)
    assert not listener.open()
    listener.close()


async def test_a_hint_wakes_the_idle_runner_of_the_dispatchers_process(
    store: Store, make: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The push is queued as another process would queue it (no in-process wake), the store's
    own notifications are off and the runners poll every two minutes: only the hint can get
    the message sent within the deadline."""

    async def no_notifications(*_args: Any) -> None:
        return None

    monkeypatch.setattr(store, "listen", no_notifications)
    project, _token, _secret = await make.project()
    channel = await make.channel(project.id)
    path = str(tmp_path / "wake.sock")
    dispatcher = Dispatcher(store, worker_id="w", idle_poll=IDLE_POLL, wake_socket=path)
    run = asyncio.create_task(dispatcher.run())
    sender = HintSender(path)
    try:
        await _until(lambda: channel.id in dispatcher.runners and os.path.exists(path),
                     "the channel's runner and the hint socket")
        await asyncio.sleep(0.2)   # the runner's first, empty claim is done: it idles
        result = await store.accept_push(project.id, channel, _plan(2), time.time(), None)
        sender.queued(channel.id)

        async def all_sent() -> bool:
            for mid in result.message_ids:
                message = await store.get_message(project.id, mid)
                if message is None or message.state in ("queued", "sending"):
                    return False
            return True

        await _until(all_sent, "the hinted messages to be sent")
        assert sender.sent == 1
    finally:
        sender.close()
        dispatcher.stop()
        await asyncio.wait_for(run, DEADLINE)
    assert not os.path.exists(path)   # the dispatcher's socket goes with it
