"""Why store/sqlite.py speaks DB-API SQL rather than SQLAlchemy Core on its hot paths.

Inserts 100,000 rows shaped like `messages` in 1,000-row transactions three ways: SQLAlchemy Core
`conn.execute(table.insert(), dicts)`, raw sqlite3 `executemany`, and raw multi-row INSERTs of
500 rows (what the store does). Prints rows/s and the ratios.

    python bench/store_driver.py [--rows 100000]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

from sqlalchemy import MetaData, Table, create_engine

from pushgate.store.migrate import upgrade

COLUMNS = ("id", "push_id", "project_id", "channel_id", "number", "body", "media", "media_kind",
           "reference", "priority", "state", "parts", "segments", "credit_micro", "attempts",
           "resends", "next_attempt_at", "created_at", "updated_at", "expires_at")


def rows(start: int, count: int) -> list[tuple[object, ...]]:
    now = time.time()
    return [(start + i, 1, 1, 1, f"9198{i:08d}", f"Dear customer {i}, your bill is due", None,
             None, f"r{i}", 0, "queued", 1, 0, 5000, 0, 0, now, now, now, now + 86400)
            for i in range(count)]


def fresh_db() -> str:
    path = Path(tempfile.mkdtemp()) / "driver.db"
    upgrade(f"sqlite:///{path}")
    return str(path)


def bench_sqlalchemy(total: int, batch: int) -> float:
    engine = create_engine(f"sqlite:///{fresh_db()}")
    table = Table("messages", MetaData(), autoload_with=engine)
    started = time.perf_counter()
    for start in range(1, total + 1, batch):
        data = [dict(zip(COLUMNS, row, strict=True)) for row in rows(start, batch)]
        with engine.begin() as conn:
            conn.execute(table.insert(), data)
    return total / (time.perf_counter() - started)


def _raw(multirow: bool, total: int, batch: int) -> float:
    conn = sqlite3.connect(fresh_db(), isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    one = "(" + ", ".join("?" * len(COLUMNS)) + ")"
    head = f"INSERT INTO messages ({', '.join(COLUMNS)}) VALUES "
    started = time.perf_counter()
    for start in range(1, total + 1, batch):
        data = rows(start, batch)
        conn.execute("BEGIN IMMEDIATE")
        if multirow:
            for i in range(0, batch, 500):
                chunk = data[i:i + 500]
                conn.execute(head + ", ".join([one] * len(chunk)),
                             [value for row in chunk for value in row])
        else:
            conn.executemany(head + one, data)
        conn.execute("COMMIT")
    return total / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args(argv)
    result = {
        "sqlalchemy_core": bench_sqlalchemy(args.rows, 1000),
        "sqlite3_executemany": _raw(False, args.rows, 1000),
        "sqlite3_multirow": _raw(True, args.rows, 1000),
    }
    base = result["sqlalchemy_core"]
    for name, value in result.items():
        print(f"store-driver {name:20s} {value:>10.0f} rows/s  ({value / base:4.2f}x Core)",
              flush=True)
    return result


if __name__ == "__main__":
    main()
