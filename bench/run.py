"""`make bench`: every benchmark with bounded defaults (a few minutes in all).

    python bench/run.py            # SQLite accept (1…10,000 recipients), dispatch, store driver
    python bench/run.py --quick    # a fast subset
    python bench/run.py --postgres # also PostgreSQL accept and dispatch with 1, 2, 4 workers

Figures go into docs/benchmarks.md by hand, with the machine and the date.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import accept  # noqa: E402
import store_driver  # noqa: E402

import dispatch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    seconds = "3" if args.quick else "10"
    sizes = "1000" if args.quick else "1,100,1000,10000"
    messages = "20000" if args.quick else "100000"
    accept.main(["--seconds", seconds, "--sizes", sizes])
    dispatch.main(["--messages", messages])
    store_driver.main(["--rows", "20000" if args.quick else "100000"])
    if args.postgres:
        accept.main(["--backend", "postgres", "--seconds", seconds, "--sizes", sizes])
        dispatch.main(["--backend", "postgres", "--messages", messages, "--workers", "1,2,4"])


if __name__ == "__main__":
    main()
