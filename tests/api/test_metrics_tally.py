"""The per-push counts (pushes and messages accepted, the accept-time histogram) are kept in
plain numbers and added to their metrics in one go (``pushgate/metrics.py``): ``/metrics``
shows the same counts as if each push had incremented them, another process's scrape sees
them within about a second (multiprocess mode), and a stopping process adds its last ones."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Histogram
from tests.api.test_metrics import NUMBERS, push, scrape, value

from pushgate import metrics
from pushgate.api import metrics as api_metrics

BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5)


@pytest.fixture
def tally_of() -> Iterator[Any]:
    """``tally_of(histogram)``: a tally no other test's flush touches."""
    made: list[metrics.HistogramTally] = []

    def make(histogram: Histogram) -> metrics.HistogramTally:
        tally = metrics.HistogramTally(histogram)
        metrics._TALLIES.remove(tally)
        made.append(tally)
        return tally

    yield make


def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    return {(s.name, s.labels.get("le", "")): s.value
            for family in registry.collect() for s in family.samples
            if not s.name.endswith("_created")}


def test_a_flushed_tally_equals_one_observe_per_amount(tally_of: Any) -> None:
    # Fails if prometheus-client's histogram internals (``add_observations``) change.
    observed, tallied = CollectorRegistry(), CollectorRegistry()
    direct = Histogram("h", "h", buckets=BUCKETS, registry=observed)
    tally = tally_of(Histogram("h", "h", buckets=BUCKETS, registry=tallied))
    # On the bounds (an amount equal to a bound counts in that bound's bucket), between,
    # below the first, above the last, zero and negative.
    amounts = [*BUCKETS, 0.0, -0.5, 0.0004, 0.0015, 0.03, 0.7, 4.99, 5.01, 100.0, 0.001] * 3
    for amount in amounts:
        direct.observe(amount)
        tally.observe(amount)
    assert samples(tallied)[("h_count", "")] == 0   # nothing before the flush
    tally.flush()
    tally.flush()   # nothing pending: adds nothing
    want, got = samples(observed), samples(tallied)
    assert want.keys() == got.keys()
    for key, expected in want.items():
        if key[0] == "h_sum":
            assert got[key] == pytest.approx(expected)
        else:
            assert got[key] == expected, key
    assert got[("h_count", "")] == len(amounts)


def test_the_accept_tally_buckets_as_its_histogram() -> None:
    assert api_metrics.ACCEPT_SECONDS_TALLY.bounds == (*map(float, BUCKETS), float("inf"))
    assert api_metrics.ACCEPT_SECONDS_TALLY.histogram is api_metrics.ACCEPT_SECONDS


async def test_metrics_show_each_push_at_once(app_client, make) -> None:
    project, token, _ = await make.project(credits="10")
    await make.channel(project.id, application=1)
    client, _gateway = await app_client()
    before = await scrape(client)
    await push(client, token)
    await push(client, token, numbers=NUMBERS[:2])
    after = await scrape(client)   # no wait: the exposition adds what is pending first

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("pushgate_pushes_accepted_total") == 2
    assert moved("pushgate_messages_accepted_total") == 5
    assert moved("pushgate_push_accept_seconds_count") == 2
    assert moved("pushgate_push_accept_seconds_bucket", le="+Inf") == 2
    assert 0 < moved("pushgate_push_accept_seconds_sum") < 60
    cumulative = [value(after, "pushgate_push_accept_seconds_bucket", le=str(float(b)))
                  for b in BUCKETS]
    assert cumulative == sorted(cumulative)


async def test_a_running_application_adds_its_counts_within_a_second(app_client, make) -> None:
    project, token, _ = await make.project(credits="10")
    await make.channel(project.id, application=1)
    client, _gateway = await app_client()

    def pushes() -> float:
        return REGISTRY.get_sample_value("pushgate_pushes_accepted_total") or 0.0

    metrics.flush_tallies()
    before = pushes()
    await push(client, token)
    for _ in range(40):   # no scrape here: the application's timer adds them
        if pushes() > before:
            break
        await asyncio.sleep(0.05)
    assert pushes() == before + 1


