"""`bench/single.py` prints the host's speed beside each run (``common.host_yardstick``): it
must measure durable commits in the folder it is given and leave nothing behind there."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))
import common  # noqa: E402


def test_the_yardstick_commits_durably_in_the_folder_and_cleans_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folders: list[Path] = []
    connect = sqlite3.connect

    def watching(path: Path, *args: object, **kwargs: object) -> sqlite3.Connection:
        conn = connect(path, *args, **kwargs)
        folders.append(Path(path).parent)
        return conn

    monkeypatch.setattr(sqlite3, "connect", watching)
    figures = common.host_yardstick(tmp_path, rounds=1)
    assert set(figures) == {"python_ms", "commit_us", "commit_cpu_us"}
    assert all(value > 0 for value in figures.values())
    assert folders == [tmp_path]
    assert list(tmp_path.iterdir()) == []
