"""Where a one-recipient push's event-loop µs go, in process (issue 23's budget).

`bench/single.py` measures the whole server; this measures the event loop's share of one push
without HTTP, by stages. It starts the gateway in this process (fresh SQLite database, a
sandbox channel, API only: no dispatcher), then 50 concurrent tasks call the push handler
``api.fastpush.push_response`` (everything after the HTTP body is read: decode, token,
channel, plan, the store's accept, the answer) with `bench/single.py`'s OTP bodies, and
reads the event-loop thread's CPU (``time.thread_time``) per push after a warm-up. Each
variant differs only in what answers the store's ``accept_push``:

* ``store``: the real SQLite store (its writer thread runs the transaction, committed before
  the answer);
* ``writer``: the same hand-off to the writer thread, with an empty job (the hand-off and
  its wake-ups, without the accept's SQL and Python on the writer);
* ``future``: a future resolved on the event loop's next turn (an ``await`` that suspends);
* ``none``: the store's answer at once (the handler's own Python, before and after the
  store).

The last three are measuring devices, not stores: they answer with made-up ids and write
nothing. Differences between rows are what the stage costs the event loop:
``future - none`` the suspension, ``writer - future`` the thread hand-off, ``store -
writer`` what the writer's own work costs the loop (GIL hand-overs while the writer runs
Python between its SQLite calls). ``--repeat`` runs the variants interleaved.

    python bench/push_path.py [--pushes 20000] [--repeat 3] [--variants store,writer,future,none]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import Gateway, median_spread  # noqa: E402
from single import push_bodies  # noqa: E402

VARIANTS = ("store", "writer", "future", "none")
CONCURRENCY = 50


def _answer_without_store(gateway: Any, variant: str) -> None:
    """Put a measuring device in place of the store's ``accept_push`` (module docstring)."""
    from pushgate.core.models import AcceptResult
    from pushgate.store.sqlite.accept import _message_rows

    ids = itertools.count(1_000_000_000)
    store = gateway.store

    def _empty_job(_conn: Any) -> None:
        return None

    async def accept_push(project_id: int, channel: Any, plan: Any, now: float,
                          expires_at: float | None, send_at: float | None = None,
                          idempotency_key: str | None = None,
                          idempotency_digest: str | None = None) -> AcceptResult:
        _message_rows(plan)   # the rows the real store builds on the caller's thread
        if variant == "writer":
            await store._write(_empty_job)
        elif variant == "future":
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            loop.call_soon(future.set_result, None)
            await future
        first = next(ids)
        return AcceptResult(push_id=first, balance_micro=10**12,
                            message_ids=list(range(first, first + len(plan.accepted))))

    store.accept_push = accept_push


async def _measure(gateway: Any, bodies: list[bytes], pushes: int) -> dict[str, float]:
    from pushgate.api.fastpush import push_response

    async def client(start: int, count: int) -> None:
        for turn in range(start, count, CONCURRENCY):
            answer = await push_response(gateway, bodies[turn % len(bodies)], "127.0.0.1", "",
                                         time.perf_counter())
            if answer.status_code != 200 or not bytes(answer.body).startswith(
                    b'{"status":100,'):
                raise RuntimeError(f"push refused: {bytes(answer.body)[:200]!r}")

    warmup = max(pushes // 10, CONCURRENCY)
    await asyncio.gather(*(client(i, warmup) for i in range(CONCURRENCY)))
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    await asyncio.gather(*(client(i, pushes) for i in range(CONCURRENCY)))
    cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
    return {"loop_us": cpu / pushes * 1e6, "pushes_s": pushes / wall}


def run_variant(variant: str, pushes: int) -> dict[str, float]:
    """One variant on a fresh gateway: the event loop's CPU µs a push, and pushes/s."""
    with Gateway("sqlite") as installed:
        saved = dict(os.environ)
        os.environ.update(installed.env)
        try:
            from pushgate.api.gateway import create_app
            from pushgate.config import Settings

            async def main() -> dict[str, float]:
                app = create_app(Settings(), run_workers=False)
                gateway = app.state.gateway
                await gateway.start()
                try:
                    if variant != "store":
                        _answer_without_store(gateway, variant)
                    return await _measure(gateway, push_bodies(installed.token), pushes)
                finally:
                    await gateway.stop()

            try:
                import uvloop
            except ImportError:
                return asyncio.run(main())
            return uvloop.run(main())
        finally:
            os.environ.clear()
            os.environ.update(saved)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pushes", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    if not 0 < args.pushes <= 1_000_000:
        parser.error("--pushes must be in 1..1,000,000")
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    for _ in range(args.repeat):
        for variant in variants:   # interleaved: one run of each in turn
            row = run_variant(variant, args.pushes)
            runs[variant].append(row)
            print(f"push_path {variant:7s} {row['loop_us']:6.1f} µs event-loop CPU a push"
                  f"  {row['pushes_s']:8.0f} pushes/s", flush=True)
    summary: dict[str, dict[str, float]] = {}
    for variant, rows in runs.items():
        median, low, high = median_spread([r["loop_us"] for r in rows])
        summary[variant] = {"loop_us": median, "low": low, "high": high,
                            "pushes_s": median_spread([r["pushes_s"] for r in rows])[0]}
        print(f"push_path MEDIAN {variant:7s} {median:6.1f} µs [{low:.1f}–{high:.1f}]"
              f"  {summary[variant]['pushes_s']:8.0f} pushes/s", flush=True)
    return summary


if __name__ == "__main__":
    main()
