"""Accept throughput: pushes of 1, 100, 1,000 and 10,000 recipients from concurrent clients.

Starts `pushgate serve --api-only` (no dispatcher, so accept is measured alone) on 127.0.0.1
with a fresh database, then drives it from client processes (a single Python client process
saturates before the server does on small pushes) for a bounded time per case. Prints one line
per case: recipients/push, clients, pushes/s, messages/s, p50/p99 latency, errors.

    python bench/accept.py [--backend sqlite|postgres] [--seconds 10] [--sizes 1,100,1000,10000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import time
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).parent))
from common import Gateway, percentile, valid_numbers  # noqa: E402


def _body(token: str, size: int) -> bytes:
    numbers = valid_numbers(size)
    return orjson.dumps({
        "token": token, "application": "1", "priority": "0", "globalmessage": "",
        "data": [{"number": n, "message": f"Dear customer {i}, your bill of Rs {i % 997} is due",
                  "reference_number": f"r{i}"} for i, n in enumerate(numbers)],
    })


def _client(base: str, body: bytes, connections: int, seconds: float, out: multiprocessing.Queue
            ) -> None:  # type: ignore[type-arg]
    async def run() -> tuple[int, int, list[float]]:
        latencies: list[float] = []
        errors = 0
        end = time.monotonic() + seconds
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
            async def loop() -> None:
                nonlocal errors
                while time.monotonic() < end:
                    started = time.perf_counter()
                    response = await client.post(
                        "/api/v2/push", content=body,
                        headers={"Content-Type": "application/json"})
                    latencies.append(time.perf_counter() - started)
                    if response.status_code != 200 or b'"status":100' not in response.content:
                        errors += 1

            await asyncio.gather(*(loop() for _ in range(connections)))
        return len(latencies), errors, latencies

    out.put(asyncio.run(run()))


def run_case(base: str, token: str, size: int, processes: int, connections: int,
             seconds: float) -> dict[str, float]:
    body = _body(token, size)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    workers = [ctx.Process(target=_client, args=(base, body, connections, seconds, out))
               for _ in range(processes)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    results = [out.get(timeout=seconds + 120) for _ in workers]
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    pushes = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    latencies = [x for r in results for x in r[2]]
    # Time the clients were actually sending (process start-up excluded).
    window = min(elapsed, seconds)
    return {"size": size, "clients": processes * connections, "pushes_s": pushes / window,
            "messages_s": pushes * size / window, "p50_ms": percentile(latencies, 0.5) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000, "errors": errors, "pushes": pushes}


CLIENTS = {1: (2, 16), 100: (2, 8), 1000: (1, 4), 10000: (1, 2)}


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="sqlite", choices=("sqlite", "postgres"))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--sizes", default="1,100,1000,10000")
    args = parser.parse_args(argv)
    rows = []
    with Gateway(args.backend) as gateway:
        base = gateway.serve("--api-only")
        for size in (int(s) for s in args.sizes.split(",")):
            processes, connections = CLIENTS.get(size, (1, 8))
            row = run_case(base, gateway.token, size, processes, connections, args.seconds)
            rows.append(row)
            print(f"accept {args.backend:8s} {size:>6} recipients/push  "
                  f"{row['clients']:>3} clients  {row['pushes_s']:>9.1f} pushes/s  "
                  f"{row['messages_s']:>10.0f} messages/s  p50 {row['p50_ms']:7.1f} ms  "
                  f"p99 {row['p99_ms']:7.1f} ms  errors {row['errors']}", flush=True)
    return rows


if __name__ == "__main__":
    main()
