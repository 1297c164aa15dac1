"""`pushgate migrate` and `pushgate migrate-data`: the schema, and moving to another database."""

from __future__ import annotations

import json
from typing import Any

import typer

from pushgate.cli.common import JsonOption, console, err_console, fail, redact
from pushgate.config import Settings
from pushgate.store.errors import StoreUnavailable
from pushgate.store.factory import require_postgres_drivers


def migrate(as_json: bool = JsonOption) -> None:
    """Create or upgrade the database schema (safe to run repeatedly, and from several nodes
    at once on PostgreSQL)."""
    from sqlalchemy.exc import SQLAlchemyError

    from pushgate.store.migrate import current_revision, upgrade

    settings = Settings()
    try:
        require_postgres_drivers(settings.database_url)
        upgrade(settings.database_url)
        revision = current_revision(settings.database_url)
    except StoreUnavailable as exc:
        fail(str(exc))
        return
    except SQLAlchemyError as exc:   # e.g. a file SQLite cannot write, a server that refuses
        cause = getattr(exc, "orig", None) or exc
        first_line = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        fail(f"cannot migrate {redact(settings.database_url)}: {first_line}")
        return
    if as_json:
        typer.echo(json.dumps({"database": redact(settings.database_url),
                               "revision": revision}))
        return
    console.print(f"schema is up to date at revision {revision} "
                  f"({redact(settings.database_url)})")


def migrate_data(
    source: str = typer.Option(..., "--from", help="Database to copy from (e.g. sqlite:///…)."),
    target: str = typer.Option(..., "--to", help="Empty database to copy into "
                               "(e.g. postgresql://…); it is migrated first."),
    as_json: bool = JsonOption,
) -> None:
    """Copy every project, token, channel, push, queued message and pending report to another
    database — how to move from SQLite to PostgreSQL. Stop the gateway first."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from pushgate.store.transfer import TransferError, copy_database

    with Progress(TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(),
                  console=err_console, disable=as_json) as bar:
        tasks: dict[str, Any] = {}

        def progress(table: str, done: int, total: int) -> None:
            if table not in tasks:
                tasks[table] = bar.add_task(table, total=max(total, 1))
            bar.update(tasks[table], completed=done if total else 1)

        try:
            require_postgres_drivers(source)
            require_postgres_drivers(target)
            copied = copy_database(source, target, progress)
        except (TransferError, StoreUnavailable) as exc:
            fail(str(exc))
            return
    if as_json:
        typer.echo(json.dumps({"copied": copied}))
        return
    console.print(f"copied {sum(copied.values())} rows from {redact(source)} to "
                  f"{redact(target)}; point PUSHGATE_DATABASE_URL at the new database")
