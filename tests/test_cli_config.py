"""`pushgate config`: the effective settings from the environment, a `.env` file and the
defaults, secrets masked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pushgate.config import Settings


def config(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pushgate.cli", "config", *args],
                          capture_output=True, text=True, timeout=60, cwd=cwd,
                          env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", **env})


def test_config_json_masks_secrets_and_the_database_password(tmp_path: Path) -> None:
    done = config("--json", cwd=tmp_path,
                  PUSHGATE_DATABASE_URL="postgresql://gw:hunter2@db:5432/pushgate"
                                        "?password=hunter3&pool_max_size=4",
                  PUSHGATE_SECRET_KEY="hunter4", PUSHGATE_PORT="9000")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert set(shown) == set(Settings.model_fields)
    assert shown["database_url"] == \
        "postgresql://gw:***@db:5432/pushgate?password=***&pool_max_size=4"
    assert shown["secret_key"] == "***"
    assert shown["port"] == 9000 and shown["host"] == "127.0.0.1"
    assert "hunter" not in done.stdout


def test_config_reads_dotenv_and_the_environment_wins(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PUSHGATE_PORT=9100\nPUSHGATE_HOST=0.0.0.0\n"
                                   "PUSHGATE_SECRET_KEY=from-the-file\nOTHER_TOOL=x\n")
    done = config("--json", cwd=tmp_path, PUSHGATE_PORT="9200")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert (shown["port"], shown["host"], shown["secret_key"]) == (9200, "0.0.0.0", "***")

    table = config(cwd=tmp_path, PUSHGATE_PORT="9200")
    assert table.returncode == 0, table.stderr
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:4]]
            for line in table.stdout.splitlines() if line.count("│") == 4}
    assert rows["PUSHGATE_PORT"] == ["9200", "environment"]
    assert rows["PUSHGATE_HOST"] == ["0.0.0.0", ".env"]
    assert rows["PUSHGATE_SECRET_KEY"] == ["***", ".env"]
    assert rows["PUSHGATE_CLAIM_BATCH"] == ["1000", "default"]
    assert "from-the-file" not in table.stdout


def test_config_refuses_an_invalid_setting_in_one_line(tmp_path: Path) -> None:
    done = config(cwd=tmp_path, PUSHGATE_PORT="eighty")
    assert done.returncode == 1
    assert "invalid setting" in done.stderr and "Traceback" not in done.stderr
