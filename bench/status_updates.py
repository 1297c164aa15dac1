"""Status updates as providers send them: many small callbacks at once, one update each.

Queues N messages on a channel, records them `submitted` with provider ids (as a connector's
sends would), then applies one `delivered` update per message through
`Store.apply_status_updates`, one call per update with C calls in flight at once — what N
WhatsApp status webhooks, served by C concurrent requests, ask of the store. The HTTP layer is
left out (bench/accept.py measures it): this is the store's share. Prints updates/s and each
call's latency (p50/p99).

    python bench/status_updates.py [--backend sqlite|postgres] [--updates 20000]
                                   [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import Gateway, queue_messages  # noqa: E402

from pushgate.core.lifecycle import State  # noqa: E402
from pushgate.core.models import SendResult, StatusUpdate  # noqa: E402
from pushgate.core.policy import RetryPolicy  # noqa: E402
from pushgate.store.factory import store_for_url  # noqa: E402

MAX_UPDATES = 200_000
TIMEOUT = 300.0


async def _run(url: str, channel_id: int, project_id: int, count: int,
               concurrency: int) -> dict[str, Any]:
    store = store_for_url(url)
    await store.open()
    try:
        channel = await store.get_channel(channel_id)
        assert channel is not None
        ids = await queue_messages(store, channel, project_id, count)
        while claimed := await store.claim_messages(channel_id, "bench", 1000, time.time(), 600):
            await store.record_outcomes("bench", [
                SendResult.sent(m.id, f"wamid.{m.id}") for m in claimed],
                time.time(), RetryPolicy())

        latencies: list[float] = []
        slots = asyncio.Semaphore(concurrency)

        async def callback(message_id: int) -> int:
            async with slots:
                started = time.perf_counter()
                changed = await store.apply_status_updates([StatusUpdate(
                    State.DELIVERED, time.time(), channel_id=channel_id,
                    provider_id=f"wamid.{message_id}")])
                latencies.append(time.perf_counter() - started)
                return changed

        started = time.perf_counter()
        async with asyncio.timeout(TIMEOUT):
            changed = await asyncio.gather(*(callback(mid) for mid in ids))
        elapsed = time.perf_counter() - started
    finally:
        await store.close()
    latencies.sort()
    return {"updates": count, "applied": sum(changed), "seconds": elapsed,
            "updates_s": count / elapsed,
            "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="sqlite", choices=("sqlite", "postgres"))
    parser.add_argument("--updates", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args(argv)
    if not 0 < args.updates <= MAX_UPDATES:
        parser.error(f"--updates must be in 1..{MAX_UPDATES}")
    if not 0 < args.concurrency <= 1000:
        parser.error("--concurrency must be in 1..1000")
    with Gateway(args.backend) as gateway:
        row = asyncio.run(_run(gateway.url, gateway.channel_id, gateway.project_id,
                               args.updates, args.concurrency))
    row.update(backend=args.backend, concurrency=args.concurrency)
    print(f"status updates {args.backend:8s} {row['updates']:>7} one per call, "
          f"{args.concurrency} in flight  {row['updates_s']:>7.0f} updates/s  "
          f"p50 {row['p50_ms']:6.1f} ms  p99 {row['p99_ms']:6.1f} ms  "
          f"({row['applied']} applied)", flush=True)
    return row


if __name__ == "__main__":
    main()
