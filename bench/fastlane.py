"""Fast lane: from a push's answer to the channel's ``send``, one message at a time.

Runs the real ``pushgate serve`` (default ``--workers``: one API process per CPU, the dispatcher
in the first) on SQLite, and with ``--postgres`` also on PostgreSQL, with a sandbox channel and
the default ``PUSHGATE_IDLE_POLL_SECONDS``. It sends ``--count`` pushes of one recipient each,
one every 1/``--rate`` seconds (the channel idle between them: each is sent well before the
next comes), each on a new connection so the kernel spreads them over the API processes as it
spreads clients. For each it takes the moment its answer arrived (``time.monotonic``) and the
moment the sandbox connector was asked to send it, which the gateway's processes write to a file
through ``bench/send_probe/sitecustomize.py`` (bench-only, put on their ``PYTHONPATH``;
CLOCK_MONOTONIC is one clock for every process of the machine). It prints p50/p99/max of
send − answer in ms (negative: the message was sent before its answer reached the client).

``--code DIR`` runs the gateway from another source tree (``git archive <rev> | tar -x -C
DIR``; its ``src`` goes first on ``PYTHONPATH``) to compare with an older version, and
``--interleave DIR`` alternates runs of this tree and DIR (``--repeat`` each), so a neighbour's
load spoils both alike.

    python bench/fastlane.py [--count 300] [--rate 25] [--repeat 3] [--postgres]
                             [--interleave /tmp/bench_old]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).parent))
from common import Gateway, free_port, median_spread, percentile, valid_numbers  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROBE = ROOT / "bench" / "send_probe"
MAX_COUNT = 5000


def run_once(backend: str, code: Path | None, count: int, rate: float,
             workers: int | None) -> dict[str, Any]:
    src = (code / "src") if code else ROOT / "src"
    log_path = Path(tempfile.mkstemp(prefix="pushgate-sends-")[1])
    saved = os.environ.get("PYTHONPATH")
    # The gateway's own CLI (migrate, project create) must run the same code.
    os.environ["PYTHONPATH"] = os.pathsep.join([str(src), str(PROBE)])
    try:
        with Gateway(backend) as gateway:
            gateway.env.pop("PUSHGATE_IDLE_POLL_SECONDS", None)   # the default, as deployed
            gateway.env["PUSHGATE_BENCH_SEND_LOG"] = str(log_path)
            port = free_port()
            args = ["serve", "--port", str(port)]
            if workers:
                args += ["--workers", str(workers)]
            gateway.start(*args)
            base = f"http://127.0.0.1:{port}"
            wait_healthy(base)
            numbers = valid_numbers(count)
            answered: dict[str, float] = {}
            gap = 1.0 / rate
            # No keep-alive: each push on a new connection, spread over the API processes.
            with httpx.Client(base_url=base, timeout=10,
                              limits=httpx.Limits(max_keepalive_connections=0)) as client:
                # Warm up: the first pushes open connections, load the channel, start runners.
                for i in range(10):
                    push(client, gateway.token, f"9197{i:08d}")
                    time.sleep(gap)
                next_at = time.monotonic()
                for number in numbers:
                    push(client, gateway.token, number)
                    answered[number] = time.monotonic()
                    next_at += gap
                    time.sleep(max(0.0, next_at - time.monotonic()))
            deadline = time.monotonic() + 10
            sent: dict[str, float] = {}
            while time.monotonic() < deadline:
                sent = read_sends(log_path)
                if all(n in sent for n in numbers):
                    break
                time.sleep(0.2)
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    log_path.unlink(missing_ok=True)
    delays = [(sent[n] - answered[n]) * 1000 for n in numbers if n in sent]
    return {"backend": backend, "code": str(code or "this tree"), "count": count,
            "rate": rate, "sent": len(delays), "p50_ms": percentile(delays, 0.5),
            "p99_ms": percentile(delays, 0.99), "max_ms": max(delays, default=float("nan"))}


def push(client: httpx.Client, token: str, number: str) -> None:
    body = orjson.dumps({"token": token, "application": "1", "priority": "0",
                         "globalmessage": "", "data": [{"number": number, "message": "hi"}]})
    answer = client.post("/api/v2/push", content=body,
                         headers={"Content-Type": "application/json"})
    answer.raise_for_status()


def read_sends(path: Path) -> dict[str, float]:
    sent: dict[str, float] = {}
    for line in path.read_text().splitlines():
        at, _, number = line.partition(" ")
        sent.setdefault(number, float(at))
    return sent


def wait_healthy(base: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                time.sleep(0.5)   # the other API processes come up alongside
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError("the gateway did not become healthy within 30 s")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--rate", type=float, default=25.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--workers", type=int, help="serve --workers (default: serve's own)")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--code", type=Path, help="run the gateway from this source tree")
    parser.add_argument("--interleave", type=Path,
                        help="alternate runs of this tree and this other source tree")
    args = parser.parse_args(argv)
    count = min(args.count, MAX_COUNT)
    codes: list[Path | None] = [args.code]
    if args.interleave:
        codes = [None, args.interleave]
    backends = ["sqlite"] + (["postgres"] if args.postgres else [])
    results: list[dict[str, Any]] = []
    for backend in backends:
        for _ in range(args.repeat):
            for code in codes:
                result = run_once(backend, code, count, args.rate, args.workers)
                results.append(result)
                print(f"fastlane {backend:8} {result['code']:18} sent {result['sent']}/{count}"
                      f"  p50 {result['p50_ms']:7.2f} ms  p99 {result['p99_ms']:7.2f} ms"
                      f"  max {result['max_ms']:7.2f} ms", flush=True)
        for code in codes:
            mine = [r for r in results if r["backend"] == backend
                    and r["code"] == str(code or "this tree")]
            if len(mine) > 1:
                p50 = median_spread([r["p50_ms"] for r in mine])[0]
                p99 = median_spread([r["p99_ms"] for r in mine])[0]
                top = median_spread([r["max_ms"] for r in mine])[0]
                print(f"fastlane {backend:8} {str(code or 'this tree'):18} median of"
                      f" {len(mine)}: p50 {p50:.2f} ms  p99 {p99:.2f} ms  max {top:.2f} ms",
                      flush=True)
    return results


if __name__ == "__main__":
    main()
