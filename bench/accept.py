"""Accept throughput: pushes of 1, 100, 1,000 and 10,000 recipients from concurrent clients.

For every run of every case it starts `pushgate serve --api-only` (no dispatcher, so accept is
measured alone) on a free 127.0.0.1 port with a fresh SQLite database (migrated, a project with
plenty of credit and a sandbox channel made with the CLI's `--json`; the per-token rate limit
off, up to 10,000 recipients a push). Client processes, each an httpx AsyncClient with
keep-alive connections, send pre-built dynamic pushes (distinct valid numbers, a different text
per entry; several bodies with disjoint numbers, sent in turn: ~20,000 numbers in all, a
customer base the server remembers as valid after their first push; `--numbers 150000` for
numbers it must validate every time) in a closed loop: a warm-up, then
a bounded measured window. Every answer must be HTTP 200 with status 100 and every entry
accepted; anything else counts as an error.

One line per run: recipients/push, clients, pushes/s, messages accepted/s, p50/p99 latency,
errors, and the CPU used in the window by the server process, by the clients and by the whole
machine (100 % = one core), which says who the bottleneck is. With `--repeat N` a summary line
gives the median and the spread (min–max) of the runs.

    python bench/accept.py [--seconds 10] [--sizes 1,100,1000,10000] [--repeat 3]
                           [--processes P --connections C] [--client httpx|raw]
                           [--wait-quiet 60] [--backend sqlite|postgres] [--numbers 20000]
                           [--servers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    Gateway,
    cpu_seconds,
    free_port,
    machine_busy,
    median_spread,
    percentile,
    valid_numbers,
    wait_quiet,
)

#: httpx client processes × connections each, by recipients per push. Small pushes need two
#: processes: one httpx client saturates its core before the server does, and its cost per
#: request grows with the connections in its pool (docs/benchmarks.md).
CLIENTS = {1: (2, 4), 100: (2, 8), 1000: (1, 4), 10000: (1, 2)}
#: The same for the raw client, which one process can drive.
RAW_CLIENTS = {1: (1, 16), 100: (1, 8), 1000: (1, 4), 10000: (1, 2)}
SUCCESS = b'{"status":100,'


def build_body(token: str, size: int, offset: int = 0) -> bytes:
    """A dynamic push: distinct valid numbers, a different text for every entry."""
    numbers = valid_numbers(offset + size)[offset:]
    return orjson.dumps({
        "token": token, "application": "1", "priority": "0", "globalmessage": "",
        "data": [{"number": n, "message": f"Dear customer {i}, your bill of Rs {i % 997} is due",
                  "reference_number": f"r{i}"} for i, n in enumerate(numbers, offset)],
    })


#: Distinct numbers the pushes of a run go to, by default: a business's customer base, which
#: the server's memory of valid numbers holds (``core.numbers.VALID_CACHE_SIZE``, 100,000), so
#: each is validated once. ``--numbers 150000`` exceeds it: every number is validated again.
KNOWN_NUMBERS = 20_000


def build_bodies(token: str, size: int, numbers: int = KNOWN_NUMBERS) -> list[bytes]:
    """Several bodies with disjoint numbers and texts (about ``numbers`` entries in all), sent
    in turn: no two entries of a body, nor two bodies, share a number or a text."""
    count = max(2, min(1000, numbers // size))
    return [build_body(token, size, k * size) for k in range(count)]


def _accepted(content: bytes) -> int:
    """The answer's `accepted` count, found without decoding a 10,000-entry answer."""
    at = content.rfind(b'"accepted":')
    if at < 0:
        return 0
    digits = content[at + 11:at + 20].split(b",", 1)[0]
    return int(digits) if digits.isdigit() else 0


