"""Shared fixtures: a fresh migrated database per test, a store, and an in-process API client.

Every test that uses ``db_url`` (directly or through ``store``, ``make`` or ``app_client``) runs
once per backend: ``[sqlite]`` (a copy of a migrated file) and ``[postgres]`` (a database created
from a migrated template database, dropped after the test). The PostgreSQL half needs
``PUSHGATE_TEST_PG_DSN`` (e.g. ``postgresql://postgres@127.0.0.1:5432/test``, a database the
tests may connect to and create databases from); without it those tests skip, except under
``CI=true`` where they fail. Pin a test to one backend with ``@pytest.mark.sqlite_only`` (e.g. it
opens the SQLite file itself) or ``@pytest.mark.postgres_only``; to look at rows on either
backend, use the ``query`` fixture instead of opening the database.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from pushgate.api.gateway import create_app
from pushgate.config import Settings
from pushgate.core.channels import ChannelSpec, default_rules
from pushgate.core.models import Project
from pushgate.core.pricing import parse_credits
from pushgate.core.tokens import hash_token, new_token, new_webhook_secret
from pushgate.store.base import Store
from pushgate.store.factory import store_for_url
from pushgate.store.migrate import upgrade

BACKENDS = ("sqlite", "postgres")
PG_DSN_ENV = "PUSHGATE_TEST_PG_DSN"
PG_SKIP_REASON = "PUSHGATE_TEST_PG_DSN not set (PostgreSQL tests)"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only: run the test on the SQLite backend only (db_url/store/...)")
    config.addinivalue_line(
        "markers", "postgres_only: run the test on the PostgreSQL backend only")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that needs a database once per backend (ids ``[sqlite]``/``[postgres]``)."""
    if "db_url" not in metafunc.fixturenames:
        return
    backends = list(BACKENDS)
    if metafunc.definition.get_closest_marker("sqlite_only"):
        backends = ["sqlite"]
    elif metafunc.definition.get_closest_marker("postgres_only"):
        backends = ["postgres"]
    metafunc.parametrize("db_url", backends, indirect=True)


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def pg_database_url(dsn: str, database: str) -> str:
    """``dsn`` pointed at another database on the same server."""
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    """The DSN from ``PUSHGATE_TEST_PG_DSN``, checked once per session: skips the PostgreSQL
    half when unset, except under ``CI=true``; fails when the server cannot be reached."""
    dsn = os.environ.get(PG_DSN_ENV, "").strip()
    if not dsn:
        if _ci():
            pytest.fail(f"{PG_DSN_ENV} is not set; under CI=true the PostgreSQL tests must run")
        pytest.skip(PG_SKIP_REASON)
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        pytest.fail(f"PostgreSQL at {PG_DSN_ENV} is unreachable: {exc}")
    return dsn


def _pg_admin(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True, connect_timeout=5)


