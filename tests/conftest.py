"""Shared fixtures: a migrated SQLite file per test, a store, and an in-process API client."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from pushgate.api.app import create_app
from pushgate.config import Settings
from pushgate.core.channels import ChannelSpec, default_rules
from pushgate.core.models import Project
from pushgate.core.pricing import parse_credits
from pushgate.core.tokens import hash_token, new_token, new_webhook_secret
from pushgate.store.migrate import upgrade
from pushgate.store.sqlite import SQLiteStore


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One database migrated with Alembic per session; each test gets a copy (fast)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def db_url(migrated_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "pushgate.db"
    shutil.copy(migrated_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(db_url)
    await s.open()
    yield s
    await s.close()


class Fixture:
    """Makes projects, tokens and channels for a test."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store

    async def project(self, credits: str = "100", webhook_url: str | None = None,
                      name: str | None = None) -> tuple[Project, str, str]:
        """A project with one token; returns (project, token, webhook secret)."""
        secret = new_webhook_secret()
        name = name or f"p{id(secret)}"
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
def make(store: SQLiteStore) -> Fixture:
    return Fixture(store)


AppFactory = Callable[..., Awaitable[tuple[httpx.AsyncClient, Any]]]


@pytest.fixture
async def app_client(db_url: str) -> AsyncIterator[AppFactory]:
    """``await app_client(**settings)`` → (httpx client, gateway) over an in-process app.

    The dispatcher does not run unless ``run_workers=True``: API tests see messages stay
    queued.
    """
    contexts: list[Any] = []
    clients: list[httpx.AsyncClient] = []

    async def factory(run_workers: bool = False, **overrides: Any) -> tuple[httpx.AsyncClient, Any]:
        settings = Settings(database_url=db_url, **overrides)
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
