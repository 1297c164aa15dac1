"""Regression check: a fast subset of the benchmarks against the recorded figures.

Runs accept (1,000-recipient pushes; single-recipient pushes with the light client), dispatch
through the sandbox on SQLite, and the SMPP connector into the fake SMSC, each once and short,
then prints each figure as a ratio of ``bench/baseline.json``. A ratio under ``--warn-below``
(default 0.7: short runs on a shared machine swing by a quarter) prints WARN. It never fails:
the exit status is 0 whatever the figures, so noise cannot break CI; read the WARN lines.

    python bench/check.py              # compare
    python bench/check.py --record     # write the figures of this machine as the baseline
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import accept  # noqa: E402
import smpp as smpp_bench  # noqa: E402

import dispatch  # noqa: E402

BASELINE = Path(__file__).parent / "baseline.json"


def measure(seconds: str) -> dict[str, float]:
    """The subset, as {figure name: value} (higher is better for every figure)."""
    [thousand] = accept.main(["--seconds", seconds, "--sizes", "1000"])
    [single] = accept.main(["--seconds", seconds, "--sizes", "1", "--client", "raw"])
    [drain] = dispatch.main(["--messages", "20000"])
    [smpp] = smpp_bench.main(["--messages", "20000", "--binds", "1"])
    return {
        "accept_1000_messages_s": thousand["messages_s"],
        "accept_1_pushes_s": single["pushes_s"],
        "dispatch_sqlite_messages_s": drain["messages_s"],
        "smpp_1_bind_messages_s": smpp["submitted_messages_s"],
    }


def compare(figures: dict[str, float], baseline: dict[str, Any], warn_below: float) -> int:
    """Print one line per figure; returns how many warned."""
    warned = 0
    recorded = baseline.get("figures", {})
    print(f"baseline recorded {baseline.get('recorded', '?')} on {baseline.get('machine', '?')}")
    for name, value in figures.items():
        before = recorded.get(name)
        if not before:
            print(f"  {name:<28} {value:>10.0f}   (no baseline)")
            continue
        ratio = value / before
        flag = "WARN" if ratio < warn_below else "ok"
        warned += flag == "WARN"
        print(f"  {name:<28} {value:>10.0f}   baseline {before:>10.0f}   ×{ratio:4.2f}  {flag}")
    return warned


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", action="store_true", help="write these figures as baseline")
    parser.add_argument("--seconds", default="3", help="measured seconds per accept case")
    parser.add_argument("--warn-below", type=float, default=0.7)
    args = parser.parse_args(argv)
    figures = measure(args.seconds)
    if args.record:
        import run

        info = run.machine()
        BASELINE.write_text(json.dumps({
            "recorded": time.strftime("%Y-%m-%d"),
            "machine": f"{info['nproc']} × {info['cpu']}, Python {info['python']}",
            "figures": {k: round(v) for k, v in figures.items()}}, indent=1) + "\n")
        print(f"baseline written to {BASELINE}")
        return
    baseline = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}
    warned = compare(figures, baseline, args.warn_below)
    print(f"{warned} figure(s) below ×{args.warn_below} of the baseline" if warned
          else "no figure below the warning ratio")


if __name__ == "__main__":
    main()