class _RawConnection:
    """A minimal HTTP/1.1 keep-alive client for one connection: pre-built request bytes out,
    status line, Content-Length and body in. About a tenth of httpx's CPU per request, so
    small pushes measure the server rather than the load generator (`--client raw`)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, request: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        try:
            self.writer.write(request)
            head = await self.reader.readuntil(b"\r\n\r\n")
            length = None
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length is None:
                raise ConnectionError("answer without Content-Length")
            return int(head[9:12]), await self.reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            self.close()
            raise ConnectionError("connection failed") from None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _client(base: str, bodies: list[bytes], size: int, connections: int, measure_from: float,
            end: float, kind: str, out: Any) -> None:
    """One client process: `connections` closed loops until `end` (time.monotonic(), which is
    one clock for all processes on Linux); only pushes started after `measure_from` count."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    requests = [b"POST /api/v2/push HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (f"{host}:{port}".encode(), len(b), b)
                for b in bodies]

    async def run() -> dict[str, Any]:
        latencies: list[float] = []
        errors = 0
        accepted = 0
        last_end = measure_from
        cpu: list[float] = []
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        headers = {"Content-Type": "application/json"}
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
            async def loop(turn: int) -> None:
                nonlocal errors, accepted, last_end
                raw = _RawConnection(host, int(port)) if kind == "raw" else None
                while (started := time.monotonic()) < end:
                    turn += 1
                    try:
                        if raw is not None:
                            status, content = await raw.post(requests[turn % len(requests)])
                        else:
                            response = await client.post("/api/v2/push",
                                                         content=bodies[turn % len(bodies)],
                                                         headers=headers)
                            status, content = response.status_code, response.content
                        ok = status == 200 and content.startswith(SUCCESS)
                        count = _accepted(content) if ok else 0
                    except (httpx.HTTPError, ConnectionError):
                        ok, count = False, 0
                    finished = time.monotonic()
                    if started < measure_from:
                        continue
                    latencies.append(finished - started)
                    last_end = max(last_end, finished)
                    accepted += count
                    if not ok or count != size:
                        errors += 1
                if raw is not None:
                    raw.close()

            async def clock() -> None:
                await asyncio.sleep(max(0.0, measure_from - time.monotonic()))
                cpu.append(time.process_time())
                await asyncio.sleep(max(0.0, end - time.monotonic()))
                cpu.append(time.process_time())

            await asyncio.gather(clock(), *(loop(c * len(bodies) // connections)
                                            for c in range(connections)))
        return {"latencies": latencies, "errors": errors, "accepted": accepted,
                "last_end": last_end, "cpu": cpu[1] - cpu[0]}

    out.put(asyncio.run(run()))


def run_once(base: str, server_pids: list[int], bodies: list[bytes], size: int,
             processes: int, connections: int, seconds: float, warmup: float,
             kind: str = "httpx") -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    # Client processes take ~1 s to start; the warm-up begins once they all can have.
    measure_from = time.monotonic() + 2.0 + warmup
    end = measure_from + seconds
    workers = [ctx.Process(target=_client,
                           args=(base, bodies, size, connections, measure_from, end, kind,
                                 out))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    time.sleep(max(0.0, measure_from - time.monotonic()))
    server_cpu0, (busy0, total0) = sum(map(cpu_seconds, server_pids)), machine_busy()
    time.sleep(max(0.0, end - time.monotonic()))
    server_cpu1, (busy1, total1) = sum(map(cpu_seconds, server_pids)), machine_busy()
    results = [out.get(timeout=seconds + warmup + 120) for _ in workers]
    for worker in workers:
        worker.join()
    latencies = [x for r in results for x in r["latencies"]]
    window = max([end] + [r["last_end"] for r in results]) - measure_from
    pushes = len(latencies)
    cores = (total1 - total0) / seconds   # jiffies of all cores per second of wall time
    row: dict[str, Any] = {
        "size": size, "client": kind, "processes": processes,
        "clients": processes * connections, "pushes": pushes, "pushes_s": pushes / window,
        "messages_s": sum(r["accepted"] for r in results) / window,
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "errors": sum(r["errors"] for r in results),
        "server_cpu": (server_cpu1 - server_cpu0) / seconds * 100,
        "client_cpu": sum(r["cpu"] for r in results) / seconds * 100,
        "machine_cpu": (busy1 - busy0) / seconds * 100,
        "cores": round(cores),
    }
    # What else ran on the machine meanwhile (other processes); a busy neighbour spoils a run.
    row["other_cpu"] = max(0.0, row["machine_cpu"] - row["server_cpu"] - row["client_cpu"])
    return row


def _line(label: str, row: dict[str, Any]) -> str:
    return (f"{label} {row['size']:>6} recipients/push {row['clients']:>3} clients "
            f"({row['processes']} {row['client']})  {row['pushes_s']:>8.1f} pushes/s "
            f"{row['messages_s']:>9.0f} messages/s ({row['numbers']} numbers, "
            f"{row['servers']} server{'s' if row['servers'] > 1 else ''})  "
            f"p50 {row['p50_ms']:6.1f} ms  "
            f"p99 {row['p99_ms']:6.1f} ms  errors {row['errors']}  CPU server "
            f"{row['server_cpu']:3.0f} % clients {row['client_cpu']:3.0f} % "
            f"other {row['other_cpu']:3.0f} % (of {row['cores'] * 100} %)")


def run_case(backend: str, size: int, processes: int, connections: int, seconds: float,
             warmup: float, repeat: int, quiet: float = 0.0, kind: str = "httpx",
             numbers: int = KNOWN_NUMBERS, servers: int = 1) -> dict[str, Any]:
    """`repeat` runs, each on a fresh gateway and database; the median of each figure. With
    `quiet` > 0, each run first waits up to that many seconds for an idle machine."""
    runs = []
    for _ in range(repeat):
        if quiet > 0:
            wait_quiet(quiet)
        with Gateway(backend) as gateway:
            if servers == 1:
                base = gateway.serve("--api-only")
            else:   # several API processes on one port (`serve --reuse-port`)
                port = free_port()
                for _ in range(servers):
                    base = gateway.serve("--api-only", "--reuse-port", port=port)
            bodies = build_bodies(gateway.token, size, numbers)   # before the clock starts
            row = run_once(base, [p.pid for p in gateway.servers], bodies, size, processes,
                           connections, seconds, warmup, kind)
        row["numbers"] = numbers
        row["servers"] = servers
        runs.append(row)
        # On PostgreSQL "other" includes the database server itself.
        disturbed = backend == "sqlite" and row["other_cpu"] > 15
        print(_line(f"accept {backend:6s}", row)
              + ("  DISTURBED: other load" if disturbed else ""), flush=True)
    summary: dict[str, Any] = {"size": size, "client": kind, "processes": processes,
                               "numbers": numbers, "servers": servers,
                               "clients": processes * connections, "runs": runs,
                               "errors": sum(r["errors"] for r in runs),
                               "cores": runs[0]["cores"]}
    for key in ("pushes_s", "messages_s", "p50_ms", "p99_ms", "server_cpu", "client_cpu",
                "machine_cpu", "other_cpu"):
        summary[key], summary[key + "_min"], summary[key + "_max"] = median_spread(
            [r[key] for r in runs])
    if repeat > 1:
        print(_line(f"MEDIAN {repeat}     ", summary)
              + f"  [messages/s {summary['messages_s_min']:.0f}–{summary['messages_s_max']:.0f},"
              f" p99 {summary['p99_ms_min']:.1f}–{summary['p99_ms_max']:.1f} ms]", flush=True)
    return summary


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="sqlite", choices=("sqlite", "postgres"))
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured time first")
    parser.add_argument("--sizes", default="1,100,1000,10000")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case (median)")
    parser.add_argument("--processes", type=int, help="client processes (default by size)")
    parser.add_argument("--connections", type=int, help="connections per client process")
    parser.add_argument("--client", default="httpx", choices=("httpx", "raw"),
                        help="httpx.AsyncClient, or a minimal asyncio HTTP/1.1 client")
    parser.add_argument("--numbers", type=int, default=KNOWN_NUMBERS,
                        help="distinct numbers the pushes go to (default: a customer base the "
                             "server remembers as valid; 150000: validated every time)")
    parser.add_argument("--servers", type=int, default=1,
                        help="API processes sharing the port (`serve --api-only --reuse-port`)")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="before each run, wait up to this long for an idle machine")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 120 or not 1 <= args.repeat <= 10:
        parser.error("--seconds must be in (0, 120] and --repeat in 1..10")
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        processes, connections = (RAW_CLIENTS if args.client == "raw" else CLIENTS).get(
            size, (1, 8))
        rows.append(run_case(args.backend, size, args.processes or processes,
                             args.connections or connections, args.seconds, args.warmup,
                             args.repeat, args.wait_quiet, args.client, args.numbers,
                             args.servers))
    return rows


if __name__ == "__main__":
    main()
