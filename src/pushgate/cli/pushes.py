"""`pushgate report` (every message of a push, streamed to a table, CSV or JSON) and
`pushgate push cancel` (a push's messages no channel has taken yet, cancelled and refunded)."""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from pushgate.api.report_rows import COLUMNS, stream_report
from pushgate.cli.common import (
    JsonOption,
    console,
    err_console,
    fail,
    project_id_of,
    show,
    with_store,
)
from pushgate.core.records import PushRecord
from pushgate.store.base import Store

push_app = typer.Typer(help="What to do with a push once accepted.", no_args_is_help=True)

ProjectOption = typer.Option(None, "--project",
                             help="The push's project, by id or name (default: whichever "
                                  "project the push belongs to).")

async def _find_push(store: Store, push_id: int, project: str | None) -> PushRecord:
    """The push, in ``project`` when given; one line and exit code 1 when it is not there."""
    owner = await store.push_project(push_id)
    if owner is None:
        fail(f"no push {push_id}")
    assert owner is not None
    if project is not None:
        project_id = await project_id_of(store, project)
        if project_id != owner:
            fail(f"push {push_id} is not a push of project {project!r}")
    push = await store.get_push(owner, push_id)
    assert push is not None
    return push


def _csv_writer(out: IO[str]) -> Callable[[list[dict[str, Any]]], None]:
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    return writer.writerows


def _json_writer(out: IO[str], head: dict[str, Any]) -> Callable[[list[dict[str, Any]]], None]:
    """One JSON document written as it comes: the head, then the messages chunk by chunk."""
    out.write(json.dumps(head)[:-1] + ', "messages": [')
    first = [True]

    def write(rows: list[dict[str, Any]]) -> None:
        for row in rows:
            out.write(("" if first[0] else ", ") + json.dumps(row))
            first[0] = False

    return write


def _table_writer(push: PushRecord) -> Callable[[list[dict[str, Any]]], None]:
    """A table per page of rows: a single table would hold the whole push to size its
    columns. Narrower than the CSV: the push's accept time is in the title, status and state
    share a column, and so do the error's code and message."""
    from pushgate.api.answers import iso_time

    def write(rows: list[dict[str, Any]]) -> None:
        table = Table(title=f"push {push.id}, accepted {iso_time(push.created_at)}")
        # Never cut short with an ellipsis: ids, numbers and states whole, the rest folded.
        for column in ("msg_id", "number", "status"):
            table.add_column(column, no_wrap=True)
        for column in ("updated_at", "reference", "error"):
            table.add_column(column, overflow="fold")
        for row in rows:
            error = ": ".join(str(part) for part in (row["error_code"], row["error_message"])
                              if part)
            table.add_row(str(row["msg_id"]), row["number"], f"{row['status']} {row['state']}",
                          row["updated_at"], row["reference_number"] or "", error)
        console.print(table)

    return write


def report(
    push_id: int = typer.Argument(..., help="The push's id (its answer's push_id)."),
    project: str = ProjectOption,
    csv_file: Path = typer.Option(None, "--csv", help="Write the rows to this CSV file."),
    as_json: bool = JsonOption,
) -> None:
    """Every message of a push: number, status, error, times, reference.

    Read and written page by page, so a push of any size fits in memory. On a terminal a
    table; piped, CSV; with --json one JSON document; with --csv a file (and a progress bar
    on a terminal)."""

    async def run(store: Store) -> dict[str, Any]:
        push = await _find_push(store, push_id, project)
        project_id = await store.push_project(push_id)
        assert project_id is not None
        if csv_file is not None:
            with csv_file.open("w", newline="", encoding="utf-8") as out:
                write = _csv_writer(out)
                with Progress(TextColumn("messages"), BarColumn(), MofNCompleteColumn(),
                              console=err_console, transient=True,
                              disable=not err_console.is_terminal) as progress:
                    task = progress.add_task("report", total=push.accepted)

                    def write_and_count(rows: list[dict[str, Any]]) -> None:
                        write(rows)
                        progress.advance(task, len(rows))

                    rows = await stream_report(store, push, project_id, write_and_count)
            return {"push_id": push_id, "project_id": project_id, "rows": rows,
                    "csv": str(csv_file)}
        if as_json:
            write = _json_writer(sys.stdout, {"push_id": push_id, "project_id": project_id})
            await stream_report(store, push, project_id, write)
            sys.stdout.write("]}\n")
        elif console.is_terminal:
            await stream_report(store, push, project_id, _table_writer(push))
        else:
            await stream_report(store, push, project_id, _csv_writer(sys.stdout))
        return {}

    written = with_store(run)
    if csv_file is not None:
        show(written, as_json, title=f"Report of push {push_id}")


@push_app.command("cancel")
def push_cancel(
    push_id: int = typer.Argument(..., help="The push's id."),
    project: str = ProjectOption,
    as_json: bool = JsonOption,
) -> None:
    """Cancel and refund the messages of a push no channel has taken yet.

    They end cancelled (Picky status 5) and their credit returns; those being sent or sent
    are left alone and counted. Nothing left to cancel is no error."""

    from pushgate.api.cancel import cancel_push

    async def run(store: Store) -> dict[str, Any]:
        push = await _find_push(store, push_id, project)
        project_id = await store.push_project(push.id)
        assert project_id is not None
        answer = await cancel_push(store, project_id, push.id, time.time())
        assert answer is not None
        return answer

    show(with_store(run), as_json, title=f"Push {push_id} cancelled")
