"""Why store/sqlite/ speaks DB-API SQL rather than SQLAlchemy Core on its hot paths.

Inserts N rows (default 100,000) into a freshly migrated `messages` table (every column the
accept path writes, all of the table's indexes) in 1,000-row transactions, three ways:

* SQLAlchemy Core: `conn.execute(messages_table.insert(), list_of_dicts)` in `engine.begin()`;
* raw sqlite3 `executemany` of a one-row INSERT;
* raw sqlite3 multi-row INSERTs of 500 rows per statement;
* the store's own statement (`store.sqlite.accept._insert_messages_sql`): 500 rows per
  statement, the columns shared by a push's rows bound once (9 parameters per row instead of 20).

All three on the same pragmas as the store (WAL, `synchronous=FULL`); the rows (tuples, and the
dicts Core needs) are built before the clock starts. Each method runs `--repeat` times on a fresh
database; prints the median rows/s, the spread and the ratio to Core.

    python bench/store_driver.py [--rows 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, Table, create_engine, event

from pushgate.store.migrate import upgrade
from pushgate.store.sqlite.accept import _insert_messages_sql

sys.path.insert(0, str(Path(__file__).parent))
from common import median_spread  # noqa: E402

COLUMNS = ("id", "push_id", "project_id", "channel_id", "number", "body", "media", "media_kind",
           "reference", "priority", "state", "parts", "segments", "credit_micro", "attempts",
           "resends", "next_attempt_at", "created_at", "updated_at", "expires_at")
BATCH = 1000
PRAGMAS = ("PRAGMA journal_mode = WAL", "PRAGMA synchronous = FULL",
           "PRAGMA cache_size = -65536")


def make_rows(total: int) -> list[tuple[object, ...]]:
    now = time.time()
    return [(1 + i, 1 + i // BATCH, 1, 1, f"9198{i:08d}", f"Dear customer {i}, your bill is due",
             None, None, f"r{i}", 0, "queued", 1, 0, 5000, 0, 0, now, now, now, now + 86400)
            for i in range(total)]


def fresh_db() -> str:
    path = Path(tempfile.mkdtemp(prefix="pushgate-driver-")) / "driver.db"
    upgrade(f"sqlite:///{path}")
    return str(path)


def bench_sqlalchemy(data: list[tuple[object, ...]]) -> float:
    path = fresh_db()
    engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        for pragma in PRAGMAS:
            dbapi_conn.execute(pragma)

    table = Table("messages", MetaData(), autoload_with=engine)
    dicts = [dict(zip(COLUMNS, row, strict=True)) for row in data]
    with engine.connect():   # connect (and run the pragmas) before the clock starts
        pass
    started = time.perf_counter()
    for start in range(0, len(dicts), BATCH):
        with engine.begin() as conn:
            conn.execute(table.insert(), dicts[start:start + BATCH])
    elapsed = time.perf_counter() - started
    engine.dispose()
    shutil.rmtree(Path(path).parent)
    return len(data) / elapsed


def bench_store_sql(data: list[tuple[object, ...]]) -> float:
    path = fresh_db()
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in PRAGMAS:
        conn.execute(pragma)
    # (number, body, media, media_kind, reference, parts, segments, credit_micro) per row;
    # (push_id, project_id, channel_id, priority, now, expires_at, inline media id) once per
    # statement (the ids are SQLite's rowids).
    rows = [(r[4], r[5], r[6], r[7], r[8], r[11], r[12], r[13]) for r in data]
    started = time.perf_counter()
    for start in range(0, len(rows), BATCH):
        first = data[start]
        push_wide = [first[1], first[2], first[3], first[9], first[16], first[19], None]
        conn.execute("BEGIN IMMEDIATE")
        for i in range(start, min(start + BATCH, len(rows)), 500):
            chunk = rows[i:i + 500]
            conn.execute(_insert_messages_sql(len(chunk)),
                         push_wide + [value for row in chunk for value in row])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    shutil.rmtree(Path(path).parent)
    return len(data) / elapsed


def bench_raw(data: list[tuple[object, ...]], multirow: bool) -> float:
    path = fresh_db()
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in PRAGMAS:
        conn.execute(pragma)
    one = "(" + ", ".join("?" * len(COLUMNS)) + ")"
    head = f"INSERT INTO messages ({', '.join(COLUMNS)}) VALUES "
    started = time.perf_counter()
    for start in range(0, len(data), BATCH):
        batch = data[start:start + BATCH]
        conn.execute("BEGIN IMMEDIATE")
        if multirow:
            for i in range(0, len(batch), 500):
                chunk = batch[i:i + 500]
                conn.execute(head + ", ".join([one] * len(chunk)),
                             [value for row in chunk for value in row])
        else:
            conn.executemany(head + one, batch)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    shutil.rmtree(Path(path).parent)
    return len(data) / elapsed


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if not BATCH <= args.rows <= 2_000_000 or not 1 <= args.repeat <= 10:
        parser.error("--rows must be in 1000..2,000,000 and --repeat in 1..10")
    data = make_rows(args.rows)
    methods = {
        "sqlalchemy_core": lambda: bench_sqlalchemy(data),
        "sqlite3_executemany": lambda: bench_raw(data, multirow=False),
        "sqlite3_multirow_500": lambda: bench_raw(data, multirow=True),
        "store_statement": lambda: bench_store_sql(data),
    }
    runs: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.repeat):   # interleaved, so drift hits every method alike
        for name, method in methods.items():
            runs[name].append(method())
    result: dict[str, Any] = {}
    for name, values in runs.items():
        result[name] = median_spread(values)
    base = result["sqlalchemy_core"][0]
    for name, (median, low, high) in result.items():
        print(f"store-driver {name:21s} {median:>9.0f} rows/s (median of {args.repeat}: "
              f"{low:.0f}–{high:.0f})  {median / base:4.2f}x Core", flush=True)
    return result


if __name__ == "__main__":
    main()
