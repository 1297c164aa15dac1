"""Shared pieces of the benchmarks: a gateway in a temp folder, its CLI, its processes.

Benchmarks talk to 127.0.0.1 only and every loop is bounded in count and time.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

PG_ADMIN_DSN = os.environ.get("PUSHGATE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def valid_numbers(count: int) -> list[str]:
    """Distinct valid Indian mobile numbers."""
    return [f"9198{i:08d}" for i in range(count)]


async def queue_messages(store: Any, channel: Any, project_id: int, count: int) -> list[int]:
    """Accept ``count`` distinct bill alerts on ``channel`` through the store, as pushes of 1,000
    (exactly as the API stores them); returns their message ids."""
    from pushgate.core.push import Limits, decode_push, plan_push

    numbers = valid_numbers(1000)
    ids: list[int] = []
    for start in range(0, count, 1000):
        size = min(1000, count - start)
        body = decode_push(json.dumps({"data": [
            {"number": numbers[i], "message": f"bill {start + i}"} for i in range(size)]}))
        accepted = await store.accept_push(project_id, channel, plan_push(body, channel, Limits()),
                                           time.time(), None)
        ids += accepted.message_ids
    return ids


class Gateway:
    """A pushgate installation in a temp folder, on SQLite or on a fresh PostgreSQL database."""

    def __init__(self, backend: str = "sqlite", delivery_delay: float = 0.0) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pushgate-bench-"))
        self.backend = backend
        self.pg_database: str | None = None
        if backend == "sqlite":
            self.url = f"sqlite:///{self.dir / 'bench.db'}"
        else:
            import psycopg

            self.pg_database = f"pushgate_bench_{secrets.token_hex(4)}"
            with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{self.pg_database}"')
            base = PG_ADMIN_DSN.rsplit("/", 1)[0]
            self.url = f"{base}/{self.pg_database}?pool_max_size=20"
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("PUSHGATE_")},
                    "PUSHGATE_DATABASE_URL": self.url,
                    "PUSHGATE_PUSH_RATE_PER_MINUTE": "0",
                    "PUSHGATE_MAX_RECIPIENTS": "10000",
                    "PUSHGATE_IDLE_POLL_SECONDS": "0.05"}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.server: subprocess.Popen[bytes] | None = None   # the last one started
        self.servers: list[subprocess.Popen[bytes]] = []
        self.cli("migrate")
        project = self.cli_json("project", "create", "bench", "--credits", "100000000")
        self.token = project["token"]
        self.project_id = project["project_id"]
        channel = self.cli_json("channel", "add", "--project", "bench", "--type", "sandbox",
                                "--application", "1", "--price", "0.001",
                                "--config", json.dumps({"delivery_delay": delivery_delay}))
        self.channel_id = channel["id"]

    def cli(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "pushgate.cli", *args], env=self.env,
                              cwd=self.dir, capture_output=True, text=True, timeout=300)
        if done.returncode:
            raise RuntimeError(f"pushgate {' '.join(args)} failed: {done.stderr}")
        return done.stdout

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json"))

    def start(self, *args: str, **extra_env: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "pushgate.cli", *args],
                                env={**self.env, **extra_env}, cwd=self.dir,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def serve(self, *args: str, port: int | None = None) -> str:
        """Start `pushgate serve ARGS` (on ``port``, shared with `--reuse-port`, or a free
        one) and wait until this very process answers its health check."""
        port = port or free_port()
        # One process each (its pid and CPU are what is measured); `--servers` starts more.
        workers = () if "--workers" in args else ("--workers", "1")
        self.server = self.start("serve", "--port", str(port), *workers, *args)
        self.servers.append(self.server)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                # A fresh connection each time: the kernel may hand it to any process sharing
                # the port.
                answer = httpx.get(f"{base}/healthz", timeout=1)
                if answer.status_code == 200 and answer.json().get("pid") == self.server.pid:
                    return base
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the gateway did not become healthy within 30 s")

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)   # a run leaves up to ~1 GB of database
        if self.pg_database:
            import psycopg

            with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{self.pg_database}" WITH (FORCE)')

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process (all its threads) has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: The fixed work of ``host_yardstick``.
YARDSTICK_PYTHON_LOOPS = 20_000
YARDSTICK_COMMITS = 200


def host_yardstick(directory: str | Path, rounds: int = 3) -> dict[str, float]:
    """How fast this host is at this moment at what a push costs most: interpreted Python
    and a durable SQLite commit. On a shared virtual machine the same code's CPU a request
    moves by half within minutes; a run reported with this beside it can be compared with a
    run of another sitting. Fixed work, medians of ``rounds``:

    - ``python_ms``: CPU ms of ``YARDSTICK_PYTHON_LOOPS`` rounds of building a small dict,
      encoding it to JSON and decoding it (the interpreter's speed, no I/O);
    - ``commit_us`` / ``commit_cpu_us``: wall and CPU µs a commit of a one-row ``INSERT``
      in a WAL database with ``synchronous = FULL`` (the ``fdatasync`` every accepted push
      waits for), ``YARDSTICK_COMMITS`` commits in a fresh file in ``directory``.
    """
    python_ms, commit_us, commit_cpu_us = [], [], []
    for _ in range(rounds):
        began = time.process_time()
        for i in range(YARDSTICK_PYTHON_LOOPS):
            item = {"number": f"+9198{i:08d}", "message": "Your code is 123456", "n": i}
            json.loads(json.dumps(item))
        python_ms.append((time.process_time() - began) * 1000)
        path = Path(directory) / f"yardstick-{os.getpid()}.db"
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
            wall, cpu = time.perf_counter(), time.thread_time()
            for i in range(YARDSTICK_COMMITS):
                conn.execute("INSERT INTO t (body) VALUES (?)", (f"message {i}",))
            commit_us.append((time.perf_counter() - wall) / YARDSTICK_COMMITS * 1e6)
            commit_cpu_us.append((time.thread_time() - cpu) / YARDSTICK_COMMITS * 1e6)
        finally:
            conn.close()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
    return {"python_ms": statistics.median(python_ms),
            "commit_us": statistics.median(commit_us),
            "commit_cpu_us": statistics.median(commit_cpu_us)}


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = values[3] + values[4]   # idle + iowait
    return (sum(values) - idle) / tick, sum(values) / tick


def wait_quiet(max_wait: float, threshold: float = 0.15) -> float:
    """Wait (at most `max_wait` s) until the machine is nearly idle — under `threshold` of all
    cores busy over one second — so a neighbour's burst does not spoil a run. Returns the last
    busy share seen."""
    deadline = time.monotonic() + max_wait
    while True:
        busy0, total0 = machine_busy()
        time.sleep(1.0)
        busy1, total1 = machine_busy()
        share = (busy1 - busy0) / max(total1 - total0, 1e-9)
        if share < threshold or time.monotonic() >= deadline:
            return share
        time.sleep(2.0)


def median_spread(values: list[float]) -> tuple[float, float, float]:
    """Median, minimum and maximum."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return median, ordered[0], ordered[-1]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
