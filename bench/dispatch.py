"""Dispatch throughput: how fast workers drain a queue through the sandbox channel.

Queues N messages on a sandbox channel (accepted through the store as pushes of 1,000, exactly
as the API stores them), then starts W `pushgate worker` processes and waits until every message
is `delivered`: claimed (`sending`), sent through the sandbox, recorded as `submitted` and
`delivered`, each transition with its event row. With `delivery_delay` 0 (the default) the
sandbox's send outcome says delivered and one write records both; `--delivery-delay 0.001`
makes the delivery a simulated receipt applied afterwards, the path a real provider's receipts
take. Prints messages/s two ways:

* wall: from starting the worker processes to the last message delivered (includes ~1 s of
  process start-up and the first channel lease);
* drain: from the first claim to the last delivery, from the database's own timestamps
  (what the dispatcher itself sustains);
* CPU: the whole machine's busy CPU time from starting the workers to the last delivery, per
  message (workers with their start-up, the database, this script): what a message costs,
  steadier than the rates when the VM's neighbours change its speed.

`--scheduled N` first adds N messages scheduled a day ahead on the same channel, with lower
ids than the queued ones (one scheduled push accepted through the store, then copied in bulk
by SQL): they wait outside the claim index, so the drain should not notice them (issue 19.3).

    python bench/dispatch.py [--messages 200000] [--workers 1] [--backend sqlite|postgres]
                             [--delivery-delay 0] [--scheduled 0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import Gateway, machine_busy, queue_messages, valid_numbers  # noqa: E402

from pushgate.store.factory import store_for_url  # noqa: E402
from pushgate.store.migrate import sqlite_path  # noqa: E402

DRAIN_TIMEOUT = 300.0
MAX_MESSAGES = 2_000_000


async def _queue(url: str, channel_id: int, project_id: int, count: int,
                 scheduled: int = 0) -> int:
    """Queue ``count`` messages (after ``scheduled`` ones); the smallest queued id."""
    store = store_for_url(url)
    await store.open()
    try:
        channel = await store.get_channel(channel_id)
        assert channel is not None
        if scheduled:
            await _schedule(store, url, channel, project_id, scheduled)
        first = min(await queue_messages(store, channel, project_id, count))
    finally:
        await store.close()
    path = sqlite_path(url)
    if path is not None:
        # Every case starts its drain with the WAL written back (the bulk insert's and the
        # queue's), not left to the drain's first commits.
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return first


SCHEDULE_AHEAD = 86_400.0


async def _schedule(store: Any, url: str, channel: Any, project_id: int, count: int) -> None:
    """``count`` messages scheduled a day ahead: one push of 1,000 accepted through the store
    (send_at), then its rows copied by SQL until the push holds ``count``."""
    from pushgate.core.push import Limits, decode_push, plan_push

    first = min(count, 1000)
    body = decode_push(json.dumps({"data": [
        {"number": n, "message": f"later {i}"} for i, n in enumerate(valid_numbers(first))]}))
    now = time.time()
    accepted = await store.accept_push(project_id, channel, plan_push(body, channel, Limits()),
                                       now, None, now + SCHEDULE_AHEAD)
    if count <= first:
        return
    db = _Db(url)
    try:
        if isinstance(db.conn, sqlite3.Connection):
            columns = [r[1] for r in db.conn.execute("PRAGMA table_info(messages)")
                       if r[1] != "id"]
            series = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
                      f" WHERE i < {count - first}) ")
            source = "n"
        else:
            columns = [r[0] for r in db.conn.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_name = 'messages' AND column_name <> 'id'").fetchall()]
            series = ""
            source = f"generate_series(1, {count - first}) AS n(i)"
        names = ", ".join(columns)
        db.conn.execute(f"{series}INSERT INTO messages ({names}) SELECT {names}"
                        f" FROM messages, {source} WHERE messages.id = {accepted.message_ids[0]}")
        db.conn.commit()
    finally:
        db.close()


class _Db:
    """A plain connection for polling progress (cheaper than the store's report queries)."""

    def __init__(self, url: str) -> None:
        path = sqlite_path(url)
        if path is not None:
            self.conn: Any = sqlite3.connect(path)
        else:
            import psycopg

            self.conn = psycopg.connect(url.split("?", 1)[0], autocommit=True)

    def one(self, sql: str) -> Any:
        return self.conn.execute(sql).fetchone()

    def close(self) -> None:
        self.conn.close()


# Progress is polled with a count over the whole table: often enough to stop soon after the
# drain, seldom enough not to take the database's CPU from the workers being measured.
POLL_SECONDS = 0.5


def run_case(backend: str, messages: int, workers: int,
             delivery_delay: float = 0.0, scheduled: int = 0) -> dict[str, Any]:
    with Gateway(backend, delivery_delay=delivery_delay) as gateway:
        first = asyncio.run(_queue(gateway.url, gateway.channel_id, gateway.project_id,
                                   messages, scheduled))
        # Progress and figures read the drained messages by id range (the scheduled ones
        # have lower ids): a poll over the whole table would cost the machine CPU that grows
        # with the scheduled rows, not with the drain.
        drained = f"id >= {first}"
        db = _Db(gateway.url)
        try:
            started = time.time()
            busy0 = machine_busy()[0]
            for _ in range(workers):
                gateway.start("worker", PUSHGATE_CLAIM_BATCH="1000")
            deadline = time.monotonic() + DRAIN_TIMEOUT
            done = 0
            while time.monotonic() < deadline:
                done = db.one("SELECT count(*) FROM messages"
                              f" WHERE {drained} AND state = 'delivered'")[0]
                if done >= messages:
                    break
                time.sleep(POLL_SECONDS)
            busy = machine_busy()[0] - busy0
            first_claim = db.one(f"SELECT min(first_claim_at) FROM messages WHERE {drained}")[0]
            last = db.one("SELECT max(updated_at) FROM messages"
                          f" WHERE {drained} AND state = 'delivered'")[0]
            other = db.one("SELECT count(*) FROM messages"
                           f" WHERE {drained} AND state <> 'delivered'")[0]
            waiting = db.one("SELECT count(*) FROM messages WHERE state = 'scheduled'")[0]
        finally:
            db.close()
    wall = (last or time.time()) - started
    drain = (last - first_claim) if last and first_claim else float("nan")
    return {"backend": backend, "workers": workers, "delivery_delay": delivery_delay,
            "messages": done, "not_delivered": other, "scheduled": waiting,
            "wall_s": wall, "drain_s": drain, "messages_s": done / wall,
            # All the machine's CPU (workers, database, this script's polling) per message:
            # steadier than the rates on a shared VM, whose neighbours change its speed.
            "cpu_us_per_message": busy / done * 1e6 if done else float("nan"),
            "drain_messages_s": done / drain if drain else float("nan")}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="sqlite", choices=("sqlite", "postgres"))
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--workers", default="1", help="comma-separated, one run each")
    parser.add_argument("--scheduled", type=int, default=0,
                        help="messages scheduled a day ahead on the same channel first")
    parser.add_argument("--delivery-delay", type=float, default=0.0,
                        help="the sandbox's delivery_delay; > 0 delivers by simulated receipts")
    args = parser.parse_args(argv)
    if not 0 < args.messages <= MAX_MESSAGES:
        parser.error(f"--messages must be in 1..{MAX_MESSAGES}")
    if not 0 <= args.scheduled <= MAX_MESSAGES:
        parser.error(f"--scheduled must be in 0..{MAX_MESSAGES}")
    rows = []
    for workers in (int(w) for w in args.workers.split(",")):
        row = run_case(args.backend, args.messages, workers, args.delivery_delay,
                       args.scheduled)
        rows.append(row)
        receipts = " receipts" if args.delivery_delay else ""
        if args.scheduled:
            receipts += f" +{row['scheduled']} scheduled"
        print(f"dispatch {args.backend:6s}{receipts} {workers} worker(s)  "
              f"{row['messages']:>8} delivered "
              f"({row['not_delivered']} not)  wall {row['wall_s']:5.1f} s "
              f"{row['messages_s']:>7.0f} messages/s  drain {row['drain_s']:5.1f} s "
              f"{row['drain_messages_s']:>7.0f} messages/s  "
              f"CPU {row['cpu_us_per_message']:5.1f} µs/message", flush=True)
    return rows


if __name__ == "__main__":
    main()
