"""`make bench`'s store-driver comparison binds its rows the way the store's own INSERT
statement takes them (``store/sqlite/accept.py``): a change to that statement breaks this
test rather than `make bench`."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))
import store_driver  # noqa: E402


def test_the_store_driver_benchmark_runs_the_stores_statement() -> None:
    result = store_driver.main(["--rows", str(store_driver.BATCH), "--repeat", "1"])
    assert set(result) == {"sqlalchemy_core", "sqlite3_executemany", "sqlite3_multirow_500",
                           "store_statement"}
    assert all(median > 0 for median, _, _ in result.values())
