"""Dispatch through an HTTP channel: one ``pushgate worker`` sending over the WhatsApp Cloud API
connector (``whatsapp_cloud``) to a fake Graph API on 127.0.0.1.

Per case it adds C ``whatsapp_cloud`` channels (C business numbers of one project, each at
``--rate`` messages/s, by default the connector's maximum of 1,000/s: Meta's own ceiling per
number), queues N text messages spread evenly over them (through the store, as pushes of 1,000,
exactly as the API stores them; every recipient distinct, so the per-recipient pair limit of
one message per 6 s never waits), then starts one ``pushgate worker`` and waits until every
message is ``submitted`` (sent, the wamid recorded). A single number cannot reach 5,000/s — the
connector caps its rate at 1,000/s, as Meta does — so the target is measured across several
numbers, all in one worker process: ten numbers allow 10,000/s, so the rate limiter is not what
is measured. ``--rate 0`` (the operator's "no limit") is also accepted, to see one number
unpaced.

``--process serve`` runs ``pushgate serve`` instead (API, dispatcher and deliverer in one
process, on uvicorn's event loop: uvloop, where ``pushgate worker`` runs asyncio's own).

The fake (``bench/graph_fake.py``) runs in its own process so its CPU shows; it answers in
Graph's documented wire format and counts the TCP connections it saw (few connections for many
requests = keep-alive). ``tests/fakes/graph_api.py``, the tests' fake, is too slow for this
(Starlette under uvicorn, every request recorded: it would be the bottleneck).
``--latency-ms`` makes the fake hold each answer (Graph takes 100-500 ms): then the connector's
sends in flight (``in_flight_limit``, 64), not the CPU, bound a number's rate.

Per case it prints messages/s from the first claim to the last ``submitted`` (the database's
own event timestamps), the CPU of the sending process and of the fake over that span (per cent
of one core; the machine's ``nproc`` cores are shared with both and whatever else runs:
"other"), its CPU per message, and the fake's connection and request counts. A case ends when
every message is submitted, after 300 s, or after 90 s without progress.

    python bench/http_channel.py [--messages 50000] [--channels 10] [--rate 1000] [--repeat 3]
                                 [--process worker|serve] [--latency-ms 0] [--wait-quiet 60]
    python bench/http_channel.py --quick          # 10,000 messages, one run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    Gateway,
    cpu_seconds,
    machine_busy,
    median_spread,
    valid_numbers,
    wait_quiet,
)

from pushgate.core.push import Limits, decode_push, plan_push  # noqa: E402
from pushgate.store.factory import store_for_url  # noqa: E402
from pushgate.store.migrate import sqlite_path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "EAAG-bench-token"
FIRST_NUMBER_ID = 106_540_352_242_922
DRAIN_TIMEOUT = 300.0
STALL_TIMEOUT = 90.0
MAX_MESSAGES = 500_000
MAX_CHANNELS = 50
PUSH_SIZE = 1000


class FakeGraph:
    """``bench/graph_fake.py`` in a subprocess; ``close()`` returns its counts."""

    def __init__(self, number_ids: list[str], latency_ms: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "graph_fake.py"), "--numbers",
             ",".join(number_ids), "--token", TOKEN, "--latency-ms", str(latency_ms)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("port "):
            self.close()
            raise RuntimeError(f"the fake Graph API did not start: {line!r}")
        self.port = int(line.split()[1])

    def close(self) -> dict[str, Any]:
        stats: dict[str, Any] = {}
        try:
            out, _ = self.proc.communicate(timeout=10)
            last = out.strip().splitlines()[-1] if out.strip() else ""
            stats = json.loads(last) if last.startswith("{") else {}
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return stats


async def _queue(url: str, channel_ids: list[int], project_id: int, count: int) -> None:
    """``count`` messages, as even as may be over the channels, each to its own number."""
    store = store_for_url(url)
    await store.open()
    try:
        numbers = valid_numbers(count)
        share = -(-count // len(channel_ids))
        for index, channel_id in enumerate(channel_ids):
            channel = await store.get_channel(channel_id)
            assert channel is not None
            first, last = index * share, min(count, (index + 1) * share)
            for start in range(first, last, PUSH_SIZE):
                body = decode_push(json.dumps({"data": [
                    {"number": numbers[i], "message": f"Your order {i} has shipped"}
                    for i in range(start, min(start + PUSH_SIZE, last))]}))
                plan = plan_push(body, channel, Limits())
                await store.accept_push(project_id, channel, plan, time.time(), None)
    finally:
        await store.close()


def _add_channels(gateway: Gateway, port: int, number_ids: list[str], rate: float) -> list[int]:
    ids = []
    for number_id in number_ids:
        config = {"phone_number_id": number_id, "access_token": TOKEN,
                  "app_secret": "bench-app-secret", "verify_token": "bench-verify",
                  "graph_base_url": f"http://127.0.0.1:{port}"}
        added = gateway.cli_json("channel", "add", "--project", "bench", "--type",
                                 "whatsapp_cloud", "--application", "8", "--price", "0.001",
                                 "--rate", f"{rate:g}", "--config", json.dumps(config))
        ids.append(int(added["id"]))
    return ids


def _start(gateway: Gateway, process: str) -> subprocess.Popen[bytes]:
    """``pushgate worker`` (asyncio's own event loop) or ``pushgate serve`` (API, dispatcher and
    deliverer in one process, on uvicorn's loop: uvloop when installed, as here)."""
    if process == "worker":
        return gateway.start("worker")
    gateway.serve()
    assert gateway.server is not None
    return gateway.server


def run_case(messages: int, channels: int, rate: float, latency_ms: float,
             process: str = "worker") -> dict[str, Any]:
    number_ids = [str(FIRST_NUMBER_ID + i) for i in range(channels)]
    gateway = Gateway("sqlite")
    fake_stats: dict[str, Any] = {}
    try:
        fake = FakeGraph(number_ids, latency_ms)
        try:
            channel_ids = _add_channels(gateway, fake.port, number_ids, rate)
            asyncio.run(_queue(gateway.url, channel_ids, gateway.project_id, messages))
            path = sqlite_path(gateway.url)
            assert path is not None
            db = sqlite3.connect(path)
            try:
                worker = _start(gateway, process)
                deadline = time.monotonic() + DRAIN_TIMEOUT
                # CPU from the first claim on (the worker's start-up and first lease excluded).
                while time.monotonic() < deadline and worker.poll() is None:
                    if db.execute("SELECT 1 FROM messages WHERE state <> 'queued' LIMIT 1"
                                  ).fetchone():
                        break
                    time.sleep(0.02)
                cpu0 = cpu_seconds(worker.pid), cpu_seconds(fake.proc.pid), machine_busy()
                done = progress = 0
                stalled_since = time.monotonic()
                while time.monotonic() < deadline and worker.poll() is None:
                    done = db.execute("SELECT count(*) FROM messages WHERE state = 'submitted'"
                                      ).fetchone()[0]
                    if done >= messages:
                        break
                    if done > progress:
                        progress, stalled_since = done, time.monotonic()
                    elif time.monotonic() - stalled_since > STALL_TIMEOUT:
                        break                  # e.g. every send failing: report, do not wait
                    time.sleep(0.05)
                cpu1 = cpu_seconds(worker.pid), cpu_seconds(fake.proc.pid), machine_busy()
                first = db.execute("SELECT min(first_claim_at) FROM messages").fetchone()[0]
                last = db.execute("SELECT max(submitted_at) FROM messages").fetchone()[0]
                states = dict(db.execute("SELECT state, count(*) FROM messages GROUP BY state"
                                         ).fetchall())
                resends = db.execute("SELECT coalesce(sum(claims), 0) FROM messages"
                                     ).fetchone()[0] - messages
            finally:
                db.close()
        finally:
            gateway.close()        # stops the worker before the fake goes away
            fake_stats = fake.close()
    finally:
        gateway.close()
    span = (last - first) if first and last else float("nan")
    (busy0, total0), (busy1, total1) = cpu0[2], cpu1[2]
    wall = max(total1 - total0, 1e-9) / (os.cpu_count() or 1)
    worker_cpu, fake_cpu = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    return {
        "channels": channels, "rate_per_channel": rate, "latency_ms": latency_ms,
        "process": process,
        "messages": messages, "submitted": done,
        "not_submitted": sum(v for k, v in states.items() if k != "submitted"),
        "states": states, "extra_claims": resends, "drain_s": span,
        "messages_s": done / span if span == span and span > 0 else float("nan"),
        "worker_cpu": 100 * worker_cpu / wall, "fake_cpu": 100 * fake_cpu / wall,
        "other_cpu": max(0.0, 100 * ((busy1 - busy0) - worker_cpu - fake_cpu) / wall),
        "worker_cpu_us_per_message": 1e6 * worker_cpu / max(done, 1),
        "connections": fake_stats.get("connections"),
        "max_open_connections": fake_stats.get("max_open"),
        "fake_requests": fake_stats.get("requests"), "fake_refused": fake_stats.get("refused"),
        "load_1min": os.getloadavg()[0],
    }


def _line(label: str, row: dict[str, Any]) -> str:
    return (f"http_channel whatsapp_cloud {label} {row['submitted']:>7} submitted "
            f"({row['not_submitted']} not)  {row['messages_s']:>6.0f} messages/s "
            f"({row['drain_s']:.1f} s)  cpu worker {row['worker_cpu']:3.0f} % "
            f"({row['worker_cpu_us_per_message']:.0f} µs/message) fake {row['fake_cpu']:3.0f} % "
            f"other {row['other_cpu']:3.0f} %  connections {row['connections']} "
            f"(max open {row['max_open_connections']}) for {row['fake_requests']} requests")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, help="per case (default 50,000; --quick 10,000)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--channels", default="10",
                        help="comma-separated numbers of whatsapp_cloud channels, one case each")
    parser.add_argument("--rate", type=float, default=1000.0,
                        help="messages/s per channel (the connector allows at most 1,000; "
                             "0 = unpaced)")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="the fake holds each answer this long")
    parser.add_argument("--process", default="worker", choices=("worker", "serve"),
                        help="what sends: `pushgate worker` (asyncio's loop) or `pushgate "
                             "serve` (uvicorn's loop, uvloop here)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case (median)")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="before each run wait up to this long for the machine to idle")
    args = parser.parse_args(argv)
    messages = args.messages or (10_000 if args.quick else 50_000)
    cases = [int(c) for c in args.channels.split(",")]
    if not 0 < messages <= MAX_MESSAGES:
        parser.error(f"--messages must be in 1..{MAX_MESSAGES}")
    if not all(0 < c <= MAX_CHANNELS for c in cases) or not 1 <= args.repeat <= 10:
        parser.error(f"--channels must be in 1..{MAX_CHANNELS}, --repeat in 1..10")
    if not 0 <= args.latency_ms <= 2000:
        parser.error("--latency-ms must be in 0..2000")
    rows = []
    for channels in cases:
        label = f"{args.process} {channels:>2} channel(s) at {args.rate:g}/s"
        runs = []
        for _ in range(args.repeat):
            if args.wait_quiet:
                wait_quiet(args.wait_quiet)
            row = run_case(messages, channels, args.rate, args.latency_ms, args.process)
            runs.append(row)
            print(_line(label, row), flush=True)
        if args.repeat > 1:
            median, low, high = median_spread([r["messages_s"] for r in runs])
            print(f"http_channel whatsapp_cloud {label} MEDIAN of {args.repeat}: "
                  f"{median:.0f} messages/s [{low:.0f}–{high:.0f}]", flush=True)
            summary = dict(sorted(runs, key=lambda r: r["messages_s"])[len(runs) // 2])
            summary.update(messages_s=median, messages_s_min=low, messages_s_max=high,
                           runs=runs)
            rows.append(summary)
        else:
            rows.extend(runs)
    return rows


if __name__ == "__main__":
    main()
