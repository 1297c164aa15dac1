"""`pushgate project create --webhook` and `pushgate project webhook [--incoming]` refuse
non-http(s) URLs always, and non-public targets unless PUSHGATE_ALLOW_PRIVATE_WEBHOOKS=true.
(No URL here needs DNS: literals and `localhost` are judged without it.)"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from pushgate.cli import app

PRIVATE = ["http://127.0.0.1:9/hook", "http://169.254.169.254/latest/", "http://[::1]/hook",
           "http://2130706433/hook", "http://0x7f.1/hook", "http://10.0.0.1./hook",
           "https://a@192.168.1.10/hook", "http://[::ffff:127.0.0.1]/hook",
           "http://localhost:8080/hook"]
NOT_HTTP = ["ftp://93.184.216.34/hook", "file:///etc/passwd", "gopher://93.184.216.34/",
            "javascript:alert(1)", "http://93.184.216.34\\@127.0.0.1/hook"]


def pushgate(*args: str, url: str, allow: bool = False) -> SimpleNamespace:
    """The CLI in-process (a subprocess per call would take a second each)."""
    env = {"PUSHGATE_DATABASE_URL": url,
           "PUSHGATE_ALLOW_PRIVATE_WEBHOOKS": "true" if allow else "false"}
    result = CliRunner().invoke(app, list(args), env=env)
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout,
                           stderr=result.stderr)


@pytest.fixture
def database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'pushgate.db'}"
    assert pushgate("migrate", url=url).returncode == 0
    return url


def _projects(url: str) -> list[dict[str, object]]:
    done = pushgate("project", "list", "--json", url=url)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_private_and_non_http_webhooks_are_refused_by_default(database: str) -> None:
    for hook in PRIVATE + NOT_HTTP:
        done = pushgate("project", "create", "shop", "--webhook", hook, url=database)
        assert done.returncode == 1, (hook, done.stdout)
        assert "refused" in done.stderr, done.stderr
    assert _projects(database) == []   # nothing was created
    assert "PUSHGATE_ALLOW_PRIVATE_WEBHOOKS=true" in pushgate(
        "project", "create", "shop", "--webhook", PRIVATE[0], url=database).stderr

    done = pushgate("project", "create", "shop", "--webhook", " http://93.184.216.34/hook ",
                    "--json", url=database)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["webhook_url"] == "http://93.184.216.34/hook"
    for hook in PRIVATE + NOT_HTTP:
        for incoming in ([], ["--incoming"]):
            done = pushgate("project", "webhook", "shop", hook, *incoming, url=database)
            assert done.returncode == 1, (hook, incoming, done.stdout)
    [project] = _projects(database)
    assert project["webhook_url"] == "http://93.184.216.34/hook"   # unchanged


def test_private_webhooks_are_allowed_with_the_setting_but_schemes_still_checked(
        database: str) -> None:
    done = pushgate("project", "create", "shop", "--webhook", "http://127.0.0.1:9/hook",
                    url=database, allow=True)
    assert done.returncode == 0, done.stderr
    done = pushgate("project", "webhook", "shop", "http://localhost:8080/in", "--incoming",
                    "--json", url=database, allow=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["incoming_webhook_url"] == "http://localhost:8080/in"
    for hook in NOT_HTTP:
        done = pushgate("project", "webhook", "shop", hook, url=database, allow=True)
        assert done.returncode == 1, (hook, done.stdout)
    # Removing a webhook needs no check.
    assert pushgate("project", "webhook", "shop", url=database).returncode == 0
    [project] = _projects(database)
    assert project["webhook_url"] is None
