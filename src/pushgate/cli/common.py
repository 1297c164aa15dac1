"""What every command shares: the consoles, failing with one line, a store opened for one command,
printing a record as a table or JSON, and finding a project by id or name."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pushgate.config import Settings
from pushgate.store.base import Store
from pushgate.store.errors import StoreUnavailable
from pushgate.store.factory import store_for_url

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)

JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON.")


def fail(message: str, code: int = 1) -> None:
    # soft_wrap: one line however narrow the terminal, so logs and scripts see it whole.
    err_console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def with_store(fn: Callable[[Store], Awaitable[T]]) -> T:
    settings = Settings()

    async def run() -> T:
        store = store_for_url(settings.database_url)
        await store.open()
        try:
            return await fn(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except StoreUnavailable as exc:
        fail(str(exc))
        raise  # unreachable


def show(data: dict[str, Any], as_json: bool, title: str | None = None) -> None:
    if as_json:
        typer.echo(json.dumps(data, default=str))
        return
    table = Table(title=title, show_header=False)
    for key, value in data.items():
        table.add_row(str(key), str(value))
    console.print(table)


async def project_id_of(store: Store, project: str) -> int:
    if project.isdigit():
        found = await store.get_project(int(project))
    else:
        found = await store.find_project(project)
    if found is None:
        fail(f"no project {project!r}")
    assert found is not None
    return found.id


def redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
