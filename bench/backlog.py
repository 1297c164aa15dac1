"""A million-message backlog: priority latency, memory, report streaming, claim time.

Every case queues its backlog through the store in-process, as pushes of 10,000 exactly as the
API stores them (much faster than HTTP; the API path is `bench/accept.py`'s), on a sandbox
channel, then:

* latency: the backlog (priority 0) sits on a sandbox channel paced at `--rate` messages/s
  (default 5,000/s, so it keeps draining for the whole measurement); one `pushgate serve`
  (API + dispatcher; `--split`: `serve --api-only` + `pushgate worker`) drains it. Meanwhile
  `--tries` single-recipient priority-1 pushes go through the real API (`POST /api/v2/push`),
  one every `--interval` s. Latency = the message's `sending` event (the claim, the database's
  own timestamp, read afterwards) minus the moment the client had the answer (status 100).
  Also reported: from accept (`created_at`) to claim, from the answer to `submitted` (recorded
  with the batch the message went out in), the backlog's drain rate meanwhile and what was
  left, and the share of the machine other processes used meanwhile. `--rate 0`: unpaced;
  `--claim-batch`: the gateway's PUSHGATE_CLAIM_BATCH.
* memory: the resident memory (VmRSS) of every pushgate process, sampled every 0.5 s from the
  start of the latency case, then while the same channel drains unpaced (its rate set to 0,
  which the dispatcher picks up on its next lease renewal) for `--drain-seconds`; the max.
* report: a 10,000-entry push through the API on a fresh `serve --api-only`, then its
  `POST /api/v2/delivery-report` fetched (streamed by the client) 3 times while the server's
  RSS is sampled every 5 ms: the growth over the RSS before the fetch.
* claim: one claim of 1,000 (`store.claim_messages`, in-process, commit included) with 1,000,
  10,000, 100,000 and 1,000,000 messages queued (up to `--messages`), 5 claims per size, each
  followed by its outcomes (as the dispatcher does, so `sending` stays small); plus the claim's
  SELECT alone on a read connection, and the query plan at the largest size.

    python bench/backlog.py [--messages 1000000] [--quick] [--cases latency,report,claim]
                            [--backend sqlite|postgres] [--rate 5000] [--tries 100]
                            [--interval 0.075] [--drain-seconds 30] [--split] [--repeat 1]

Targets (the performance issue): latency p99 <= 100 ms; max RSS < 250 MB; the report streams
(RSS growth small against its size); claim time flat across backlog sizes.
Bounded: at most 2,000,000 messages, --tries at most 1,000, every wait has a deadline; talks to
127.0.0.1 only; every gateway (temp folder, database) is removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    Gateway,
    cpu_seconds,
    machine_busy,
    median_spread,
    percentile,
    valid_numbers,
    wait_quiet,
)

from pushgate.core.models import SendResult  # noqa: E402
from pushgate.core.policy import RetryPolicy  # noqa: E402
from pushgate.core.push import Limits, decode_push, plan_push  # noqa: E402
from pushgate.store.factory import store_for_url  # noqa: E402
from pushgate.store.migrate import sqlite_path  # noqa: E402

MAX_MESSAGES = 2_000_000
PUSH_SIZE = 10_000
CLAIM_SIZES = (1_000, 10_000, 100_000, 1_000_000)
CLAIMS_PER_SIZE = 5
CLAIM_BATCH = 1000
WAIT_CLAIMED_S = 60.0
REPORT_ENTRIES = 10_000
MIB = 1024 * 1024

# The claim's candidate query, as store/sqlite/queue.py and store/postgres/queue.py run it
# (minus the lock).
# SQLite uses the partial claim index only when the query repeats its predicate (LIVE);
# without it, it cannot use the claim index and slows down as the backlog grows.
LIVE = "state IN ('queued', 'sending')"
CLAIM_SELECT = ("SELECT id FROM messages WHERE channel_id = {p1} AND state = 'queued'"
                f" AND {LIVE}"
                " AND priority >= 0 AND next_attempt_at <= {p2}"
                " ORDER BY priority DESC, id LIMIT 1000")


# --- helpers -----------------------------------------------------------------------------------
async def _queue_async(url: str, channel_id: int, project_id: int, count: int) -> float:
    store = store_for_url(url)
    await store.open()
    started = time.perf_counter()
    try:
        channel = await store.get_channel(channel_id)
        assert channel is not None
        numbers = valid_numbers(PUSH_SIZE)
        done = 0
        while done < count:
            size = min(PUSH_SIZE, count - done)
            body = decode_push(json.dumps({"priority": 0, "data": [
                {"number": numbers[i], "message": f"bill {done + i}"} for i in range(size)]}))
            plan = plan_push(body, channel, Limits(max_recipients=PUSH_SIZE))
            now = time.time()
            await store.accept_push(project_id, channel, plan, now, now + 86_400)
            done += size
    finally:
        await store.close()
    return time.perf_counter() - started


def queue(gateway: Gateway, channel_id: int, count: int) -> float:
    """Queue `count` priority-0 messages on the channel; returns the seconds it took."""
    return asyncio.run(_queue_async(gateway.url, channel_id, gateway.project_id, count))


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


class RssSampler(threading.Thread):
    """Samples the VmRSS of some processes every `period` s; keeps the max per process."""

    def __init__(self, pids: dict[str, int], period: float) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.period = period
        self.max: dict[str, int] = dict.fromkeys(pids, 0)
        self.samples = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            for name, pid in self.pids.items():
                self.max[name] = max(self.max[name], rss_bytes(pid))
            self.samples += 1
            self.halt.wait(self.period)

    def stop(self) -> dict[str, int]:
        self.halt.set()
        self.join(5)
        return self.max


class Db:
    """A plain connection to the gateway's database for polling and reading timestamps."""

    def __init__(self, url: str) -> None:
        path = sqlite_path(url)
        self.sqlite = path is not None
        if path is not None:
            self.conn: Any = sqlite3.connect(path, timeout=30)
        else:
            import psycopg

            self.conn = psycopg.connect(url.split("?", 1)[0], autocommit=True)

    def all(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        if not self.sqlite:
            sql = sql.replace("?", "%s")
        return list(self.conn.execute(sql, params).fetchall())

    def one(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        rows = self.all(sql, params)
        return rows[0] if rows else None

    def close(self) -> None:
        self.conn.close()


def wait_until(check: Any, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return False


def add_paced_channel(gateway: Gateway, rate: float) -> int:
    channel = gateway.cli_json("channel", "add", "--project", "bench", "--type", "sandbox",
                               "--application", "2", "--price", "0.001", "--rate", f"{rate:g}",
                               "--config", '{"delivery_delay": 0}')
    return int(channel["id"])


async def _set_rate(url: str, channel_id: int, rate: float) -> None:
    store = store_for_url(url)
    await store.open()
    try:
        await store.update_channel(channel_id, rate_per_second=rate)
    finally:
        await store.close()


# --- latency + memory --------------------------------------------------------------------------
def run_latency(backend: str, messages: int, rate: float, tries: int, interval: float,
                drain_seconds: float, split: bool, claim_batch: int | None) -> dict[str, Any]:
    with Gateway(backend) as gateway:
        if claim_batch:
            gateway.env["PUSHGATE_CLAIM_BATCH"] = str(claim_batch)
        channel_id = add_paced_channel(gateway, rate)
        queue_s = queue(gateway, channel_id, messages)
        wait_quiet(30)   # a neighbour's burst would spoil the tail
        db = Db(gateway.url)
        try:
            if split:
                base = gateway.serve("--api-only")
                assert gateway.server is not None
                worker = gateway.start("worker")
                pids = {"serve --api-only": gateway.server.pid, "worker": worker.pid}
            else:
                base = gateway.serve()
                assert gateway.server is not None
                pids = {"serve": gateway.server.pid}
            sampler = RssSampler(pids, 0.5)
            sampler.start()
            started = wait_until(lambda: db.one(
                "SELECT 1 FROM messages WHERE channel_id = ? AND state <> 'queued' LIMIT 1",
                (channel_id,)) is not None, 30)
            if not started:
                raise RuntimeError("the backlog did not start draining within 30 s")
            time.sleep(1.0)   # past the first batches: measure the steady drain
            queued_before = db.one("SELECT count(*) FROM messages WHERE channel_id = ?"
                                   " AND state = 'queued'"
                                   f" AND {LIVE}", (channel_id,))[0]
            tries_started = time.monotonic()
            busy0, total0 = machine_busy()
            ours0 = sum(cpu_seconds(pid) for pid in pids.values()) + time.process_time()
            answered: dict[int, float] = {}
            errors = 0
            with httpx.Client(base_url=base, timeout=10) as client:
                next_at = time.monotonic()
                for i in range(tries):
                    next_at += interval
                    body = {"token": gateway.token, "application": "2", "priority": "1",
                            "data": [{"number": "919800000001", "message": f"urgent {i}"}]}
                    reply = client.post("/api/v2/push", json=body)
                    at = time.time()
                    data = reply.json() if reply.status_code == 200 else {}
                    if data.get("status") == 100:
                        answered[int(data["data"][0]["msg_id"])] = at
                    else:
                        errors += 1
                    time.sleep(max(0.0, next_at - time.monotonic()))
            tries_s = time.monotonic() - tries_started
            busy1, total1 = machine_busy()
            ours1 = sum(cpu_seconds(pid) for pid in pids.values()) + time.process_time()
            # Shares of the whole machine (all cores) during the tries: everything busy, and
            # what processes other than the gateway and this script used.
            machine_share = (busy1 - busy0) / max(total1 - total0, 1e-9)
            other_share = max(0.0, (busy1 - busy0) - (ours1 - ours0)) / max(total1 - total0,
                                                                            1e-9)
            backlog_left = db.one("SELECT count(*) FROM messages WHERE channel_id = ?"
                                  " AND state = 'queued' AND priority = 0"
                                  f" AND {LIVE}", (channel_id,))[0]
            paced_rate = (queued_before - backlog_left) / tries_s
            ids = sorted(answered)
            marks = ",".join("?" * len(ids))

            def claimed_rows() -> list[Any]:
                # Each message's first claim and its submission (columns of the message).
                return db.all(
                    "SELECT id, created_at, first_claim_at, submitted_at FROM messages"
                    f" WHERE id IN ({marks}) AND first_claim_at IS NOT NULL"
                    " AND submitted_at IS NOT NULL", tuple(ids))

            wait_until(lambda: len(claimed_rows()) >= len(ids), WAIT_CLAIMED_S, 0.2)
            rows = claimed_rows()
            # Memory: now drain unpaced (the dispatcher restarts the runner with the new rate
            # at its next lease renewal, within channel_lease_seconds / 3).
            drained_from = db.one("SELECT count(*) FROM messages WHERE channel_id = ?"
                                  " AND state = 'queued'"
                                  f" AND {LIVE}", (channel_id,))[0]
            asyncio.run(_set_rate(gateway.url, channel_id, 0))
            wait_until(lambda: db.one("SELECT count(*) FROM messages WHERE channel_id = ?"
                                      " AND state = 'queued'"
                                      f" AND {LIVE}", (channel_id,))[0] == 0,
                       drain_seconds, 0.5)
            queued_end = db.one("SELECT count(*) FROM messages WHERE channel_id = ?"
                                " AND state = 'queued'"
                                f" AND {LIVE}", (channel_id,))[0]
            peak = sampler.stop()
            final_rss = {name: rss_bytes(pid) for name, pid in pids.items()}
        finally:
            db.close()
    answer_to_claim = [(claim - answered[mid]) * 1000 for mid, _created, claim, _sub in rows]
    accept_to_claim = [(claim - created) * 1000 for _mid, created, claim, _sub in rows]
    answer_to_submitted = [(sub - answered[mid]) * 1000 for mid, _created, _claim, sub in rows]
    return {
        "case": "latency", "backend": backend, "messages": messages, "rate": rate,
        "claim_batch": claim_batch, "paced_messages_s": paced_rate,
        "machine_busy": machine_share, "other_busy": other_share,
        "split": split, "queue_s": queue_s, "tries": tries, "answered": len(answered),
        "errors": errors, "claimed": len(rows), "backlog_left": backlog_left,
        "submitted_p50_ms": percentile(answer_to_submitted, 0.50),
        "submitted_p99_ms": percentile(answer_to_submitted, 0.99),
        "p50_ms": percentile(answer_to_claim, 0.50), "p95_ms": percentile(answer_to_claim, 0.95),
        "p99_ms": percentile(answer_to_claim, 0.99),
        "max_ms": max(answer_to_claim, default=float("nan")),
        "accept_p50_ms": percentile(accept_to_claim, 0.50),
        "accept_p99_ms": percentile(accept_to_claim, 0.99),
        "drained_unpaced": drained_from - queued_end, "drain_seconds": drain_seconds,
        "rss_max_mib": {name: value / MIB for name, value in peak.items()},
        "rss_end_mib": {name: value / MIB for name, value in final_rss.items()},
        "rss_samples": sampler.samples,
    }


def print_latency(row: dict[str, Any]) -> None:
    mode = "serve --api-only + worker" if row["split"] else "serve"
    print(f"backlog latency {row['backend']:6s} {row['messages']:>8} queued (in "
          f"{row['queue_s']:.0f} s) at {row['rate']:g}/s (0: unpaced), claim batch "
          f"{row['claim_batch'] or 1000}, {mode}: priority-1 answer->claim "
          f"p50 {row['p50_ms']:.0f} p95 {row['p95_ms']:.0f} p99 {row['p99_ms']:.0f} max "
          f"{row['max_ms']:.0f} ms ({row['claimed']}/{row['tries']} claimed, {row['errors']} "
          f"errors; accept->claim p50 {row['accept_p50_ms']:.0f} p99 "
          f"{row['accept_p99_ms']:.0f} ms; answer->submitted p50 {row['submitted_p50_ms']:.0f}"
          f" p99 {row['submitted_p99_ms']:.0f} ms; backlog drained at "
          f"{row['paced_messages_s']:.0f}/s meanwhile, {row['backlog_left']} still queued; "
          f"machine {row['machine_busy']:.0%} busy, other processes {row['other_busy']:.0%})",
          flush=True)
    rss = ", ".join(f"{name} {value:.0f}" for name, value in row["rss_max_mib"].items())
    print(f"backlog memory  {row['backend']:6s} {row['messages']:>8} queued, paced then "
          f"{row['drained_unpaced']} drained unpaced in <= {row['drain_seconds']:.0f} s: max RSS "
          f"{rss} MiB ({row['rss_samples']} samples every 0.5 s)", flush=True)


# --- delivery report ---------------------------------------------------------------------------
def run_report(backend: str, entries: int) -> dict[str, Any]:
    with Gateway(backend) as gateway:
        base = gateway.serve("--api-only")
        assert gateway.server is not None
        pid = gateway.server.pid
        with httpx.Client(base_url=base, timeout=60) as client:
            body = {"token": gateway.token, "application": "1", "data": [
                {"number": n, "message": f"Dear customer {i}, your bill is due",
                 "reference_number": f"inv-{i}"} for i, n in enumerate(valid_numbers(entries))]}
            data = client.post("/api/v2/push", json=body).json()
            if data.get("status") != 100 or data.get("accepted") != entries:
                raise RuntimeError(f"the {entries}-entry push was not accepted: "
                                   f"{str(data)[:200]}")
            push_id = data["push_id"]
            fetches = []
            for _ in range(3):
                time.sleep(0.5)
                before = rss_bytes(pid)
                sampler = RssSampler({"serve": pid}, 0.005)
                sampler.start()
                started = time.perf_counter()
                size = 0
                chunks = []
                with client.stream("POST", "/api/v2/delivery-report",
                                   json={"token": gateway.token, "push_id": push_id}) as reply:
                    for chunk in reply.iter_bytes():
                        size += len(chunk)
                        chunks.append(chunk)
                elapsed = time.perf_counter() - started
                peak = sampler.stop()["serve"]
                report = json.loads(b"".join(chunks))
                fetches.append({"bytes": size, "items": len(report.get("data", [])),
                                "seconds": elapsed, "rss_before_mib": before / MIB,
                                "rss_peak_mib": peak / MIB,
                                "growth_mib": max(0, peak - before) / MIB})
    return {"case": "report", "backend": backend, "entries": entries, "fetches": fetches,
            "growth_mib_max": max(f["growth_mib"] for f in fetches),
            "growth_mib_first": fetches[0]["growth_mib"]}


def print_report(row: dict[str, Any]) -> None:
    first = row["fetches"][0]
    growths = " / ".join(f"{f['growth_mib']:.1f}" for f in row["fetches"])
    print(f"backlog report  {row['backend']:6s} {row['entries']}-entry delivery report "
          f"({first['items']} items, {first['bytes'] / MIB:.1f} MiB, {first['seconds'] * 1000:.0f}"
          f" ms): server RSS {first['rss_before_mib']:.0f} MiB before, growth while fetching "
          f"{growths} MiB (3 fetches)", flush=True)


# --- claim time --------------------------------------------------------------------------------
async def _claim_sizes(gateway: Gateway, sizes: list[int]) -> list[dict[str, Any]]:
    store = store_for_url(gateway.url)
    await store.open()
    db = Db(gateway.url)
    results = []
    try:
        channel = await store.get_channel(gateway.channel_id)
        assert channel is not None
        numbers = valid_numbers(PUSH_SIZE)
        queued = 0
        claimed_ids = 0
        plan_text = ""
        for size in sizes:
            # Keep `size` queued during the claims: CLAIMS_PER_SIZE batches more than it.
            target = size + CLAIMS_PER_SIZE * CLAIM_BATCH
            while queued < target:
                n = min(PUSH_SIZE, target - queued)
                body = decode_push(json.dumps({"data": [
                    {"number": numbers[i], "message": f"bill {claimed_ids + queued + i}"}
                    for i in range(n)]}))
                plan = plan_push(body, channel, Limits(max_recipients=PUSH_SIZE))
                now = time.time()
                await store.accept_push(gateway.project_id, channel, plan, now, now + 86_400)
                queued += n
            claim_ms, select_ms = [], []
            sql = CLAIM_SELECT.format(p1="?" if db.sqlite else "%s",
                                      p2="?" if db.sqlite else "%s")
            for _ in range(CLAIMS_PER_SIZE):
                started = time.perf_counter()
                db.all(sql, (channel.id, time.time()))
                select_ms.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                batch = await store.claim_messages(channel.id, "bench", CLAIM_BATCH, time.time(),
                                                   60.0)
                claim_ms.append((time.perf_counter() - started) * 1000)
                await store.record_outcomes(
                    "bench", [SendResult.sent(m.id, f"b-{m.id}") for m in batch],
                    time.time(), RetryPolicy())
                queued -= len(batch)
                claimed_ids += len(batch)
            if size == sizes[-1]:
                prefix = "EXPLAIN QUERY PLAN " if db.sqlite else "EXPLAIN "
                plan_rows = db.all(prefix + sql, (channel.id, time.time()))
                plan_text = "; ".join(str(r[-1] if db.sqlite else r[0]) for r in plan_rows)
            results.append({"size": size, "claim_ms": claim_ms, "select_ms": select_ms,
                            "plan": plan_text if size == sizes[-1] else ""})
    finally:
        db.close()
        await store.close()
    return results


def run_claim(backend: str, messages: int, repeat: int) -> dict[str, Any]:
    sizes = [s for s in CLAIM_SIZES if s <= messages]
    runs = []
    for _ in range(repeat):
        with Gateway(backend) as gateway:
            runs.append(asyncio.run(_claim_sizes(gateway, sizes)))
    per_size = []
    for index, size in enumerate(sizes):
        claims = [ms for run in runs for ms in run[index]["claim_ms"]]
        selects = [ms for run in runs for ms in run[index]["select_ms"]]
        per_size.append({"size": size, "claim_ms": median_spread(claims),
                         "select_ms": median_spread(selects), "claims": len(claims)})
    return {"case": "claim", "backend": backend, "sizes": per_size,
            "plan": runs[-1][-1]["plan"], "repeat": repeat}


def print_claim(row: dict[str, Any]) -> None:
    for entry in row["sizes"]:
        median, low, high = entry["claim_ms"]
        s_median, s_low, s_high = entry["select_ms"]
        print(f"backlog claim   {row['backend']:6s} {entry['size']:>8} queued: claim of "
              f"{CLAIM_BATCH} {median:6.1f} ms (median of {entry['claims']}: {low:.1f}–"
              f"{high:.1f}); its SELECT alone {s_median:6.2f} ms ({s_low:.2f}–{s_high:.2f})",
              flush=True)
    print(f"backlog claim   {row['backend']:6s} plan at {row['sizes'][-1]['size']}: "
          f"{row['plan']}", flush=True)


# --- main --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="sqlite", choices=("sqlite", "postgres"))
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100,000 messages, 30 tries")
    parser.add_argument("--cases", default="latency,report,claim")
    parser.add_argument("--rate", type=float, default=5000.0,
                        help="messages/s of the paced backlog channel (latency case)")
    parser.add_argument("--claim-batch", type=int, default=None,
                        help="PUSHGATE_CLAIM_BATCH of the gateway (default: its own, 1,000)")
    parser.add_argument("--tries", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.075, help="seconds between tries")
    parser.add_argument("--drain-seconds", type=float, default=30.0,
                        help="unpaced drain after the tries, for memory (bounded)")
    parser.add_argument("--split", action="store_true",
                        help="serve --api-only + pushgate worker instead of one serve")
    parser.add_argument("--repeat", type=int, default=1, help="runs of every case")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages = min(args.messages, 100_000)
        args.tries = min(args.tries, 30)
        args.drain_seconds = min(args.drain_seconds, 10.0)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if not 1_000 <= args.messages <= MAX_MESSAGES:
        parser.error(f"--messages must be in 1,000..{MAX_MESSAGES}")
    if not 1 <= args.tries <= 1_000 or not 0.01 <= args.interval <= 1.0:
        parser.error("--tries must be in 1..1,000 and --interval in 0.01..1 s")
    if not 0 <= args.rate <= 100_000 or not 0 <= args.drain_seconds <= 300:
        parser.error("--rate must be in 0..100,000 (0: unpaced) and --drain-seconds in 0..300")
    if args.claim_batch is not None and not 1 <= args.claim_batch <= 10_000:
        parser.error("--claim-batch must be in 1..10,000")
    if not 1 <= args.repeat <= 5 or set(cases) - {"latency", "report", "claim"}:
        parser.error("--repeat must be in 1..5; --cases among latency, report, claim")
    if "latency" in cases and args.rate and \
            args.messages < args.rate * args.tries * args.interval * 2:
        print(f"note: {args.messages} messages at {args.rate:g}/s may run out before the "
              f"{args.tries} tries end", flush=True)
    rows: list[dict[str, Any]] = []
    for _ in range(args.repeat):
        if "latency" in cases:
            row = run_latency(args.backend, args.messages, args.rate, args.tries,
                              args.interval, args.drain_seconds, args.split,
                              args.claim_batch)
            print_latency(row)
            rows.append(row)
        if "report" in cases:
            row = run_report(args.backend, REPORT_ENTRIES)
            print_report(row)
            rows.append(row)
    if "claim" in cases:
        row = run_claim(args.backend, args.messages, args.repeat)
        print_claim(row)
        rows.append(row)
    return rows


if __name__ == "__main__":
    main()
