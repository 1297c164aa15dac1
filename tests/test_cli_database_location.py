"""A SQLite database that cannot be used: `serve`, `worker`, `migrate` and the management
commands print one line (what path, what is wrong, what to do) and exit 1, no traceback.

The tests run as root here, and root writes through any permission bit. A path under a regular
file fails for root too. For a read-only directory or file the command runs without the
capabilities that override permissions (``setpriv --bounding-set -dac_override,...``), so
the kernel refuses it exactly as it would an ordinary user; as a non-root user the chmod
alone does it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pushgate.store.errors import StoreUnavailable
from pushgate.store.migrate import sqlite_location_problem, upgrade
from pushgate.store.sqlite import SQLiteStore

COMMANDS = [["serve", "--port", "1"], ["worker"], ["migrate"], ["project", "list"]]


def _without_root_powers() -> list[str]:
    """A command prefix under which permission bits bind, or skip if there is none."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: permission bits cannot be tested")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]


def pushgate(*args: str, url: str, prefix: list[str] | None = None,
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*(prefix or []), sys.executable, "-m", "pushgate.cli", *args],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                          env={"PUSHGATE_DATABASE_URL": url, "PATH": "/usr/bin:/bin",
                               "COLUMNS": "60"})


def _assert_one_clear_line(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr             # one line, even on a narrow terminal
    assert "Traceback" not in done.stderr
    assert lines[0].startswith("error: ")
    for word in words:
        assert word in lines[0], lines[0]
    assert "migrate` first?" not in lines[0]        # the old, misleading guess


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_a_path_under_a_regular_file(tmp_path: Path, command: list[str]) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    done = pushgate(*command, url=f"sqlite:///{blocker}/sub/pushgate.db")
    _assert_one_clear_line(done, str(blocker), "is a file, not a directory",
                           "PUSHGATE_DATABASE_URL")


@pytest.mark.parametrize("command", COMMANDS[:2] + COMMANDS[3:], ids=lambda c: c[0])
def test_a_missing_directory_says_migrate_creates_it(tmp_path: Path,
                                                     command: list[str]) -> None:
    done = pushgate(*command, url=f"sqlite:///{tmp_path / 'data' / 'pushgate.db'}")
    _assert_one_clear_line(done, str(tmp_path / "data"), "does not exist", "pushgate migrate")
    assert not (tmp_path / "data").exists()


def test_migrate_creates_a_missing_directory(tmp_path: Path) -> None:
    done = pushgate("migrate", url=f"sqlite:///{tmp_path / 'data' / 'pushgate.db'}")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "data" / "pushgate.db").is_file()


def test_migrate_where_the_directory_cannot_be_created(tmp_path: Path) -> None:
    prefix = _without_root_powers()
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        done = pushgate("migrate", url=f"sqlite:///{parent / 'data' / 'pushgate.db'}",
                        prefix=prefix)
    finally:
        parent.chmod(0o755)
    _assert_one_clear_line(done, "cannot create the database directory", str(parent / "data"),
                           "Permission denied")


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_a_read_only_directory(tmp_path: Path, command: list[str]) -> None:
    prefix = _without_root_powers()
    folder = tmp_path / "data"
    upgrade(f"sqlite:///{folder / 'pushgate.db'}")
    folder.chmod(0o555)
    try:
        done = pushgate(*command, url=f"sqlite:///{folder / 'pushgate.db'}", prefix=prefix)
    finally:
        folder.chmod(0o755)
    _assert_one_clear_line(done, str(folder), "not writable")


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_a_read_only_database_file(tmp_path: Path, command: list[str]) -> None:
    prefix = _without_root_powers()
    path = tmp_path / "pushgate.db"
    upgrade(f"sqlite:///{path}")
    path.chmod(0o444)
    done = pushgate(*command, url=f"sqlite:///{path}", prefix=prefix)
    _assert_one_clear_line(done, str(path), "read-only")


def test_a_missing_file_in_an_existing_directory(tmp_path: Path) -> None:
    done = pushgate("worker", url=f"sqlite:///{tmp_path / 'pushgate.db'}")
    _assert_one_clear_line(done, "does not exist", "run `pushgate migrate` first")
    assert not (tmp_path / "pushgate.db").exists(), "an empty database file was left behind"


# --- the same checks, in process --------------------------------------------------------------
def test_location_problems_name_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert "is a file, not a directory" in str(sqlite_location_problem(f"{blocker}/db.sqlite"))
    assert "does not exist" in str(sqlite_location_problem(f"{tmp_path}/none/db.sqlite"))
    assert "is a directory" in str(sqlite_location_problem(str(tmp_path)))
    assert sqlite_location_problem(f"{tmp_path}/new.db", migrating=True) is None
    assert "run `pushgate migrate` first" in str(sqlite_location_problem(f"{tmp_path}/new.db"))


async def test_the_store_refuses_to_open_with_the_reason(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(StoreUnavailable, match="is a file, not a directory"):
        await SQLiteStore(f"sqlite:///{blocker}/db.sqlite").open()
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    with pytest.raises(StoreUnavailable, match=r"no such table.*run `pushgate migrate` first"):
        await SQLiteStore(f"sqlite:///{empty}").open()
