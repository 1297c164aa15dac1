"""The log configuration of `serve` and `worker`, and `serve --workers` refusing a taken port,
without starting a gateway."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pushgate.cli.serve import store_location
from pushgate.config import Settings
from pushgate.logs import JsonFormatter, logging_config


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.getLogger("pushgate.test").makeRecord(
        "pushgate.test", logging.WARNING, __file__, 1, message, args, None, extra=extra)
    return made


def test_a_json_line_carries_the_ids_passed_with_extra() -> None:
    line = json.loads(JsonFormatter().format(record("channel %s: %s", 7, "down",
                                                    channel_id=7, push_id=12)))
    assert line["message"] == "channel 7: down"
    assert (line["level"], line["logger"]) == ("WARNING", "pushgate.test")
    assert (line["channel_id"], line["push_id"]) == (7, 12)
    assert line["time"].endswith("+00:00") and "T" in line["time"]


def test_a_traceback_stays_inside_its_json_line() -> None:
    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        made = record("failed")
        made.exc_info = sys.exc_info()
    text = JsonFormatter().format(made)
    assert "\n" not in text
    assert "RuntimeError: a bug" in json.loads(text)["exception"]


def test_log_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUSHGATE_LOG_FORMAT", "JSON")
    monkeypatch.setenv("PUSHGATE_LOG_LEVEL", "debug")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (settings.log_format, settings.log_level) == ("json", "DEBUG")
    config = logging_config(settings)
    assert config["formatters"]["pushgate"] == {"()": "pushgate.logs.JsonFormatter"}
    assert config["loggers"]["uvicorn.error"]["level"] == logging.WARNING
    monkeypatch.setenv("PUSHGATE_LOG_LEVEL", "loud")
    with pytest.raises(ValueError, match="not a log level"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_the_store_location_names_no_credentials() -> None:
    assert store_location("sqlite:///./data/pushgate.db") == "sqlite ./data/pushgate.db"
    assert store_location("postgresql://pg:secret@db.internal:5433/push?password=x") == \
        "postgresql db.internal:5433/push"


def test_serve_workers_refuses_a_port_already_listened_on(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pushgate.db'}"
    env = {"PUSHGATE_DATABASE_URL": url, "PATH": "/usr/bin:/bin", "COLUMNS": "60"}
    command = [sys.executable, "-m", "pushgate.cli"]
    assert subprocess.run([*command, "migrate"], env=env, capture_output=True,
                          timeout=60).returncode == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([*command, "serve", "--workers", "2", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 1, done.stderr
    assert "cannot listen on 127.0.0.1" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
