"""`make bench`: every benchmark with bounded defaults (about ten minutes in all on 2 cores).

    python bench/run.py             # accept 1/100/1,000/10,000 recipients (10 s each, the
                                    # 1,000 case 3 times; 1 and 100 also with the raw
                                    # client; 1,000 and 10,000 again to numbers the
                                    # server does not remember; 10,000 and 1 to two
                                    # API processes, 3 times each), one-recipient pushes
                                    # at 50 connections to the default serve (3 times),
                                    # their event-loop µs by stage in process,
                                    # dispatch 200,000 (and 100,000 delivered by
                                    # simulated receipts; again beside 1,000,000
                                    # scheduled), store driver, status
                                    # updates one per call (callbacks), SMPP,
                                    # WhatsApp Cloud through a fake Graph API (50,000), a
                                    # push's answer to its send on an idle channel (300
                                    # pushes, 3 times), and a 1,000,000-message backlog
                                    # (about 10 min in all)
    python bench/run.py --quick     # a fast subset (well under a minute)
    python bench/run.py --postgres  # also PostgreSQL accept and dispatch with 1, 2, 4 workers

Everything talks to 127.0.0.1 only, every loop is bounded in count and time. The raw figures
also go to bench/results/<UTC time>.json (ignored by git); docs/benchmarks.md is written by hand
from them, with the machine and the date.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import accept  # noqa: E402
import backlog  # noqa: E402
import fastlane  # noqa: E402
import http_channel  # noqa: E402
import optouts  # noqa: E402
import push_path  # noqa: E402
import single  # noqa: E402
import smpp as smpp_bench  # noqa: E402
import status_updates  # noqa: E402
import store_driver  # noqa: E402

import dispatch  # noqa: E402


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")))
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gib": round(mem_kb / 2**20, 1),
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--seconds", type=float, help="measured seconds per accept run")
    args = parser.parse_args(argv)
    info = machine()
    print(f"machine: {info['nproc']} × {info['cpu']}, {info['ram_gib']} GiB, Python "
          f"{info['python']}, SQLite {info['sqlite']}; {info['date']}", flush=True)
    seconds = str(args.seconds or (3 if args.quick else 10))
    results: dict[str, Any] = {"machine": info}
    if args.quick:
        results["accept"] = accept.main(["--seconds", seconds, "--sizes", "1000"])
        results["accept"] += accept.main(["--seconds", seconds, "--sizes", "1",
                                          "--client", "raw"])
        results["single"] = single.main(["--seconds", seconds])
        results["push_path"] = push_path.main(["--pushes", "5000", "--repeat", "1"])
        results["dispatch"] = dispatch.main(["--messages", "20000"])
        results["store_driver"] = store_driver.main(["--rows", "20000", "--repeat", "1"])
        results["fastlane"] = fastlane.main(["--count", "150"])
    else:
        results["accept"] = accept.main(["--seconds", seconds, "--sizes", "1,100,10000"])
        results["accept"] += accept.main(["--seconds", seconds, "--sizes", "1000",
                                          "--repeat", "3"])
        # Numbers the server has not seen lately: every one validated (the worst case).
        results["accept"] += accept.main(["--seconds", seconds, "--sizes", "1000,10000",
                                          "--numbers", "150000"])
        # The small pushes again with a client light enough to measure the server.
        results["accept"] += accept.main(["--seconds", seconds, "--sizes", "1,100",
                                          "--client", "raw"])
        # Issue 7's two hardest targets in the set-up that reaches them, median of 3: two
        # API processes on one port (`serve --reuse-port`: one write lock, both cores for
        # HTTP and decoding); 10,000-recipient pushes from 4 raw connections, single-recipient
        # pushes from 64.
        for size, connections in (("10000", "4"), ("1", "64")):
            results["accept"] += accept.main(["--seconds", seconds, "--sizes", size,
                                              "--client", "raw", "--servers", "2",
                                              "--processes", "1", "--connections",
                                              connections, "--repeat", "3"])
        # Issue 23's side-by-side shape: one recipient, 50 connections, the default `serve`
        # (all cores, dispatch on), server CPU µs a request; median of 3.
        results["single"] = single.main(["--seconds", seconds, "--repeat", "3"])
        # The same push's event-loop µs in process, by stage (store, hand-off, none; ~1 min).
        results["push_path"] = push_path.main(["--repeat", "3"])
        results["dispatch"] = dispatch.main(["--messages", "200000"])
        # Delivered by simulated receipts afterwards, the path real providers' receipts take.
        results["dispatch_receipts"] = dispatch.main(["--messages", "100000",
                                                      "--delivery-delay", "0.001"])
        # The same drain with 1,000,000 messages scheduled a day ahead on its channel: they
        # wait outside the claim index, so the figures should match the plain drain's.
        results["dispatch_scheduled"] = dispatch.main(["--messages", "200000",
                                                       "--scheduled", "1000000"])
        results["store_driver"] = store_driver.main(["--rows", "100000", "--repeat", "3"])
        results["status_updates"] = status_updates.main(["--updates", "20000"])
        # One push at a time to an idle channel: its answer to the channel's send (~1 min).
        results["fastlane"] = fastlane.main(["--count", "300", "--repeat", "3"]
                                            + (["--postgres"] if args.postgres else []))
        # 1,000,000 queued: priority latency, memory, report streaming, claim time (~2.5 min).
        results["backlog"] = backlog.main([])
        # 10,000-recipient accept with a 100,000-number opt-out list, against none.
        results["optouts"] = optouts.main(["--rounds", "15"])
    results["smpp"] = smpp_bench.main(["--messages", "20000" if args.quick else "50000"])
    results["http_channel"] = http_channel.main(["--quick"] if args.quick else [])
    if args.postgres:
        results["accept_postgres"] = accept.main(["--backend", "postgres", "--seconds", seconds,
                                                  "--sizes", "1000,10000"])
        results["dispatch_postgres"] = dispatch.main(
            ["--backend", "postgres", "--messages", "20000" if args.quick else "50000",
             "--workers", "1,2,4"])
        results["optouts_postgres"] = optouts.main(["--backend", "postgres", "--rounds", "9"])
        results["status_updates_postgres"] = status_updates.main(
            ["--backend", "postgres", "--updates", "5000" if args.quick else "20000"])
        if not args.quick:
            results["dispatch_postgres_receipts"] = dispatch.main(
                ["--backend", "postgres", "--messages", "50000", "--delivery-delay", "0.001"])
    out = Path(__file__).parent / "results" / time.strftime("%Y%m%dT%H%M%SZ.json", time.gmtime())
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))
    print(f"raw figures: {out}")


if __name__ == "__main__":
    main()
