"""Helpers for the multi-process end-to-end tests: real ``pushgate`` subprocesses on 127.0.0.1,
a SQLite file they share, a signature-checking webhook receiver, and bounded waits.

Every subprocess writes its stdout and stderr to a log file in the test's temporary directory;
waits that time out fail with the logs attached, and the ``e2e`` fixture (``conftest.py``)
kills whatever is still running when the test ends and prints the logs when it failed.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

HEALTH_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any ``PUSHGATE_*`` setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGATE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def pushgate_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pushgate.cli", *args]


class Proc:
    """One long-running ``pushgate`` subprocess with its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], cwd: Path,
                 log_path: Path) -> None:
        self.name = name
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(pushgate_command(*args), env=env, cwd=cwd,
                                      stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL)
        self.base_url: str | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def send(self, sig: int) -> None:
        if self.alive:
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if the process still runs after ``timeout`` seconds."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then SIGKILL if it is still running after ``timeout`` seconds."""
        if self.alive:
            self.send(signal.SIGTERM)
            if self.wait(timeout) is None:
                self.send(signal.SIGKILL)
                self.popen.wait(10)
        self._log.close()
        return int(self.popen.returncode)

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class Harness:
    """The world of one end-to-end test: a database (a SQLite file, or a PostgreSQL database
    made for the test), the subprocesses, their logs."""

    def __init__(self, directory: Path, database_url: str | None = None) -> None:
        self.dir = directory
        self.db_path = directory / "pushgate.db"
        self.database_url = database_url or f"sqlite:///{self.db_path}"
        self.procs: list[Proc] = []
        self.cli_log: list[str] = []

    def env(self, **extra: str) -> dict[str, str]:
        """The processes' environment: the test's database, and (unless ``extra`` says
        otherwise) private media and webhook targets allowed, since every fake and receiver
        listens on 127.0.0.1."""
        local = {"PUSHGATE_ALLOW_PRIVATE_MEDIA": "true", "PUSHGATE_ALLOW_PRIVATE_WEBHOOKS": "true"}
        return clean_env(PUSHGATE_DATABASE_URL=self.database_url, **{**local, **extra})

    # --- one-shot commands ----------------------------------------------------------------
    def cli(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 60.0) -> str:
        """Run ``pushgate ARGS`` to completion; returns stdout, fails the test on exit != 0."""
        done = subprocess.run(pushgate_command(*args), env=env or self.env(), cwd=cwd or self.dir,
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        self.cli_log.append(f"$ pushgate {' '.join(args)}  -> exit {done.returncode}\n"
                            f"{done.stdout}{done.stderr}")
        assert done.returncode == 0, (
            f"`pushgate {' '.join(args)}` exited {done.returncode}\n"
            f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}")
        return done.stdout

    def cli_json(self, *args: str, **kwargs: Any) -> Any:
        out = self.cli(*args, "--json", **kwargs)
        try:
            return json.loads(out)
        except json.JSONDecodeError:
            raise AssertionError(
                f"`pushgate {' '.join(args)} --json` printed no JSON:\n{out}") from None

    # --- long-running processes -----------------------------------------------------------
    def start(self, name: str, *args: str, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> Proc:
        proc = Proc(name, list(args), env or self.env(), cwd or self.dir,
                    self.dir / f"{name}-{len(self.procs)}.log")
        self.procs.append(proc)
        return proc

    def serve(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
              port: int | None = None, name: str = "serve") -> Proc:
        """``pushgate serve ARGS`` on a free port, once ``/healthz`` answers ok."""
        port = port or free_port()
        # One process unless the test asks for more: its pid, signals and exit are the server's.
        workers = () if "--workers" in args else ("--workers", "1")
        proc = self.start(name, "serve", "--host", "127.0.0.1", "--port", str(port), *workers,
                          *args, env=env, cwd=cwd)
        proc.base_url = f"http://127.0.0.1:{port}"
        self.wait_healthy(proc)
        return proc

    def wait_healthy(self, proc: Proc, timeout: float = HEALTH_TIMEOUT) -> None:
        assert proc.base_url is not None
        last = "no answer yet"

        def healthy() -> bool:
            nonlocal last
            if not proc.alive:
                raise AssertionError(
                    f"{proc.name} exited with {proc.popen.returncode} before it was healthy\n"
                    f"{self.logs()}")
            try:
                response = httpx.get(f"{proc.base_url}/healthz", timeout=2.0)
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
                return False
            last = f"HTTP {response.status_code} {response.text}"
            return response.status_code == 200 and response.json().get("status") == "ok"

        self.wait_until(healthy, timeout, f"{proc.name} to answer /healthz (last: {last})")

    def stop_all(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(Exception):
                proc.stop(timeout=5)

    # --- looking at the database ----------------------------------------------------------
    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows from the shared database (``?`` placeholders on both backends); SQLite is
        opened read-only, as the pushgate processes own it."""
        if not self.database_url.startswith("sqlite"):
            from tests.conftest import query_database

            return query_database(self.database_url, sql, *params)
        path = self.database_url.split(":///", 1)[1]
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            return [tuple(r) for r in conn.execute(sql, params).fetchall()]
        finally:
            conn.close()

    def state_counts(self) -> dict[str, int]:
        return dict(self.query("SELECT state, count(*) FROM messages GROUP BY state"))

    # --- waiting ----------------------------------------------------------------------------
    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str,
                   interval: float = 0.05, describe: Callable[[], str] | None = None) -> None:
        """Poll ``condition`` until it holds; after ``timeout`` seconds fail with ``what``,
        ``describe()`` and the processes' logs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(interval)
        if condition():
            return
        detail = describe() if describe else ""
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{detail}\n"
                             f"{self.logs()}")

    def logs(self) -> str:
        parts = [f"----- {p.name} (pid {p.pid}, args {p.args}, exit {p.popen.poll()}) -----\n"
                 f"{p.output()[-20000:]}" for p in self.procs]
        if self.cli_log:
            parts.append("----- CLI -----\n" + "\n".join(self.cli_log)[-10000:])
        return "\n".join(parts)


# --- fixtures' building blocks ------------------------------------------------------------------
# Short leases, so a dead or stopped worker's messages and channels come back within seconds.
SHORT_LEASE = 2.0


def worker_env(harness: Harness, worker_id: str, lease: float = SHORT_LEASE) -> dict[str, str]:
    """Environment of a ``pushgate worker`` with a fixed id and short leases."""
    return harness.env(PUSHGATE_WORKER_ID=worker_id,
                       PUSHGATE_MESSAGE_LEASE_SECONDS=str(lease),
                       PUSHGATE_CHANNEL_LEASE_SECONDS=str(lease),
                       PUSHGATE_IDLE_POLL_SECONDS="0.1")


def indian_mobiles(count: int, start: int = 0) -> list[str]:
    """``count`` distinct valid Indian mobile numbers (919876500000, 919876500001, ...)."""
    return [f"9198765{i:05d}" for i in range(start, start + count)]


def project_balance(harness: Harness, name: str) -> Decimal:
    rows = harness.cli_json("project", "list")
    for row in rows:
        if row["name"] == name:
            return Decimal(row["balance"])
    raise AssertionError(f"no project {name!r} in {rows}")


@dataclass
class Queued:
    """What ``queue_messages`` set up."""

    project_id: int
    project_name: str
    token: str
    channel_id: int
    push_id: str
    msg_ids: list[int]
    credits: Decimal
    price: Decimal


def queue_messages(harness: Harness, count: int, rate: str, credits: str = "100",
                   price: str = "0.005") -> Queued:
    """Migrate, create a project and a paced sandbox channel through the CLI, and queue
    ``count`` dynamic messages through the API of a ``serve --api-only`` process (stopped
    before returning, so no dispatcher has touched them)."""
    harness.cli("migrate")
    project = harness.cli_json("project", "create", "crashy", "--credits", credits)
    channel = harness.cli_json("channel", "add", "--project", "crashy", "--type", "sandbox",
                               "--application", "2", "--price", price, "--rate", rate)
    api = harness.serve("--api-only", name="api")
    numbers = indian_mobiles(count)
    response = httpx.post(f"{api.base_url}/api/v2/push", timeout=60, json={
        "token": project["token"], "application": "2", "globalmessage": "",
        "data": [{"number": n, "message": f"queued message {i}", "reference_number": f"r{i}"}
                 for i, n in enumerate(numbers)],
    })
    body = response.json()
    assert response.status_code == 200 and body["status"] == 100, body
    assert body["accepted"] == count, {k: v for k, v in body.items() if k != "data"}
    # uvicorn re-raises the signal after its graceful shutdown: -SIGTERM is a clean stop.
    assert api.stop() in (0, -signal.SIGTERM), harness.logs()
    counts = harness.state_counts()
    assert counts == {"queued": count}, f"an API-only server must not dispatch: {counts}"
    return Queued(project_id=int(project["project_id"]), project_name="crashy",
                  token=project["token"], channel_id=int(channel["id"]),
                  push_id=body["push_id"], msg_ids=[int(e["msg_id"]) for e in body["data"]],
                  credits=Decimal(credits), price=Decimal(price))


@dataclass
class Snapshot:
    """Message ids by state at one moment, and the time of that moment."""

    at: float
    by_state: dict[str, set[int]] = field(default_factory=dict)

    def ids(self, *states: str) -> set[int]:
        return set().union(*(self.by_state.get(s, set()) for s in states))


def snapshot(harness: Harness) -> Snapshot:
    snap = Snapshot(at=time.time())
    for mid, state in harness.query("SELECT id, state FROM messages"):
        snap.by_state.setdefault(state, set()).add(mid)
    return snap


def wait_mid_drain(harness: Harness, worker: Proc, total: int, lease_seconds: float,
                   timeout: float = 30.0) -> None:
    """Wait until the worker has finished some messages and has just claimed a fresh batch:
    some messages are done, some are ``sending`` under a lease taken less than half a second
    ago (a paced batch of one second's worth is then still far from being recorded)."""
    def mid_drain() -> bool:
        if not worker.alive:
            raise AssertionError(f"the worker died early\n{harness.logs()}")
        done = harness.query(
            "SELECT count(*) FROM messages WHERE state IN ('submitted', 'delivered')")[0][0]
        lease = harness.query(
            "SELECT min(lease_until), count(*) FROM messages WHERE state = 'sending'")[0]
        if not (0 < done < total) or not lease[1]:
            return False
        # The batch's lease runs lease_seconds + batch/rate (about 1 s) from its claim.
        claimed_ago = (lease_seconds + 1.0) - (lease[0] - time.time())
        return claimed_ago < 0.5

    harness.wait_until(mid_drain, timeout, "the worker to be in the middle of the drain",
                       interval=0.02, describe=lambda: str(harness.state_counts()))


# --- the webhook receiver -----------------------------------------------------------------------
def signature_ok(secret: str, header: str, raw_body: bytes, tolerance: int = 300) -> bool:
    """The README's verification snippet, written out here rather than imported from pushgate,
    so the test checks the documented contract and not pushgate against itself."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        t = int(fields["t"])
        given = fields["v1"]
    except (ValueError, KeyError):
        return False
    if abs(time.time() - t) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + raw_body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given)


@dataclass
class Post:
    """One POST the receiver got: the HTTP status it answered, and the decoded body."""

    answered: int
    signature_valid: bool
    body: dict[str, Any] | None
    raw: bytes


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 that checks ``X-Pushgate-Signature`` with the project's
    webhook secret, answers 401 to bad signatures, and answers 500 to the first
    ``fail_first`` well-signed POSTs (then 200). Records every POST."""

    def __init__(self, fail_first: int = 0) -> None:
        self.secret: str | None = None
        self.fail_first = fail_first
        self.lock = threading.Lock()
        self.posts: list[Post] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                header = self.headers.get("X-Pushgate-Signature") or ""
                status = receiver._answer(self.path, header, raw)
                payload = b'{"ok":true}' if status == 200 else b'{"ok":false}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="receiver",
                                       daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _answer(self, path: str, header: str, raw: bytes) -> int:
        valid = (path == "/hook" and self.secret is not None
                 and signature_ok(self.secret, header, raw))
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with self.lock:
            if not valid:
                status = 401
            elif sum(1 for p in self.posts if p.answered == 500) < self.fail_first:
                status = 500
            else:
                status = 200
            self.posts.append(Post(status, valid, body, raw))
        return status

    def accepted_reports(self) -> list[dict[str, Any]]:
        """The reports of every POST answered 200, in arrival order."""
        with self.lock:
            return [item for p in self.posts if p.answered == 200 and p.body
                    for item in p.body["data"]]

    def accepted_posts(self) -> list[Post]:
        with self.lock:
            return [p for p in self.posts if p.answered == 200]

    def all_posts(self) -> list[Post]:
        with self.lock:
            return list(self.posts)

    def delivered_ids(self) -> set[str]:
        return {r["msg_id"] for r in self.accepted_reports() if r.get("status") == 1}
