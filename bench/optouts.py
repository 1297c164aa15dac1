"""Accept with and without an opt-out list: the cost of the opt-out check on the accept path.

A fresh database (SQLite, or PostgreSQL with ``--backend postgres``) with two projects, each
with a sandbox channel: one without opt-outs, one with ``--optouts`` (100,000) opted-out
numbers, of which ``--overlap`` (100) are among the push's recipients (the rest are other
numbers). The same pre-planned push (``--size``, 10,000 distinct recipients) is accepted through
``store.accept_push`` for each project in turn, the order alternating every round, so both
cases see the same machine and the same table sizes; then single-recipient accepts, likewise
interleaved. Each timed accept includes what the API does with the store's answer
(``without_opted_out``). Medians and spreads of ``--rounds`` rounds.

    python bench/optouts.py [--backend sqlite|postgres] [--rounds 15] [--size 10000]
                            [--optouts 100000] [--overlap 100] [--singles 300]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import Gateway, median_spread, valid_numbers  # noqa: E402

from pushgate.core.channels import ChannelSpec, default_rules  # noqa: E402
from pushgate.core.optouts import without_opted_out  # noqa: E402
from pushgate.core.push import Limits, PushBody, PushEntry, PushPlan, plan_push  # noqa: E402
from pushgate.store.factory import store_for_url  # noqa: E402


def _plan(channel: ChannelSpec, numbers: list[str]) -> PushPlan:
    body = PushBody(data=[PushEntry(number=n, message=f"Dear customer {i}, your bill is due")
                          for i, n in enumerate(numbers)])
    return plan_push(body, channel, Limits())


async def _timed(store: Any, project_id: int, channel: ChannelSpec, plan: PushPlan) -> float:
    started = time.perf_counter()
    result = await store.accept_push(project_id, channel, plan, time.time(), None)
    without_opted_out(plan, result.opted_out)
    return time.perf_counter() - started


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with Gateway(args.backend) as gateway:
        store = store_for_url(gateway.url)
        await store.open()
        try:
            projects = {}
            for name in ("clean", "listed"):
                project = await store.create_project(name, 10**15, None, "s")
                channel = await store.add_channel(ChannelSpec(
                    id=0, project_id=project.id, kind="sandbox", application=1,
                    price_micro=1000, **default_rules(1)))
                projects[name] = (project.id, channel)
            recipients = valid_numbers(args.size)
            # Opted-out numbers: ``overlap`` of the push's, the rest beyond them.
            step = max(1, args.size // max(args.overlap, 1))
            listed = recipients[::step][:args.overlap]
            listed += [f"9197{i:08d}" for i in range(args.optouts - len(listed))]
            for start in range(0, len(listed), 10_000):
                await store.add_optouts(projects["listed"][0], listed[start:start + 10_000],
                                        time.time(), "bench")
            plans = {name: _plan(channel, recipients)
                     for name, (_, channel) in projects.items()}
            singles = {name: _plan(channel, ["919600000001"])
                       for name, (_, channel) in projects.items()}
            # The single recipient is not opted out: the listed project pays the lookup only.
            big: dict[str, list[float]] = {"clean": [], "listed": []}
            one: dict[str, list[float]] = {"clean": [], "listed": []}
            for name in big:   # warm-up: statements prepared, caches filled
                await _timed(store, projects[name][0], projects[name][1], plans[name])
            for round_ in range(args.rounds):
                order = ["clean", "listed"] if round_ % 2 == 0 else ["listed", "clean"]
                for name in order:
                    big[name].append(await _timed(store, projects[name][0], projects[name][1],
                                                  plans[name]))
            for i in range(args.singles):
                order = ["clean", "listed"] if i % 2 == 0 else ["listed", "clean"]
                for name in order:
                    one[name].append(await _timed(store, projects[name][0], projects[name][1],
                                                  singles[name]))
        finally:
            await store.close()
    results: dict[str, Any] = {"backend": args.backend, "size": args.size,
                               "optouts": args.optouts, "overlap": args.overlap}
    for name in ("clean", "listed"):
        med, low, high = median_spread(big[name])
        results[f"{args.size}_{name}_ms"] = (round(med * 1000, 1), round(low * 1000, 1),
                                             round(high * 1000, 1))
        med, low, high = median_spread(one[name])
        results[f"1_{name}_ms"] = (round(med * 1000, 3), round(low * 1000, 3),
                                   round(high * 1000, 3))
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--optouts", type=int, default=100_000)
    parser.add_argument("--overlap", type=int, default=100)
    parser.add_argument("--singles", type=int, default=300)
    args = parser.parse_args(argv)
    results = asyncio.run(run(args))
    for key, value in results.items():
        print(f"{key}: {value}")
    return results


if __name__ == "__main__":
    main()
