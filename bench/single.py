"""One-recipient pushes side by side (issue 23): req/s, p50/p99 and server CPU µs per request.

The shape of an OTP or alert integration: every request one recipient, 50 concurrent
keep-alive connections, a light client. Each run starts the default ``pushgate serve`` (one
API process per core on one port, the first also running the dispatcher, which sends what is
accepted through the sandbox channel; ``--api-only`` leaves dispatch out) on a free
127.0.0.1 port with a fresh SQLite database, then drives it from one client process: a raw
asyncio HTTP/1.1 client (pre-built request bytes, status line and Content-Length parsed by
hand; a small fraction of httpx's CPU per request), on uvloop where installed. A warm-up, then
a measured window bounded in time and in count.

Reported per run: req/s, p50/p99 latency, errors, and the CPU the server's whole process tree
(the ``serve`` parent and its children, every thread) used in the window, read from /proc,
divided by the requests answered: **server CPU µs per request**, the figure to trust on a
shared machine, where req/s moves with whatever else runs; split into the processes' main
threads (the event loops: HTTP, validation, answers, dispatch) and their other threads (the
SQLite writer: statements and commits). Every answer must be HTTP 200
with status 100 and one accepted entry. Beside each run, the host's speed just before it
(``common.host_yardstick``: a fixed Python loop's CPU, a durable SQLite commit's wall and
CPU µs): on a shared virtual machine the same code's CPU a request moves by half within
minutes, so runs of different sittings compare only beside those figures.

``--target-url`` drives another gateway instead (e.g. Jasmin's ``/send``) with the same
client: ``--target-body`` is the request's body with ``{number}`` (the same rotating
recipients as pushgate's) and ``{n}`` substituted, ``--target-pid`` (repeatable) the processes
whose CPU counts as the server's (with their descendants), ``--side-pid NAME=PID`` (repeatable)
shared services whose CPU in the window is reported apart (e.g. the message broker the target
queues into), and ``--target-ok`` the bytes a good answer's body starts with; any other answer
is an error, counted by status and first bytes. Answers may carry Content-Length or be chunked.
``--interleave`` runs pushgate's default ``serve`` and the target in turn, ``--repeat`` times
each, and prints the medians and the pushgate/target ratios.

``--label`` and ``--pythonpath`` run an older checkout's server (interleaved A/Bs).

    python bench/single.py [--seconds 10] [--connections 50] [--repeat 3] [--api-only]
                           [--workers N] [--max-requests 2000000]
    python bench/single.py --interleave --repeat 3 --target-url http://127.0.0.1:1401/send \
        --target-body 'username=foo&password=bar&to={number}&content=Your+OTP+is+{n}' \
        --target-ok 'Success "' --target-pid "$(pgrep -f jasmind.py)" \
        --side-pid rabbitmq="$(pgrep -f beam.smp)"
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).parent))
import contextlib

from common import (  # noqa: E402
    Gateway,
    cpu_seconds,
    free_port,
    host_yardstick,
    machine_busy,
    median_spread,
    percentile,
    valid_numbers,
)

SUCCESS = b'{"status":100,'
#: Distinct recipients the pushes go to (a customer base the server remembers as valid).
NUMBERS = 20_000


def tree_pids(root: int) -> list[int]:
    """``root`` and every descendant, from /proc's children lists."""
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                text = Path(f"/proc/{pid}/task/{task}/children").read_text()
                todo += [int(x) for x in text.split()]
        except OSError:
            continue
    return pids


def tree_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


def thread_split(pids: list[int]) -> tuple[float, float]:
    """CPU seconds so far of the processes' main threads (the event loops) and of all their
    other threads (the SQLite writer, mostly), from /proc's per-thread stat."""
    loops = others = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pid}/task"):
                fields = Path(f"/proc/{pid}/task/{task}/stat").read_text().rsplit(")", 1)[1]
                values = fields.split()
                used = (int(values[11]) + int(values[12])) / tick
                if int(task) == pid:
                    loops += used
                else:
                    others += used
    return loops, others


def push_bodies(token: str, count: int = 1000) -> list[bytes]:
    numbers = valid_numbers(NUMBERS)
    return [json.dumps({"token": token, "application": "1", "priority": "0",
                        "data": [{"number": numbers[(i * 7919) % NUMBERS],
                                  "message": f"Your OTP is {100000 + i * 37 % 900000}"}]},
                       separators=(",", ":")).encode() for i in range(count)]


def requests_for(url: str, bodies: list[bytes], content_type: str) -> list[bytes]:
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return [b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (path.encode(), parts.netloc.encode(), content_type.encode(), len(b), b)
            for b in bodies]


async def read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    """An answer's body after its ``head``: Content-Length or chunked (no trailers)."""
    lower = head.lower()
    at = lower.find(b"content-length:")
    if at >= 0:
        return await reader.readexactly(int(head[at + 15:head.index(b"\r\n", at)]))
    if b"transfer-encoding: chunked" not in lower:
        raise ConnectionError("answer without Content-Length or chunked encoding")
    chunks = []
    while size := int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16):
        chunks.append((await reader.readexactly(size + 2))[:-2])
    await reader.readuntil(b"\r\n")   # the empty line after the last chunk
    return b"".join(chunks)


