"""The operator CLI's scripting surface (--json); the rest of the CLI is exercised end to end
in tests/e2e."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
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


def test_channel_add_applies_connector_defaults_and_checks_config(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pushgate.db'}"
    assert pushgate("migrate", url=url).returncode == 0
    assert pushgate("project", "create", "shop", url=url).returncode == 0
    waha = {"base_url": "http://127.0.0.1:3000", "api_key": "k", "hourly_cap": 60,
            "allowed_country_codes": ["+91"], "check_price": "0.001"}
    done = pushgate("channel", "add", "--project", "shop", "--type", "waha", "--application",
                    "10", "--config", json.dumps(waha), "--json", url=url)
    assert done.returncode == 0, done.stderr
    added = json.loads(done.stdout)
    assert (added["delay_ms"], added["jitter_ms"]) == (15000, 30000)   # anti-ban pacing
    assert added["callback_url"].endswith(f"/channels/{added['id']}/callback")
    for bad, why in [({**waha, "api_key": ""}, "api_key"),
                     ({**waha, "allowed_country_codes": ["999"]}, "allowed_country_codes"),
                     ({**waha, "check_price": "-1"}, "check_price"),
                     ({**waha, "sesion": "typo"}, "sesion")]:
        done = pushgate("channel", "add", "--project", "shop", "--type", "waha",
                        "--application", "10", "--config", json.dumps(bad), url=url)
        assert done.returncode == 1 and why in done.stderr, done.stderr
    done = pushgate("channel", "add", "--project", "shop", "--type", "whatsapp_cloud",
                    "--application", "101", "--rate", "5000", "--config", json.dumps({
                        "phone_number_id": "1", "access_token": "t", "app_secret": "s",
                        "verify_token": "v"}), url=url)
    assert done.returncode == 1 and "1000" in done.stderr


def test_channel_add_warns_when_the_application_already_has_a_channel(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pushgate.db'}"
    assert pushgate("migrate", url=url).returncode == 0
    assert pushgate("project", "create", "shop", url=url).returncode == 0

    def add(application: str) -> tuple[dict[str, Any], str]:
        done = pushgate("channel", "add", "--project", "shop", "--application", application,
                        "--json", url=url)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout), " ".join(done.stderr.split())

    first, quiet = add("1")
    assert quiet == ""
    _sms, quiet = add("3")
    assert quiet == ""
    second, warned = add("1")
    assert "warning" in warned
    assert f"channels {first['id']}, {second['id']} all serve application 1" in warned
    assert f"lowest id (now channel {first['id']})" in warned and "channel_id" in warned


def test_serve_keeps_idle_connections_open_as_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn's own 5 s equals httpx's idle limit: a provider's next callback on a kept-alive
    connection could meet the server closing it and be reset (seen in the Cloud API end-to-end
    test: up to 205 of ~1,500 status webhooks). `serve` uses PUSHGATE_KEEP_ALIVE_SECONDS."""
    import uvicorn

    from pushgate import cli
    from pushgate.api.server import ReadyServer

    url = f"sqlite:///{tmp_path / 'pushgate.db'}"
    assert pushgate("migrate", url=url).returncode == 0
    monkeypatch.setenv("PUSHGATE_DATABASE_URL", url)
    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn.Config, "__init__",
                        lambda self, app, **options: seen.update(options))
    monkeypatch.setattr(ReadyServer, "__init__", lambda self, config, ready: None)
    monkeypatch.setattr(ReadyServer, "run", lambda self, sockets=None: None)
    cli.serve(host="127.0.0.1", port=8123, api_only=True, reuse_port=False, workers=1)
    assert seen["timeout_keep_alive"] == 75.0
    monkeypatch.setenv("PUSHGATE_KEEP_ALIVE_SECONDS", "120")
    cli.serve(host="127.0.0.1", port=8123, api_only=True, reuse_port=False, workers=1)
    assert seen["timeout_keep_alive"] == 120.0


def _stored_config(url: str, channel_id: int) -> dict[str, Any]:
    import sqlite3

    path = url.split(":///", 1)[1]
    with sqlite3.connect(path) as conn:
        (raw,) = conn.execute("SELECT config FROM channels WHERE id = ?", (channel_id,)).fetchone()
    return dict(json.loads(raw))


