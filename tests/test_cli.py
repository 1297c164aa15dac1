"""The operator CLI's scripting surface (--json); the rest of the CLI is exercised end to end
in tests/e2e."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from alembic.script import ScriptDirectory

from pushgate.store.migrate import alembic_config


def pushgate(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pushgate.cli", *args], capture_output=True,
                          text=True, timeout=60, env={"PUSHGATE_DATABASE_URL": url,
                                                      "PATH": "/usr/bin:/bin"})


def test_migrate_json_reports_the_head_revision(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh' / 'pushgate.db'}"   # the folder is created too
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    for _ in range(2):   # idempotent
        done = pushgate("migrate", "--json", url=url)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["revision"] == head


def test_unmigrated_database_gets_a_helpful_error(tmp_path: Path) -> None:
    done = pushgate("project", "list", url=f"sqlite:///{tmp_path / 'empty.db'}")
    assert done.returncode == 1
    assert "pushgate migrate" in done.stderr