def error_kind(head: bytes, content: bytes) -> str:
    return f"{head[9:12].decode(errors='replace')} {content[:60].decode(errors='replace')}"


async def drive(url: str, requests: list[bytes], connections: int, measure_from: float,
                end: float, max_requests: int, ok_prefix: bytes) -> dict[str, Any]:
    """``connections`` closed loops, each on one keep-alive connection."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    latencies: list[float] = []
    errors = 0
    count = 0
    kinds: collections.Counter[str] = collections.Counter()

    async def loop(turn: int) -> None:
        nonlocal errors, count
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while (started := time.monotonic()) < end and count < max_requests:
                turn += 1
                writer.write(requests[turn % len(requests)])
                head = await reader.readuntil(b"\r\n\r\n")
                content = await read_body(reader, head)
                finished = time.monotonic()
                if started < measure_from:
                    continue
                count += 1
                latencies.append(finished - started)
                if head[9:12] != b"200" or not content.startswith(ok_prefix):
                    errors += 1
                    kinds[error_kind(head, content)] += 1
        finally:
            writer.close()

    cpu0 = time.process_time()
    outcomes = await asyncio.gather(*(loop(c * 97) for c in range(connections)),
                                    return_exceptions=True)
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    for outcome in failed:
        kinds[f"connection lost: {outcome!r}"[:80]] += 1
    return {"latencies": latencies, "errors": errors + len(failed),
            "error_kinds": dict(kinds.most_common(5)),
            "client_cpu": time.process_time() - cpu0}


def run_once(url: str, pids: list[int], requests: list[bytes], connections: int,
             seconds: float, warmup: float, max_requests: int, ok_prefix: bytes,
             side: dict[str, list[int]] | None = None) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        measure_from = time.monotonic() + warmup
        end = measure_from + seconds
        task = asyncio.ensure_future(drive(url, requests, connections, measure_from, end,
                                           max_requests, ok_prefix))
        await asyncio.sleep(max(0.0, measure_from - time.monotonic()))
        side0 = {name: tree_cpu(p) for name, p in (side or {}).items()}
        cpu0, (busy0, _), split0 = tree_cpu(pids), machine_busy(), thread_split(pids)
        t0 = time.monotonic()
        result = await task
        t1 = time.monotonic()
        cpu1, (busy1, _), split1 = tree_cpu(pids), machine_busy(), thread_split(pids)
        side1 = {name: tree_cpu(p) for name, p in (side or {}).items()}
        window = t1 - t0
        done = len(result["latencies"])
        return {"requests": done, "req_s": done / window,
                "p50_ms": percentile(result["latencies"], 0.5) * 1000,
                "p99_ms": percentile(result["latencies"], 0.99) * 1000,
                "errors": result["errors"], "error_kinds": result["error_kinds"],
                "side_us": {name: (side1[name] - side0[name]) / max(done, 1) * 1e6
                            for name in side1},
                "cpu_us": (cpu1 - cpu0) / max(done, 1) * 1e6,
                "loop_us": (split1[0] - split0[0]) / max(done, 1) * 1e6,
                "threads_us": (split1[1] - split0[1]) / max(done, 1) * 1e6,
                "server_cpu": (cpu1 - cpu0) / window * 100,
                "machine_cpu": (busy1 - busy0) / window * 100}

    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    return uvloop.run(main())


def _line(label: str, row: dict[str, Any]) -> str:
    return (f"single {label:10s} {row['req_s']:8.0f} req/s  p50 {row['p50_ms']:5.1f} ms  "
            f"p99 {row['p99_ms']:5.1f} ms  server CPU {row['cpu_us']:5.0f} µs/request "
            f"(loops {row.get('loop_us', 0):4.0f}, other threads {row.get('threads_us', 0):4.0f}) "
            f"({row['server_cpu']:3.0f} %, machine {row['machine_cpu']:3.0f} %)  "
            f"errors {row['errors']}"
            + (f"  host: Python {row['host_python_ms']:.0f} ms, commit {row['host_commit_us']:.0f}"
               f" µs ({row['host_commit_cpu_us']:.0f} CPU)" if "host_python_ms" in row else "")
            + "".join(f"  {name} CPU {us:5.0f} µs/request"
                      for name, us in row.get("side_us", {}).items())
            + (f"  {row['error_kinds']}" if row.get("error_kinds") else ""))


def _with(row: dict[str, Any], name: str) -> float:
    return float(row["cpu_us"] + row["side_us"][name])


def run_pushgate(args: argparse.Namespace, pythonpath: str | None,
                 side: dict[str, list[int]] | None = None) -> dict[str, Any]:
    extra = {"PYTHONPATH": pythonpath} if pythonpath else {}
    with Gateway("sqlite") as gateway:
        gateway.env.update(extra)
        port = free_port()
        serve = ["serve", "--port", str(port)]
        if args.workers:
            serve += ["--workers", str(args.workers)]
        if args.api_only:
            serve.append("--api-only")
        proc = gateway.start(*serve)
        url = f"http://127.0.0.1:{port}/api/v2/push"
        deadline = time.monotonic() + 60
        import httpx
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the gateway did not become healthy")
            time.sleep(0.1)
        time.sleep(1.0)   # every worker process listening
        requests = requests_for(url, push_bodies(gateway.token), "application/json")
        return run_once(url, tree_pids(proc.pid), requests, args.connections, args.seconds,
                        args.warmup, args.max_requests, SUCCESS, side)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--max-requests", type=int, default=2_000_000)
    parser.add_argument("--workers", type=int, help="serve --workers (default: serve's)")
    parser.add_argument("--api-only", action="store_true", help="serve without dispatch")
    parser.add_argument("--pythonpath", action="append", default=[],
                        help="LABEL=PATH: also run the server from PATH, interleaved")
    parser.add_argument("--target-url", help="drive another gateway's URL instead")
    parser.add_argument("--target-body", default="", help="its body; {number} and {n} filled")
    parser.add_argument("--target-content-type", default="application/x-www-form-urlencoded")
    parser.add_argument("--target-pids", default="", help="comma-separated server pids")
    parser.add_argument("--target-pid", type=int, action="append", default=[],
                        help="a target server pid (with its descendants); repeatable")
    parser.add_argument("--side-pid", action="append", default=[],
                        help="NAME=PID: a shared service whose CPU is reported apart")
    parser.add_argument("--interleave", action="store_true",
                        help="with --target-url: pushgate's default serve and the target in turn")
    parser.add_argument("--target-ok", default="", help="a good answer's first bytes")
    args = parser.parse_args(argv)
    side = {name: tree_pids(int(pid)) for name, _, pid in
            (spec.partition("=") for spec in args.side_pid)}
    variants: list[tuple[str, str | None]] = [("this", None)]
    for spec in args.pythonpath:
        label, _, path = spec.partition("=")
        variants.append((label, path))
    if args.target_url:
        numbers = valid_numbers(NUMBERS)
        bodies = [args.target_body.replace("{number}", numbers[(i * 7919) % NUMBERS])
                  .replace("{n}", str(i)).encode() for i in range(1000)]
        target_requests = requests_for(args.target_url, bodies, args.target_content_type)
        target_pids = [int(pid) for pid in args.target_pids.split(",") if pid] + args.target_pid
        variants = [("pushgate", None)] if args.interleave else []
        variants.append(("target", args.target_url))
    rows: list[dict[str, Any]] = []
    for _ in range(args.repeat):
        for label, path in variants:   # interleaved: one run of each in turn
            load = os.getloadavg()[0]
            host = {f"host_{key}": value for key, value in
                    host_yardstick(tempfile.gettempdir()).items()}
            if label == "target":
                pids = [p for pid in target_pids for p in tree_pids(pid)]
                row = run_once(args.target_url, pids, target_requests, args.connections,
                               args.seconds, args.warmup, args.max_requests,
                               args.target_ok.encode(), side)
            else:
                row = run_pushgate(args, path, side)
            row["label"] = label
            row.update(host)
            row["load"] = (load, os.getloadavg()[0])
            print(_line(label, row) + "  load {:.2f}→{:.2f}".format(*row["load"]), flush=True)
            rows.append(row)
    medians: dict[str, dict[str, Any]] = {}
    if args.repeat > 1:
        for label, _ in variants:
            mine = [r for r in rows if r["label"] == label]
            summary = {"label": label, "errors": sum(r["errors"] for r in mine),
                       "server_cpu": 0.0, "machine_cpu": 0.0,
                       "side_us": {name: median_spread([r["side_us"][name] for r in mine])[0]
                                   for name in side}}
            text = []
            for key in ("req_s", "p50_ms", "p99_ms", "cpu_us", "loop_us", "threads_us",
                        "server_cpu", "machine_cpu", "host_python_ms", "host_commit_us",
                        "host_commit_cpu_us"):
                summary[key], low, high = median_spread([r[key] for r in mine])
                text.append(f"{key} [{low:.1f}–{high:.1f}]")
            print(_line(f"MEDIAN {label}", summary) + "  " + ", ".join(text), flush=True)
            medians[label] = summary
    if "pushgate" in medians and "target" in medians:
        ours, theirs = medians["pushgate"], medians["target"]
        print(f"RATIO pushgate/target: req/s {ours['req_s'] / theirs['req_s']:.2f}×, "
              f"server CPU a request {theirs['cpu_us'] / ours['cpu_us']:.2f}× less"
              + "".join(f", counting {name} too "
                        f"{_with(theirs, name) / _with(ours, name):.2f}× less"
                        for name in side), flush=True)
    return rows


if __name__ == "__main__":
    main()
