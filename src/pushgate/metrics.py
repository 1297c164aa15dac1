"""Prometheus metrics of the sending pipeline, exported by every process (``GET /metrics``).

Counters and histograms are written by the process that makes the change: the dispatcher's
runners (sends, provider errors, send latency), the store's writes (messages reaching a final
state, whichever process moved them: a runner, a provider callback, a phone, the expiry sweep;
counted in the transaction that moves them, from what it already read, so a transaction lost
to an outage and written again counts its moves again) and the webhook deliverer. With
``serve --workers N`` the processes share them through prometheus-client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, set by the parent for its children), so any process answers
``/metrics`` with every process's counts.

Counts made on every push (``api/metrics.py``) are kept in plain process-local numbers
(``CounterTally``, ``HistogramTally``) and added to their metrics by ``flush_tallies``: before
every exposition, every ``TALLY_SECONDS`` while the application runs and when it stops
(``Gateway``), so another process's scrape sees them within about a second. A
prometheus-client increment costs a lock, a pid check and, in multiprocess mode, a write to its
mmapped file: several per push were a visible share of the event loop's time per push.

Gauges of what the store holds (queue depth, webhook backlog, channels up, phones online) are
read at scrape time by the answering process from a snapshot of the store that it refreshes at
most every ``SNAPSHOT_SECONDS``: a scrape never counts a large backlog itself, and several
scrapers in a few seconds cost the store one read.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from pushgate.store.base import Store

__all__ = ["CONTENT_TYPE_LATEST", "exposition"]

# Final states counted in ``pushgate_messages_final_total`` (cancelled is an operator's act).
FINAL_STATUSES = ("delivered", "read", "failed", "refunded", "expired")
SNAPSHOT_SECONDS = 5.0
PHONE_OFFLINE_AFTER = 120.0   # the phone channels' default

MESSAGES_SENT = Counter("pushgate_messages_sent_total",
                        "Messages the provider took (submitted or delivered)", ["channel"])
MESSAGES_FINAL = Counter("pushgate_messages_final_total",
                         "Messages moved into a final state", ["channel", "status"])
WEBHOOK_DELIVERIES = Counter("pushgate_webhook_deliveries_total",
                             "Webhook POSTs (report batches and incoming messages), by result",
                             ["result"])
PROVIDER_ERRORS = Counter("pushgate_provider_errors_total",
                          "Send outcomes carrying a provider error, by its code",
                          ["channel", "code"])
SEND_SECONDS = Histogram(
    "pushgate_send_seconds",
    "Time from a send's start to the provider's answer (an unpaced batch: from the batch's"
    " start)", ["channel"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


#: Longest a tally's counts wait before another process's scrape can see them.
TALLY_SECONDS = 1.0


class CounterTally:
    """Increments of an unlabelled ``Counter``, kept in a plain number until ``flush``."""

    __slots__ = ("counter", "pending")

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.pending = 0
        _TALLIES.append(self)

    def inc(self, amount: int = 1) -> None:
        self.pending += amount

    def flush(self) -> None:
        pending, self.pending = self.pending, 0
        if pending:
            self.counter.inc(pending)


class HistogramTally:
    """Observations of an unlabelled ``Histogram`` (or a label's child), bucketed locally
    (as ``observe`` buckets them: the first bucket whose bound is >= the amount) until
    ``flush``."""

    __slots__ = ("histogram", "bounds", "counts", "sum")

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram
        self.bounds = tuple(histogram._upper_bounds)   # the buckets' bounds, +Inf last
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0
        _TALLIES.append(self)

    def observe(self, amount: float) -> None:
        self.sum += amount
        self.counts[bisect_left(self.bounds, amount)] += 1

    def flush(self) -> None:
        counts, total = self.counts, self.sum
        if any(counts):
            self.counts, self.sum = [0] * len(counts), 0.0
            add_observations(self.histogram, counts, total)


_SEND_SECONDS_TALLIES: dict[int, HistogramTally] = {}


def send_seconds(channel_id: int) -> HistogramTally:
    """The tally of ``SEND_SECONDS`` for one channel: a send's time is observed once a
    message, where each prometheus ``observe`` costs two locked mmap writes in
    multiprocess mode."""
    tally = _SEND_SECONDS_TALLIES.get(channel_id)
    if tally is None:
        tally = HistogramTally(SEND_SECONDS.labels(str(channel_id)))
        _SEND_SECONDS_TALLIES[channel_id] = tally
    return tally


def add_observations(histogram: Histogram, counts: list[int], total: float) -> None:
    """Add to an unlabelled ``histogram`` (or one label's child of a labelled one)
    ``counts[i]`` observations in its bucket ``i`` and
    ``total`` to its sum, as that many ``observe`` calls would, in one increment per bucket
    used.

    prometheus-client has no public call for this: this writes its internals (0.26: the
    value objects ``_sum`` and ``_buckets``, one per bound of ``_upper_bounds``, each
    counting only its own bucket's observations; the exposition sums them). Kept here alone;
    tests/api/test_metrics_tally.py fails if they change.
    """
    histogram._sum.inc(total)
    for value, n in zip(histogram._buckets, counts, strict=True):
        if n:
            value.inc(n)


_TALLIES: list[CounterTally | HistogramTally] = []


def flush_tallies() -> None:
    """Add every tally's pending counts to its metric (this process's)."""
    for tally in _TALLIES:
        tally.flush()


async def flush_tallies_every(seconds: float = TALLY_SECONDS) -> None:
    """Flush the tallies every ``seconds`` until cancelled, and once more then."""
    try:
        while True:
            await asyncio.sleep(seconds)
            flush_tallies()
    finally:
        flush_tallies()


def count_finals(finals: Mapping[tuple[int, str], int]) -> None:
    """Add the store's count of messages moved into each final state, by (channel, state)."""
    for (channel_id, state), n in finals.items():
        if n and state in FINAL_STATUSES:
            MESSAGES_FINAL.labels(str(channel_id), state).inc(n)


def count_moves(moves: Iterable[tuple[int, str]]) -> None:
    """Count messages moved, each given as (channel, new state); the ones into a final
    state count."""
    count_finals(Tally(moves))


def count_errors(channel_id: int, codes: Iterable[str | None]) -> None:
    for code, n in Tally(c for c in codes if c).items():
        PROVIDER_ERRORS.labels(str(channel_id), code).inc(n)


@dataclass
class Snapshot:
    """What the store-read gauges show; ``taken`` is a monotonic time."""

    taken: float = -1e18
    queue: dict[tuple[int, int], int] = field(default_factory=dict)
    webhook_backlog: int = 0
    channels_up: dict[int, bool] = field(default_factory=dict)
    phones_online: dict[int, int] = field(default_factory=dict)


class StoreGauges(Collector):
    """The gauges read from the store, from a snapshot at most ``SNAPSHOT_SECONDS`` old."""

    def __init__(self, store: Store, pull_kinds: Iterable[str]) -> None:
        self.store = store
        # Connector kinds whose phones fetch their messages (their phones online count).
        self.pull_kinds = frozenset(pull_kinds)
        self.snapshot = Snapshot()
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        async with self._lock:   # concurrent scrapes wait for one read
            if time.monotonic() - self.snapshot.taken < SNAPSHOT_SECONDS:
                return
            now = time.time()
            queue = await self.store.queue_depths()
            backlog = (await self.store.outbox_stats())["pending"]
            pull = self.pull_kinds
            channels = await self.store.list_channels()
            online: dict[int, int] = {spec.id: 0 for spec in channels if spec.kind in pull}
            # A phone channel's own threshold (its ``offline_after_seconds``).
            offline_after = {spec.id: float(spec.config.get("offline_after_seconds",
                                                            PHONE_OFFLINE_AFTER))
                             for spec in channels if spec.id in online}
            if online:
                for device in await self.store.list_devices():
                    if (device.channel_id in online
                            and device.online(now, offline_after[device.channel_id])):
                        online[device.channel_id] += 1
            up = {spec.id: not spec.paused and (spec.kind not in pull or online[spec.id] > 0)
                  for spec in channels}
            self.snapshot = Snapshot(time.monotonic(), queue, backlog, up, online)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snap = self.snapshot
        depth = GaugeMetricFamily("pushgate_queue_depth", "Messages queued, by priority"
                                  f" (refreshed at most every {SNAPSHOT_SECONDS:g} s)",
                                  labels=["channel", "priority"])
        for (channel_id, priority), n in sorted(snap.queue.items()):
            depth.add_metric([str(channel_id), str(priority)], n)
        yield depth
        yield GaugeMetricFamily("pushgate_webhook_backlog",
                                "Webhook reports waiting to be delivered",
                                value=snap.webhook_backlog)
        up = GaugeMetricFamily("pushgate_channel_up", "1 when the channel can send: not"
                               " paused and, for a phone channel, a phone online",
                               labels=["channel"])
        for channel_id, ok in sorted(snap.channels_up.items()):
            up.add_metric([str(channel_id)], 1 if ok else 0)
        yield up
        phones = GaugeMetricFamily("pushgate_phones_online", "Phones online, by channel",
                                   labels=["channel"])
        for channel_id, n in sorted(snap.phones_online.items()):
            phones.add_metric([str(channel_id)], n)
        yield phones


def process_registry() -> CollectorRegistry:
    """Every process's counters when several share them (multiprocess mode), else this one's."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


async def exposition(gauges: StoreGauges | None) -> bytes:
    """The ``/metrics`` body: the counters, then the store's gauges (their failing to refresh,
    the database being away, leaves the last snapshot)."""
    flush_tallies()
    body = generate_latest(process_registry())
    if gauges is None:
        return body
    with contextlib.suppress(Exception):   # the counters still answer; /healthz says why
        await gauges.refresh()
    extra = CollectorRegistry(auto_describe=False)
    extra.register(gauges)
    return body + generate_latest(extra)
