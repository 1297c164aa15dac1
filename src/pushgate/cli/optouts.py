"""`pushgate optout add|remove|list`: a project's opt-out list (numbers nothing is sent to),
as ``/api/v2/optouts`` keeps it."""

from __future__ import annotations

import json
import time
from typing import Any

import typer
from rich.table import Table

from pushgate.cli.common import JsonOption, console, fail, project_id_of, show, with_store
from pushgate.core.optouts import checked_number, normal_number
from pushgate.store.base import Store

optout_app = typer.Typer(help="Opt-outs: numbers a project sends nothing to.",
                         no_args_is_help=True)

ProjectOption = typer.Option(..., "--project", "-p", help="Project name or id.")


@optout_app.command("add")
def optout_add(
    numbers: list[str] = typer.Argument(..., help="Numbers, in any usual spelling."),
    project: str = ProjectOption,
    as_json: bool = JsonOption,
) -> None:
    """Opt numbers out: every push entry to them is refused (code 213, credit 0)."""
    checked = []
    for raw in numbers:
        try:
            checked.append(checked_number(raw))
        except ValueError as exc:
            fail(f"not a valid number: {exc}")

    async def run(store: Store) -> dict[str, Any]:
        project_id = await project_id_of(store, project)
        added = await store.add_optouts(project_id, checked, time.time(), "cli")
        return {"project_id": project_id, "added": added,
                "numbers": ", ".join(dict.fromkeys(checked))}

    show(with_store(run), as_json)


@optout_app.command("remove")
def optout_remove(
    numbers: list[str] = typer.Argument(..., help="Numbers, in any usual spelling."),
    project: str = ProjectOption,
    as_json: bool = JsonOption,
) -> None:
    """Opt numbers back in."""
    normal = list(dict.fromkeys(normal_number(n) for n in numbers))

    async def run(store: Store) -> dict[str, Any]:
        project_id = await project_id_of(store, project)
        removed = await store.remove_optouts(project_id, normal)
        return {"project_id": project_id, "removed": removed, "numbers": ", ".join(normal)}

    show(with_store(run), as_json)


@optout_app.command("list")
def optout_list(
    project: str = ProjectOption,
    after: str = typer.Option("", help="Start after this number (the last one shown)."),
    limit: int = typer.Option(1000, min=1, help="Numbers to list."),
    as_json: bool = JsonOption,
) -> None:
    """The project's opt-outs in number order."""

    async def run(store: Store) -> list[dict[str, Any]]:
        project_id = await project_id_of(store, project)
        start = normal_number(after) if after else ""
        return [{"number": o.number, "at": o.at, "source": o.source}
                for o in await store.list_optouts(project_id, start, limit)]

    rows = with_store(run)
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table("number", "since", "source")
    for row in rows:
        table.add_row(row["number"], time.strftime("%Y-%m-%d %H:%M:%S",
                                                   time.gmtime(row["at"])), row["source"])
    console.print(table)