async def test_the_timer_adds_pending_counts_when_stopped() -> None:
    def messages() -> float:
        return REGISTRY.get_sample_value("pushgate_messages_accepted_total") or 0.0

    metrics.flush_tallies()
    before = messages()
    task = asyncio.create_task(metrics.flush_tallies_every(3600))
    await asyncio.sleep(0)
    api_metrics.MESSAGES_TALLY.inc(7)
    assert messages() == before
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert messages() == before + 7


# A process in multiprocess mode: counts flushed by its timer are seen by a scrape reading the
# shared files (as another process's would), the exposition adds pending ones first, and the
# ones still pending when it stops are added then.
CHILD = textwrap.dedent("""
    import asyncio, json, sys
    from prometheus_client import CollectorRegistry, multiprocess
    from pushgate import metrics
    from pushgate.api import metrics as api

    def scraped():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return {s.name + s.labels.get("le", ""): s.value
                for family in registry.collect() for s in family.samples}

    def one_push(n, seconds):
        api.PUSHES_TALLY.inc()
        api.MESSAGES_TALLY.inc(n)
        api.ACCEPT_SECONDS_TALLY.observe(seconds)

    async def main():
        timer = asyncio.create_task(metrics.flush_tallies_every(0.05))
        one_push(3, 0.003)
        one_push(1, 0.0007)
        early = scraped()
        await asyncio.sleep(0.3)
        late = scraped()
        one_push(2, 0.3)
        body = (await metrics.exposition(None)).decode()
        one_push(4, 0.004)
        timer.cancel()
        try:
            await timer
        except asyncio.CancelledError:
            pass
        json.dump({"early": early, "late": late, "body": body}, sys.stdout)

    asyncio.run(main())
""")


def test_another_process_sees_the_counts(tmp_path: Path) -> None:
    shared = tmp_path / "prometheus"
    shared.mkdir()
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(shared)})
    assert done.returncode == 0, done.stderr
    child = json.loads(done.stdout)
    assert child["early"].get("pushgate_pushes_accepted_total", 0) == 0
    late = child["late"]
    assert late["pushgate_pushes_accepted_total"] == 2
    assert late["pushgate_messages_accepted_total"] == 4
    assert late["pushgate_push_accept_seconds_count"] == 2
    assert late["pushgate_push_accept_seconds_bucket0.001"] == 1
    assert late["pushgate_push_accept_seconds_bucket0.005"] == 2
    assert late["pushgate_push_accept_seconds_sum"] == pytest.approx(0.0037)
    assert "pushgate_pushes_accepted_total 3.0" in child["body"]
    assert "pushgate_messages_accepted_total 6.0" in child["body"]
    assert 'pushgate_push_accept_seconds_bucket{le="0.5"} 3.0' in child["body"]

    registry = CollectorRegistry()   # this process reads the files the child left
    from prometheus_client import multiprocess
    multiprocess.MultiProcessCollector(registry, path=str(shared))
    final = {(s.name, s.labels.get("le", "")): s.value
             for family in registry.collect() for s in family.samples}
    assert final[("pushgate_pushes_accepted_total", "")] == 4
    assert final[("pushgate_messages_accepted_total", "")] == 10
    assert final[("pushgate_push_accept_seconds_count", "")] == 4
    assert final[("pushgate_push_accept_seconds_bucket", "0.005")] == 3
    assert final[("pushgate_push_accept_seconds_bucket", "+Inf")] == 4
    assert final[("pushgate_push_accept_seconds_sum", "")] == pytest.approx(0.3077)


def test_a_channels_send_times_are_tallied_under_its_label() -> None:
    def seen(channel: str) -> dict[str, float]:
        return {s.name + s.labels.get("le", ""): s.value
                for family in REGISTRY.collect() if family.name == "pushgate_send_seconds"
                for s in family.samples if s.labels.get("channel") == channel}

    tally = metrics.send_seconds(90417)
    assert metrics.send_seconds(90417) is tally   # one tally a channel
    before = seen("90417")
    tally.observe(0.02)
    tally.observe(3.0)
    metrics.send_seconds(90418).observe(0.2)
    metrics.flush_tallies()
    after = seen("90417")

    def moved(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert moved("pushgate_send_seconds_count") == 2
    assert moved("pushgate_send_seconds_sum") == pytest.approx(3.02)
    assert moved("pushgate_send_seconds_bucket0.025") == 1
    assert moved("pushgate_send_seconds_bucket5.0") == 2
    assert seen("90418")["pushgate_send_seconds_count"] >= 1
