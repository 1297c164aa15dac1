"""Dispatch throughput: how fast workers drain a queue through the sandbox channel.

Queues N messages (accepted through the store, as pushes of 1,000), then starts W
`pushgate worker` processes and times the drain until every message is delivered (claimed,
sent, recorded as submitted, then delivered by the sandbox's simulation). Prints messages/s.

    python bench/dispatch.py [--backend sqlite|postgres] [--messages 100000] [--workers 1,2,4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import Gateway, valid_numbers  # noqa: E402

from pushgate.core.push import Limits, decode_push, plan_push  # noqa: E402
from pushgate.store.base import store_for_url  # noqa: E402

DRAIN_TIMEOUT = 300.0


async def _queue(url: str, channel_id: int, project_id: int, count: int) -> None:
    store = store_for_url(url)
    await store.open()
    try:
        channel = await store.get_channel(channel_id)
        assert channel is not None
        numbers = valid_numbers(1000)
        for start in range(0, count, 1000):
            size = min(1000, count - start)
            body = decode_push(json.dumps({"data": [
                {"number": numbers[i], "message": f"bill {start + i}"} for i in range(size)]}))
            plan = plan_push(body, channel, Limits())
            await store.accept_push(project_id, channel, plan, time.time(), None)
    finally:
        await store.close()


async def _delivered(url: str, project_id: int) -> int:
    store = store_for_url(url)
    await store.open()
    try:
        total = 0
        push_id = 1
        while (push := await store.get_push(project_id, push_id)) is not None:
            total += push["counts"].get("delivered", 0)
            push_id += 1
        return total
    finally:
        await store.close()


def run_case(backend: str, messages: int, workers: int) -> dict[str, float]:
    with Gateway(backend) as gateway:
        asyncio.run(_queue(gateway.url, gateway.channel_id, gateway.project_id, messages))
        started = time.perf_counter()
        for _ in range(workers):
            gateway.start("worker", PUSHGATE_CLAIM_BATCH="1000")
        deadline = time.monotonic() + DRAIN_TIMEOUT
        done = 0
        while time.monotonic() < deadline:
            done = asyncio.run(_delivered(gateway.url, gateway.project_id))
            if done >= messages:
                break
            time.sleep(0.25)
        elapsed = time.perf_counter() - started
    return {"backend": backend, "workers": workers, "messages": done,
            "seconds": elapsed, "messages_s": done / elapsed}


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="sqlite", choices=("sqlite", "postgres"))
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--workers", default="1")
    args = parser.parse_args(argv)
    rows = []
    for workers in (int(w) for w in args.workers.split(",")):
        row = run_case(args.backend, args.messages, workers)
        rows.append(row)
        print(f"dispatch {args.backend:8s} {workers} worker(s)  {row['messages']:>8} messages "
              f"in {row['seconds']:6.1f} s  {row['messages_s']:>9.0f} messages/s "
              "(claim, send, record, deliver)", flush=True)
    return rows


if __name__ == "__main__":
    main()