def _drop_leftovers(admin: psycopg.Connection[Any]) -> None:
    """Drop the databases of earlier test sessions on this host that were killed before they
    could clean up (their pid is gone); a database still in use is left alone."""
    rows = admin.execute(
        "SELECT datname FROM pg_database WHERE datname ~ '^pushgate_(tmpl|test)_[0-9]+_'"
    ).fetchall()
    for (name,) in rows:
        pid = int(name.split("_")[2])
        try:
            os.kill(pid, 0)
            continue                      # that session is still running
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        with contextlib.suppress(psycopg.Error):
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture(scope="session")
def pg_template(pg_admin_dsn: str) -> Iterator[str]:
    """One PostgreSQL database migrated with Alembic per session (a unique name, so parallel
    and repeated runs don't collide); each test gets a database created from it."""
    name = f"pushgate_tmpl_{os.getpid()}_{secrets.token_hex(4)}"
    with _pg_admin(pg_admin_dsn) as admin:
        _drop_leftovers(admin)
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        upgrade(pg_database_url(pg_admin_dsn, name))
        yield name
    finally:
        with _pg_admin(pg_admin_dsn) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One database migrated with Alembic per session; each test gets a copy (fast)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh migrated database for this test, as a ``PUSHGATE_DATABASE_URL``."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        path = tmp_path / "pushgate.db"
        shutil.copy(request.getfixturevalue("migrated_template"), path)
        yield f"sqlite:///{path}"
        return
    dsn = request.getfixturevalue("pg_admin_dsn")
    template = request.getfixturevalue("pg_template")
    name = f"pushgate_test_{os.getpid()}_{secrets.token_hex(5)}"
    with _pg_admin(dsn) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield pg_database_url(dsn, name)
    finally:
        with _pg_admin(dsn) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def query_database(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement on a test database of either backend and return its rows (``?``
    placeholders on both; booleans come back as 0/1 from SQLite and False/True from PostgreSQL,
    which compare equal)."""
    if url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(url.split(":///", 1)[1])
        try:
            with conn:
                return [tuple(r) for r in conn.execute(sql, params).fetchall()]
        finally:
            conn.close()
    with psycopg.connect(url, autocommit=True) as conn:
        if params:
            sql = sql.replace("%", "%%").replace("?", "%s")
        cur = conn.execute(sql, params or None)   # type: ignore[arg-type]
        return [tuple(r) for r in cur.fetchall()] if cur.description else []


@pytest.fixture
def query(db_url: str) -> Callable[..., list[tuple[Any, ...]]]:
    """``query("SELECT state, count(*) FROM messages GROUP BY state")`` on this test's database,
    whichever the backend: look at rows without pinning the test to SQLite."""
    return lambda sql, *params: query_database(db_url, sql, *params)


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = store_for_url(db_url)
    await s.open()
    yield s
    await s.close()


class Fixture:
    """Makes projects, tokens and channels for a test."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def project(self, credits: str = "100", webhook_url: str | None = None,
                      name: str | None = None) -> tuple[Project, str, str]:
        """A project with one token; returns (project, token, webhook secret)."""
        secret = new_webhook_secret()
        name = name or f"p-{secrets.token_hex(6)}"
        project = await self.store.create_project(name, parse_credits(credits), webhook_url,
                                                  secret)
        token = new_token()
        await self.store.create_token(project.id, hash_token(token), "test", [])
        return project, token, secret

    async def channel(self, project_id: int, application: int = 1, price: str = "0.005",
                      kind: str = "sandbox", **overrides: Any) -> ChannelSpec:
        fields: dict[str, Any] = {**default_rules(application), **overrides}
        return await self.store.add_channel(ChannelSpec(
            id=0, project_id=project_id, kind=kind, application=application,
            price_micro=parse_credits(price), **fields))


@pytest.fixture
def make(store: Store) -> Fixture:
    return Fixture(store)


AppFactory = Callable[..., Awaitable[tuple[httpx.AsyncClient, Any]]]


@pytest.fixture
async def app_client(db_url: str) -> AsyncIterator[AppFactory]:
    """``await app_client(**settings)`` → (httpx client, gateway) over an in-process app.

    Private media and webhook targets are allowed unless a test says otherwise (the fakes
    listen on 127.0.0.1).

    The dispatcher does not run unless ``run_workers=True``: API tests see messages stay
    queued.
    """
    contexts: list[Any] = []
    clients: list[httpx.AsyncClient] = []

    async def factory(run_workers: bool = False, **overrides: Any) -> tuple[httpx.AsyncClient, Any]:
        # Fakes and receivers listen on 127.0.0.1; tests of the address checks pass False.
        local = {"allow_private_media": True, "allow_private_webhooks": True}
        settings = Settings(database_url=db_url, **{**local, **overrides})
        app = create_app(settings, run_workers=run_workers)
        context = app.router.lifespan_context(app)
        await context.__aenter__()
        contexts.append(context)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                   base_url="http://testserver")
        clients.append(client)
        return client, app.state.gateway

    yield factory
    for client in clients:
        await client.aclose()
    for context in reversed(contexts):
        await context.__aexit__(None, None, None)
