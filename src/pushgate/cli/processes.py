"""``pushgate serve --workers N``: N API processes on one port, started and stopped together.

Each process is a ``pushgate serve --workers 1 --reuse-port`` child (the single-process path,
unchanged), the first one running the dispatcher and webhook deliverer and the others
``--api-only``, so messages are dispatched by exactly one of them. The kernel spreads
connections among their SO_REUSEPORT sockets. This parent only supervises: SIGTERM or SIGINT
is passed to every child; a child that exits on its own stops the others, as a gateway missing
its dispatcher or part of its capacity should not look healthy; a child still running some
time after being told to stop is killed. The children share their Prometheus counters through
a directory of this parent's (prometheus-client's multiprocess mode,
``PROMETHEUS_MULTIPROC_DIR``; the operator's own if set), so any of them answers ``/metrics``
for all. Pushes accepted by the ``--api-only`` children wake the dispatcher's child at once
through a Unix datagram socket in a private directory of this parent's
(``PUSHGATE_WAKE_SOCKET``, ``dispatch/hints.py``; the operator's own if set): only a hint, the
rows in the store stay the hand-off. On Linux a child is also told to stop if this parent dies
(``PR_SET_PDEATHSIG``), so no orphan keeps the port.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("pushgate")

# A child's own shutdown waits for event streams (5 s) and the dispatcher's in-flight batch.
STOP_GRACE_SECONDS = 20.0
POLL_SECONDS = 0.1


def serve_processes(host: str, port: int, count: int, *, api_only: bool, share: bool) -> int:
    """Run ``count`` API processes on host:port until a signal or a child's exit; the exit code
    for ``serve`` (0 when stopped by a signal and every child stopped cleanly). ``share``
    (``--reuse-port``): other processes may already listen on the port, on purpose."""
    problem = None if share else _port_taken(host, port)
    if problem:
        log.error("cannot listen on %s:%d: %s", host, port, problem)
        return 1
    base = [sys.executable, "-m", "pushgate.cli", "serve", "--workers", "1", "--reuse-port",
            "--host", host, "--port", str(port)]
    children: list[subprocess.Popen[bytes]] = []
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    own_dir = not metrics_dir
    if own_dir:
        metrics_dir = tempfile.mkdtemp(prefix="pushgate-metrics-")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    wake_dir = None
    if not api_only and not os.environ.get("PUSHGATE_WAKE_SOCKET"):
        # The API children hint the dispatcher's child where it listens (dispatch/hints.py).
        wake_dir = tempfile.mkdtemp(prefix="pushgate-wake-")
        env["PUSHGATE_WAKE_SOCKET"] = os.path.join(wake_dir, "dispatcher.sock")
    stopping: list[float] = []   # when the stop began, once it has

    def stop(reason: str) -> None:
        if stopping:
            return
        stopping.append(time.monotonic())
        log.info("%s; stopping %d API processes", reason, sum(c.poll() is None for c in children))
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    def on_signal(sig: int, _frame: FrameType | None) -> None:
        stop(f"{signal.Signals(sig).name} received")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    code = 0
    try:
        for index in range(count):
            args = base + (["--api-only"] if api_only or index > 0 else [])
            children.append(subprocess.Popen(args, stdin=subprocess.DEVNULL, env=env,
                                             preexec_fn=_stop_with_parent()))
        log.info("started %d API processes on http://%s:%d (pids %s; the dispatcher in %s)",
                 count, host, port, ", ".join(str(c.pid) for c in children),
                 "none: --api-only" if api_only else children[0].pid)
        while [child.poll() for child in children].count(None):   # polls every child
            for child in children:
                if not stopping and child.returncode is not None:
                    code = child.returncode if child.returncode > 0 else 1
                    stop(f"API process {child.pid} exited with code {child.returncode}")
            if stopping and time.monotonic() - stopping[0] > STOP_GRACE_SECONDS:
                for child in children:
                    if child.poll() is None:
                        log.warning("API process %d still running %g s after SIGTERM; killing",
                                    child.pid, STOP_GRACE_SECONDS)
                        child.kill()
            time.sleep(POLL_SECONDS)
    finally:
        for child in children:   # an exception here must not leave children behind
            if child.poll() is None:
                child.kill()
                child.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if own_dir:
            shutil.rmtree(str(metrics_dir), ignore_errors=True)
        if wake_dir is not None:
            shutil.rmtree(wake_dir, ignore_errors=True)
    if not code:
        code = max((c.returncode for c in children if c.returncode > 0), default=0)
    return code


def _port_taken(host: str, port: int) -> str | None:
    """Why host:port cannot be ours, if it cannot: the children bind with SO_REUSEPORT, which
    would silently share a port another such process (an older gateway) already listens on;
    a plain bind fails on any listener."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        return str(exc)
    return None


def _stop_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to send the child SIGTERM when this process dies."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    parent = os.getpid()

    def arrange() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:   # the parent died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return arrange
