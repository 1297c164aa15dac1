"""The base install (no `postgres` extra) runs the embedded SQLite gateway: nothing on that path
imports asyncpg or psycopg, and a PostgreSQL URL gets one line naming the extra.

Each test runs Python in a subprocess where the drivers cannot be imported, as in an environment
where they were never installed; every attempt to import one is recorded, so an import that a
``try``/``except ImportError`` would hide is seen too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BLOCK_DRIVERS = (
    "import sys\n"
    "class Uninstalled:\n"
    "    names = {'asyncpg', 'psycopg', 'psycopg_binary', 'psycopg_c', 'psycopg_pool', "
    "'psycopg2'}\n"
    "    tried = []\n"
    "    @classmethod\n"
    "    def find_spec(cls, name, path=None, target=None):\n"
    "        if name.split('.')[0] in cls.names:\n"
    "            cls.tried.append(name)\n"
    "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
    "        return None\n"
    "sys.meta_path.insert(0, Uninstalled)\n"
)


def run_without_drivers(code: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCK_DRIVERS + code], capture_output=True,
                          text=True, timeout=60, env={"PUSHGATE_DATABASE_URL": url,
                                                      "PATH": "/usr/bin:/bin"})


def pushgate_without_drivers(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return run_without_drivers(
        "import runpy\n"
        f"sys.argv = ['pushgate', *{list(args)!r}]\n"
        "runpy.run_module('pushgate.cli', run_name='__main__')\n", url)


def test_sqlite_gateway_migrates_and_serves_without_postgres_drivers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'pushgate.db'}"
    done = pushgate_without_drivers("migrate", "--json", url=url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["revision"]

    done = run_without_drivers(
        "import json\n"
        "from starlette.testclient import TestClient\n"
        "import pushgate.cli, pushgate.wiring\n"
        "from pushgate.api.gateway import create_app\n"
        "from pushgate.config import Settings\n"
        "with TestClient(create_app(Settings(), run_workers=True)) as client:\n"
        "    answer = client.get('/healthz')\n"
        "print(json.dumps({'status': answer.status_code, 'body': answer.json(),\n"
        "                  'drivers': Uninstalled.tried}))\n", url)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == 200 and result["body"]["database"] == "ok"
    assert result["body"]["dispatcher"] is True
    assert result["drivers"] == []


def test_postgres_url_without_drivers_names_the_extra() -> None:
    url = "postgresql://pushgate:secret@127.0.0.1:5432/pushgate"
    for args in (["migrate"], ["project", "list"], ["worker"], ["serve"],
                 ["migrate-data", "--from", "sqlite:///x.db", "--to", url]):
        done = pushgate_without_drivers(*args, url=url)
        assert done.returncode == 1, (args, done.stderr)
        assert "pushgate[postgres]" in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr, (args, done.stderr)
        assert "secret" not in done.stderr

    done = run_without_drivers(
        "from pushgate.store.errors import StoreUnavailable\n"
        "from pushgate.store.factory import store_for_url\n"
        "try:\n"
        "    store_for_url('postgres://db/pushgate')\n"
        "except StoreUnavailable as exc:\n"
        "    print(exc)\n", url)
    assert done.returncode == 0, done.stderr
    assert "pip install 'pushgate[postgres]'" in done.stdout
