"""`pushgate send`: a campaign from a CSV file, one push per ``PUSHGATE_MAX_RECIPIENTS`` rows,
each accepted the way ``POST /api/v2/push`` accepts one (``api/campaign.py``) under an
idempotency key derived from the file's bytes, the options and the push's place: run again
after a crash or Ctrl-C, it sends only what was not accepted yet."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from pushgate.cli.common import JsonOption, err_console, fail, project_id_of, show, with_store
from pushgate.config import Settings
from pushgate.core.campaign import (
    DEFAULT_NUMBER_COLUMN,
    Chunk,
    Options,
    Table,
    plan_campaign,
    reject_records,
)
from pushgate.core.errors import ApiError, Code
from pushgate.core.pricing import format_credits
from pushgate.core.schedule import parse_send_at
from pushgate.store.base import Store


def rejects_path(csv_file: Path) -> Path:
    return csv_file.with_name(csv_file.name + ".rejects.csv")


def write_rejects(path: Path, table: Table, refused: list[tuple[int, dict[str, Any]]]) -> None:
    """The refused rows as the file had them, with their row number, code and reason."""
    with path.open("w", newline="", encoding="utf-8") as out:
        csv.writer(out).writerows(reject_records(table, refused))


def send(
    project: str = typer.Option(..., "--project", help="The project, by id or name."),
    application: int = typer.Option(..., "--application",
                                    help="The channel's application code (1 WhatsApp, …)."),
    csv_file: Path = typer.Option(..., "--csv", exists=True, dir_okay=False, readable=True,
                                  help="UTF-8 CSV with a header row (`,` or `;`), or an .xlsx "
                                       "workbook (its first sheet)."),
    message: str = typer.Option(None, "--message",
                                help="The text; {column} is the row's value of that column. "
                                     "A row's own `message` column wins."),
    number_column: str = typer.Option(DEFAULT_NUMBER_COLUMN, "--number-column",
                                      help="The column holding the numbers."),
    priority: int = typer.Option(0, "--priority", min=0, max=1, help="0 low, 1 high."),
    media: str = typer.Option(None, "--media", help="A media URL sent with every message."),
    at: str = typer.Option(None, "--at",
                           help="Send at this time, ISO 8601 with an offset "
                                "(2026-12-06T09:00+05:30) or unix seconds; default now."),
    as_json: bool = JsonOption,
) -> None:
    """Send a campaign from a CSV file: one message per row.

    The rows are cut into pushes of at most PUSHGATE_MAX_RECIPIENTS, each accepted once:
    running the same command on the same file again sends nothing twice. Refused rows go to
    FILE.rejects.csv with their code and reason."""
    # Imported here, as `serve` imports the API: every other command starts without FastAPI.
    from pushgate.api.auth import Lookups, resolve_channel
    from pushgate.api.campaign import send_campaign
    from pushgate.outbound import NameVerdicts

    settings = Settings()
    if at is not None:
        try:   # refused before anything is read or sent
            parse_send_at(at, time.time(), settings.max_schedule_seconds)
        except ApiError as exc:
            fail(f"--at: {exc.message} (code {int(exc.code)}); nothing was sent")
    data = csv_file.read_bytes()

    async def run(store: Store) -> dict[str, Any]:
        project_id = await project_id_of(store, project)
        try:
            channel = await resolve_channel(Lookups(store, 0), project_id, application, None)
            campaign = plan_campaign(data, Options(application=str(application),
                                                   message=message, number_column=number_column,
                                                   priority=priority, media=media,
                                                   send_at=at),
                                     settings.max_recipients)
        except ApiError as exc:
            fail(f"{exc.message} (code {int(exc.code)}); nothing was sent")
        total = len(campaign.table.rows)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("pushes {task.fields[pushes]}/{task.fields[chunks]} "
                                 "accepted {task.fields[accepted]} "
                                 "refused {task.fields[refused]}"),
                      console=err_console, transient=True,
                      disable=as_json or not err_console.is_terminal) as progress:
            task = progress.add_task("rows", total=total, pushes=0,
                                     chunks=len(campaign.chunks), accepted=0,
                                     refused=len(campaign.refused))
            progress.advance(task, len(campaign.refused))
            counts = {"pushes": 0, "accepted": 0, "refused": len(campaign.refused)}

            def on_push(chunk: Chunk, accepted: int, refused: int) -> None:
                counts["pushes"] += 1
                counts["accepted"] += accepted
                counts["refused"] += refused
                progress.update(task, advance=len(chunk.rows), pushes=counts["pushes"],
                                accepted=counts["accepted"], refused=counts["refused"])

            try:
                sent, _fresh = await send_campaign(store, settings, NameVerdicts(), project_id,
                                                   channel, campaign, on_push)
            except ApiError as exc:
                fail(f"{exc.message} (code {int(exc.code)})")
        refused = sent.refused_rows()
        rejects: Path | None = rejects_path(csv_file)
        assert rejects is not None
        if refused:
            write_rejects(rejects, campaign.table, refused)
        else:   # an earlier run's, now stale
            rejects.unlink(missing_ok=True)
            rejects = None
        return {"push_ids": sent.push_ids, "accepted": sent.accepted,
                "rejected": sent.rejected, "rejects_file": str(rejects) if rejects else None,
                "credit_total": format_credits(sent.credit_total_micro),
                "short_of_credit": any(item["status"] == int(Code.INSUFFICIENT_CREDIT)
                                       for _, item in refused)}

    result = with_store(run)
    short = result.pop("short_of_credit")
    if as_json:
        typer.echo(json.dumps({key: result[key] for key in
                               ("push_ids", "accepted", "rejected", "rejects_file")}))
    else:
        show(result, False, title=f"Campaign {csv_file.name}")
    if short:
        # Exit code 2: the campaign stopped short; the same command, once credited, goes on.
        fail("the balance ran out: the rest of the file was not sent (code 420); add credits "
             "and run the same command again to send it", code=2)
