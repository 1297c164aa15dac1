"""Riding out a database outage: what counts as one, capped back-off, and one log line each
for its start and its end.

Every loop of a worker — lease renewal, each channel's claim–send–record lanes and simulated
deliveries, the webhook deliverer, the LISTEN connection — meets the same outage at about the
same moment. They share one ``Outage`` per store (``outage_of``): the first failure logs the
outage with the error's one-line description (no traceback: a connection error is not a bug),
the first success of a call *started* after the outage began logs its end, and everything in
between is silent. A failure of a call started before the last recovery (its answer arrived
late) does not start a new outage, nor does a success of a call started before the outage
end it. Each loop backs off on its own (``Backoff``), so a dead server is not hammered and a
live one is found again within the cap.

It lives in ``store/`` because both ``dispatch/`` and ``webhooks/`` use it and both may import
the store layer (not each other).
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from pushgate.store.errors import StoreUnavailable

log = logging.getLogger("pushgate.store")
# How often a process with no loop of its own checks whether the database is back.
WATCH_EVERY_SECONDS = 1.0

# The first retry after a failure waits about this long; each further one twice as long, up to
# BACKOFF_CAP_SECONDS. Half of each delay is random, so the loops of one process (and the
# workers of a cluster) do not all come back at the same instant.
BACKOFF_FIRST_SECONDS = 0.2
BACKOFF_CAP_SECONDS = 5.0
# How often a back-off wait looks whether its loop was told to stop.
STOP_CHECK_SECONDS = 0.1

# SQLite result codes (the low byte of an extended code) that say "not now" rather than "this
# statement is wrong": busy or locked by another connection, out of memory, I/O error, disk
# full, cannot open the file, locking protocol error.
_SQLITE_TRANSIENT = frozenset({5, 6, 7, 10, 13, 14, 15})


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database is away for now (retry later), not a bug. Both
    stores turn connection errors into ``StoreUnavailable``; a SQLite read on the event loop's
    connection can also raise ``database is locked`` or a disk error as it is."""
    if isinstance(exc, StoreUnavailable):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            return (code & 0xFF) in _SQLITE_TRANSIENT
        text = str(exc)
        return "locked" in text or "disk" in text
    return False


def describe(exc: BaseException) -> str:
    """The error in one line."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Backoff:
    """Capped exponential back-off with jitter, for one loop."""

    def __init__(self, first: float = BACKOFF_FIRST_SECONDS,
                 cap: float = BACKOFF_CAP_SECONDS) -> None:
        self.first = first
        self.cap = cap
        self.failures = 0

    def next(self) -> float:
        """Seconds to wait after one more failure."""
        delay: float = min(self.cap, self.first * 2 ** min(self.failures, 30))
        self.failures += 1
        return delay / 2 + random.uniform(0, delay / 2)

    def reset(self) -> None:
        self.failures = 0


class Outage:
    """The database's availability as the loops of one process see it."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self.log = logger
        # time.monotonic() when the current outage was first seen, or None while all is well.
        self.since: float | None = None
        self.ended_at = float("-inf")
        self.outages = 0
        self._on_recovery: list[Callable[[], Callable[[], None] | None]] = []
        self._watcher: asyncio.Task[None] | None = None

    @property
    def down(self) -> bool:
        return self.since is not None

    def on_recovery(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when an outage ends (e.g. wake every runner: notifications sent
        while the database was away were never heard)."""
        # A bound method is held weakly: a dispatcher that is gone is not kept alive by it.
        if hasattr(callback, "__self__"):
            self._on_recovery.append(weakref.WeakMethod(callback))
        else:
            self._on_recovery.append(lambda: callback)

    def failed(self, exc: BaseException, started: float) -> None:
        """A store call begun at ``started`` (time.monotonic()) failed with ``exc``."""
        if self.since is not None or started < self.ended_at:
            return
        self.since = time.monotonic()
        self.outages += 1
        self.log.warning("database unavailable (%s); retrying with back-off of up to %.0f s",
                         describe(exc), BACKOFF_CAP_SECONDS)

    def watch(self, ping: Callable[[], Awaitable[None]]) -> None:
        """While down, try ``ping`` every ``WATCH_EVERY_SECONDS`` until it answers, which ends
        the outage: a process whose only store calls are requests (``serve --api-only``) has
        no loop that would notice the recovery. One watcher at a time."""
        if self.since is None or (self._watcher is not None and not self._watcher.done()):
            return
        self._watcher = asyncio.get_running_loop().create_task(self._watch(ping))

    async def _watch(self, ping: Callable[[], Awaitable[None]]) -> None:
        while self.since is not None:
            await asyncio.sleep(WATCH_EVERY_SECONDS)
            started = time.monotonic()
            try:
                await ping()
            except Exception as exc:
                if not is_unavailable(exc):
                    self.log.exception("database check failed")
                continue
            self.reached(started)

    def reached(self, started: float) -> None:
        """A store call begun at ``started`` (time.monotonic()) succeeded."""
        since = self.since
        if since is None or started < since:
            return
        now = time.monotonic()
        self.since = None
        self.ended_at = now
        self.log.info("database available again after %.1f s", now - since)
        for ref in self._on_recovery:
            callback = ref()
            if callback is None:
                continue
            try:
                callback()
            except Exception:   # a bug in a callback must not stop the others
                self.log.exception("outage recovery callback failed")


_outages: weakref.WeakKeyDictionary[Any, Outage] = weakref.WeakKeyDictionary()


def outage_of(store: Any) -> Outage:
    """The one ``Outage`` of everything that uses ``store`` in this process."""
    outage = _outages.get(store)
    if outage is None:
        outage = _outages[store] = Outage()
    return outage


async def pause(seconds: float, stopped: Callable[[], bool]) -> None:
    """Sleep ``seconds``, or less if ``stopped()`` becomes true meanwhile."""
    deadline = time.monotonic() + seconds
    while not stopped():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        await asyncio.sleep(min(left, STOP_CHECK_SECONDS))


async def keep_going(
    what: str,
    step: Callable[[], Awaitable[bool]],
    idle: Callable[[], Awaitable[None]],
    stopped: Callable[[], bool],
    outage: Outage,
    survive_bugs: bool = False,
    logger: logging.Logger = log,
) -> None:
    """Until ``stopped()``: run ``step`` (True: it found work, run it again at once; False:
    ``idle()`` first). When the database is away, report it to ``outage`` and back off, then
    go on. Any other error is a bug: with ``survive_bugs`` it is logged with its traceback and
    the loop backs off and goes on (nothing would restart it), else it is raised (the caller
    restarts the loop)."""
    backoff = Backoff()
    while not stopped():
        started = time.monotonic()
        try:
            worked = await step()
        except Exception as exc:
            if is_unavailable(exc):
                outage.failed(exc, started)
            elif survive_bugs:
                logger.exception("%s failed; trying again", what)
            else:
                raise
            await pause(backoff.next(), stopped)
            continue
        outage.reached(started)
        backoff.reset()
        if not worked and not stopped():
            await idle()
