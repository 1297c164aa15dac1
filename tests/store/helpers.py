"""Helpers of the store tests: a push plan without the API, waiting for a condition."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from pushgate.core.push import PushPlan

#: Seconds a test waits for something another store instance does.
DEADLINE = 10.0


def push_plan(count: int, price_micro: int, priority: int = 0, tag: str = "") -> PushPlan:
    """A plan of ``count`` accepted messages at ``price_micro`` each."""
    rows = [(i, f"9198765{i:05d}", f"{tag} message {i}", None, None, None, 1, 1, price_micro)
            for i in range(count)]
    return PushPlan(priority=priority, accepted=rows, refused=[],
                    credit_total=price_micro * count, inline_media=None, total_entries=count)


async def wait_for(predicate: Any, what: str, deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if await predicate():
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"gave up after {deadline}s waiting for {what}")