def test_bridge_channels_get_a_callback_secret_printed_with_the_bridge_setting(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pushgate.db'}"
    assert pushgate("migrate", url=url).returncode == 0
    assert pushgate("project", "create", "shop", url=url).returncode == 0
    waha = {"base_url": "http://127.0.0.1:3000", "api_key": "k"}
    done = pushgate("channel", "add", "--project", "shop", "--type", "waha", "--application",
                    "10", "--config", json.dumps(waha), "--json", url=url)
    assert done.returncode == 0, done.stderr
    added = json.loads(done.stdout)
    key = added["webhook_hmac_key"]
    assert len(key) >= 40 and _stored_config(url, added["id"])["webhook_hmac_key"] == key
    assert f'"hmac":{{"key":"{key}"}}' in added["callback_setup"]
    assert added["callback_url"] in added["callback_setup"]

    # The human output shows the secret and the setting too.
    evolution = {"base_url": "http://127.0.0.1:8080", "api_key": "k", "instance": "shop"}
    done = pushgate("channel", "add", "--project", "shop", "--type", "evolution",
                    "--application", "1", "--config", json.dumps(evolution), url=url)
    assert done.returncode == 0, done.stderr
    token = _stored_config(url, added["id"] + 1)["webhook_token"]
    assert token in done.stdout and f"/callback?token={token}" in done.stdout
    assert "/webhook/set/shop" in done.stdout

    # A secret given is kept; an explicit opt-out gets none, and a warning.
    done = pushgate("channel", "add", "--project", "shop", "--type", "waha", "--application",
                    "2", "--config", json.dumps({**waha, "webhook_hmac_key": "mine"}), "--json",
                    url=url)
    assert "webhook_hmac_key" not in json.loads(done.stdout)
    assert _stored_config(url, added["id"] + 2)["webhook_hmac_key"] == "mine"
    done = pushgate("channel", "add", "--project", "shop", "--type", "waha", "--application",
                    "1", "--config", json.dumps({**waha, "insecure_callbacks": True}), url=url)
    assert done.returncode == 0 and "insecure_callbacks is on" in done.stderr
    assert _stored_config(url, added["id"] + 3).get("webhook_hmac_key") is None


def test_callback_secret_fixes_a_channel_stored_without_one(tmp_path: Path) -> None:
    import sqlite3

    url = f"sqlite:///{tmp_path / 'pushgate.db'}"
    assert pushgate("migrate", url=url).returncode == 0
    assert pushgate("project", "create", "shop", url=url).returncode == 0
    done = pushgate("channel", "add", "--project", "shop", "--type", "waha", "--application",
                    "10", "--config", json.dumps({"base_url": "http://127.0.0.1:3000",
                                                  "api_key": "k"}), "--json", url=url)
    channel_id = json.loads(done.stdout)["id"]
    # As a channel added before callback secrets were generated.
    old = {k: v for k, v in _stored_config(url, channel_id).items() if k != "webhook_hmac_key"}
    with sqlite3.connect(url.split(":///", 1)[1]) as conn:
        conn.execute("UPDATE channels SET config = ? WHERE id = ?", (json.dumps(old), channel_id))

    done = pushgate("channel", "callback-secret", str(channel_id), "--json", url=url)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    key = _stored_config(url, channel_id)["webhook_hmac_key"]
    assert answer["webhook_hmac_key"] == key and len(key) >= 40
    assert f"WHATSAPP_HOOK_HMAC_KEY={key}" in answer["callback_setup"]
    # Asked again: the same secret; --rotate: a new one; --insecure: none, opted out.
    again = json.loads(pushgate("channel", "callback-secret", str(channel_id), "--json",
                                url=url).stdout)
    assert again["webhook_hmac_key"] == key
    rotated = json.loads(pushgate("channel", "callback-secret", str(channel_id), "--rotate",
                                  "--json", url=url).stdout)
    assert rotated["webhook_hmac_key"] not in (None, key)
    opened = pushgate("channel", "callback-secret", str(channel_id), "--insecure", url=url)
    assert opened.returncode == 0 and "insecure_callbacks is on" in opened.stderr
    stored = _stored_config(url, channel_id)
    assert stored["insecure_callbacks"] is True and "webhook_hmac_key" not in stored
    done = pushgate("channel", "add", "--project", "shop", "--type", "sandbox", "--json", url=url)
    sandbox = json.loads(done.stdout)["id"]
    refused = pushgate("channel", "callback-secret", str(sandbox), url=url)
    assert refused.returncode == 1 and "no separate callback secret" in refused.stderr


def test_token_list_json_shows_tokens_without_their_secret(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pushgate.db'}"
    assert pushgate("migrate", url=url).returncode == 0
    assert pushgate("project", "create", "shop", url=url).returncode == 0
    created = pushgate("token", "create", "--project", "shop", "--label", "till", "--ip",
                       "10.0.0.7", "--json", url=url)
    assert created.returncode == 0, created.stderr
    done = pushgate("token", "list", "--project", "shop", "--json", url=url)
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    till = [t for t in listed if t["label"] == "till"]
    assert len(till) == 1 and till[0]["ip_allow"] == ["10.0.0.7"]
    assert till[0]["revoked_at"] is None and isinstance(till[0]["created_at"], float)
    assert set(till[0]) == {"id", "label", "ip_allow", "created_at", "revoked_at"}
    assert json.loads(created.stdout)["token"] not in done.stdout
