"""`make bench`'s in-process push budget (``bench/push_path.py``) runs every variant through
the real push handler: a change to the handler's or the store's signatures breaks this test
rather than `make bench`."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))
import push_path  # noqa: E402


def test_the_push_path_benchmark_measures_every_variant() -> None:
    summary = push_path.main(["--pushes", "100", "--repeat", "1"])
    assert set(summary) == set(push_path.VARIANTS)
    assert all(row["loop_us"] > 0 and row["pushes_s"] > 0 for row in summary.values())
