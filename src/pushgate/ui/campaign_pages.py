"""The dashboard's CSV send (upload, preview, confirm, result and rejects file), message
search and credits pages. Each handler goes through the API's own functions: the CSV through
``core/campaign.py`` and ``api/campaign.send_and_wake`` (the pushes of ``pushgate send`` and
``POST /api/v2/push-csv``, under the same idempotency keys), the reads through the store.

An uploaded file waits for its confirmation in ``uploads_dir()`` under a random id that only
the uploading session holds (``csv_upload`` in its signed cookie); the file goes when it is
sent, and any left there goes an hour later. On several nodes, the confirmation must reach
the node that took the upload (else: "upload it again").
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from pushgate.api.auth import resolve_channel
from pushgate.api.campaign import send_and_wake, send_at_field
from pushgate.api.state import Gateway
from pushgate.core.campaign import (
    DEFAULT_NUMBER_COLUMN,
    Campaign,
    Options,
    plan_campaign,
    reject_records,
)
from pushgate.core.channels import ChannelSpec
from pushgate.core.errors import ApiError
from pushgate.core.numbers import typed_number
from pushgate.core.pricing import format_credits
from pushgate.core.push import plan_push
from pushgate.ui.pages import (
    ProjectView,
    _int,
    application_choices,
    common,
    forbidden,
    form_ok,
    page,
    project_page,
    render,
    signed_form,
)
from pushgate.ui.session import Viewer

# Rows of the file shown before sending it.
PREVIEW_ROWS = 10
# Refused rows shown on the result page (the rejects file has them all).
RESULT_REFUSALS = 50
FOUND_PAGE = 50
LEDGER_PAGE = 50
# Seconds an upload (and its result) is kept.
UPLOAD_SECONDS = 3600
# Results the session remembers (their pages and rejects files).
KEPT_RESULTS = 5
_ID_LENGTH = 32


def uploads_dir() -> Path:
    path = Path(tempfile.gettempdir()) / f"pushgate-ui-csv-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def _valid_id(upload_id: object) -> str | None:
    return (upload_id if isinstance(upload_id, str) and len(upload_id) == _ID_LENGTH
            and upload_id.isalnum() and upload_id.isascii() else None)


def _sweep(folder: Path, now: float) -> None:
    """Forget uploads and results older than ``UPLOAD_SECONDS``."""
    for item in folder.iterdir():
        try:
            if item.stat().st_mtime < now - UPLOAD_SECONDS:
                item.unlink()
        except FileNotFoundError:
            pass


def _options(fields: dict[str, str], application: str) -> dict[str, Any]:
    return {"application": application,
            "message": fields.get("message", ""),
            "number_column": fields.get("number_column", "").strip() or DEFAULT_NUMBER_COLUMN,
            "priority": 1 if fields.get("priority") == "1" else 0,
            "media": fields.get("media", "").strip(),
            "send_at": fields.get("send_at", "").strip()}


def _campaign(data: bytes, values: dict[str, Any], channel_id: int,
              max_recipients: int) -> Campaign:
    options = Options(application=values["application"], channel_id=channel_id,
                      message=values["message"] or None, number_column=values["number_column"],
                      priority=values["priority"], media=values["media"] or None,
                      send_at=values.get("send_at") or None)
    return plan_campaign(data, options, max_recipients)


def preview_rows(campaign: Campaign, gateway: Gateway, channel: ChannelSpec,
                 number_column: str) -> tuple[list[dict[str, Any]], int]:
    """The first ``PREVIEW_ROWS`` rows as they would be sent (number, filled message, media,
    what refuses them), and how many rows of the file the checks before sending refuse."""
    problems: dict[int, str] = {r.row: f"{int(r.code)} {r.message}" for r in campaign.refused}
    texts: dict[int, tuple[str, str]] = {}
    for chunk in campaign.chunks:
        assert chunk.body.data is not None
        # The push route's checks, without sending (media hosts are looked up when sent).
        plan = plan_push(chunk.body, channel, gateway.limits)
        for refusal in plan.refused:
            problems[chunk.rows[refusal.index]] = f"{int(refusal.code)} {refusal.message}"
        for row, entry in zip(chunk.rows, chunk.body.data, strict=True):
            if row < PREVIEW_ROWS:
                texts[row] = (str(entry.message or ""),
                              str(entry.media or chunk.body.globalmedia or ""))
    table = campaign.table
    shown = []
    for index, cells in enumerate(table.rows[:PREVIEW_ROWS]):
        message, media = texts.get(index, ("", ""))
        shown.append({"row": index + 2,
                      "number": cells.get(number_column, ""),
                      "message": message, "media": media, "error": problems.get(index)})
    return shown, len(problems)


async def _channel(gateway: Gateway, viewer: Viewer, application: str) -> ChannelSpec:
    assert viewer.project_id is not None
    return await resolve_channel(gateway.lookups, viewer.project_id, application, None)


# --- CSV send -----------------------------------------------------------------------------

@project_page
async def send_csv(request: Request, view: ProjectView) -> Response:
    """GET: the upload form. POST: the file kept and its preview, or why it cannot go."""
    gateway, viewer, project_id, context = view
    choices = await application_choices(gateway, project_id)
    values: dict[str, Any] = {"application": choices[0][0] if choices else "", "message": "",
                              "number_column": DEFAULT_NUMBER_COLUMN, "priority": 0,
                              "media": "", "send_at": ""}
    limit = gateway.settings.max_body_bytes
    if request.method == "GET":
        return render(request, "send_csv.html", choices=choices, values=values,
                      limit=limit, **context)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + 64 * 1024:
        return render(request, "send_csv.html", status_code=413, choices=choices,
                      values=values, limit=limit, error=_too_big(limit), **context)
    fields = await form_ok(request)
    if fields is None:
        return forbidden(request)
    values = _options(fields, fields.get("application", ""))
    upload = (await request.form()).get("file")

    def again(message: str, status: int = 422) -> Response:
        return render(request, "send_csv.html", status_code=status, choices=choices,
                      values=values, limit=limit, error=message, **context)

    if not isinstance(upload, UploadFile) or not upload.filename:
        return again("Choose the CSV file to send.")
    data = await upload.read(limit + 1)
    if len(data) > limit:
        return again(_too_big(limit), 413)
    try:
        channel = await _channel(gateway, viewer, values["application"])
        send_at_field(values, gateway.settings)   # a wrong time refused at the preview
        campaign = _campaign(data, values, channel.id, gateway.settings.max_recipients)
        rows, refused = preview_rows(campaign, gateway, channel, values["number_column"])
    except ApiError as exc:
        return again(f"{int(exc.code)} {exc.message}")
    folder = uploads_dir()
    now = time.time()
    _sweep(folder, now)
    upload_id = secrets.token_hex(_ID_LENGTH // 2)
    (folder / f"{upload_id}.csv").write_bytes(data)
    (folder / f"{upload_id}.json").write_text(json.dumps(values), encoding="utf-8")
    request.session["csv_upload"] = upload_id
    sendable = len(campaign.table.rows) - refused
    return render(request, "send_csv.html", choices=choices, values=values, limit=limit,
                  preview=rows, upload_id=upload_id, filename=upload.filename,
                  total=len(campaign.table.rows), refused_count=refused, sendable=sendable,
                  pushes=len(campaign.chunks), columns=campaign.table.columns, **context)


def _too_big(limit: int) -> str:
    return f"The file is larger than {limit // 1024} KiB (PUSHGATE_MAX_BODY_BYTES)."


@signed_form
async def send_csv_confirm(request: Request, gateway: Gateway, viewer: Viewer,
                           fields: dict[str, str]) -> Response:
    """Send the previewed file: its pushes accepted one by one under their idempotency keys
    (confirming twice sends nothing twice), then its result page."""
    context = await common(gateway, viewer)
    if viewer.project_id is None:
        return render(request, "overview.html", **context)
    upload_id = _valid_id(fields.get("upload"))
    folder = uploads_dir()
    if upload_id is None or request.session.get("csv_upload") != upload_id \
            or not (folder / f"{upload_id}.csv").exists():
        return render(request, "error.html", status_code=410, message=(
            "This upload is no longer here (sent already, an hour old, or taken by another "
            "node): upload the file again."), **context)
    data = (folder / f"{upload_id}.csv").read_bytes()
    values = json.loads((folder / f"{upload_id}.json").read_text(encoding="utf-8"))
    try:
        if viewer.token_id is not None:
            gateway.rate_limiter.check(viewer.token_id)
        channel = await _channel(gateway, viewer, values["application"])
        campaign = _campaign(data, values, channel.id, gateway.settings.max_recipients)
        sent = await send_and_wake(gateway, viewer.project_id, channel, campaign)
    except ApiError as exc:
        return render(request, "error.html", status_code=422,
                      message=f"Nothing more was sent: {int(exc.code)} {exc.message}",
                      **context)
    refused = sent.refused_rows()
    rejects = io.StringIO()
    csv.writer(rejects).writerows(reject_records(campaign.table, refused))
    result = {"push_ids": sent.push_ids, "accepted": sent.accepted, "rejected": sent.rejected,
              "credit": format_credits(sent.credit_total_micro),
              "balance": None if sent.balance_micro is None
              else format_credits(sent.balance_micro),
              "refused": [{"row": item["row"], "number": item.get("number", ""),
                           "code": item.get("status", ""), "reason": item.get("message", "")}
                          for _, item in refused[:RESULT_REFUSALS]],
              "project_id": viewer.project_id}
    (folder / f"{upload_id}.result.json").write_text(json.dumps(result), encoding="utf-8")
    (folder / f"{upload_id}.rejects.csv").write_text(rejects.getvalue(), encoding="utf-8")
    for name in (f"{upload_id}.csv", f"{upload_id}.json"):
        (folder / name).unlink(missing_ok=True)
    request.session.pop("csv_upload", None)
    done = [i for i in request.session.get("csv_done", []) if isinstance(i, str)]
    request.session["csv_done"] = [*done[-(KEPT_RESULTS - 1):], upload_id]
    # Post/redirect/get: reloading the result sends nothing again.
    return RedirectResponse(f"/ui/send/csv/{upload_id}", status_code=303)


def _result(request: Request, viewer: Viewer) -> tuple[str, dict[str, Any]] | None:
    upload_id = _valid_id(request.path_params["upload_id"])
    if upload_id is None or upload_id not in request.session.get("csv_done", []):
        return None
    try:
        result: dict[str, Any] = json.loads(
            (uploads_dir() / f"{upload_id}.result.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    if result.get("project_id") != viewer.project_id:
        return None
    return upload_id, result


async def send_csv_result(request: Request) -> Response:
    got = await page(request)
    if isinstance(got, Response):
        return got
    gateway, viewer = got
    context = await common(gateway, viewer)
    found = _result(request, viewer)
    if found is None:
        return render(request, "error.html", status_code=404,
                      message="This result is gone (kept an hour, in this session only).",
                      **context)
    upload_id, result = found
    return render(request, "send_csv_result.html", upload_id=upload_id, result=result,
                  shown_refusals=RESULT_REFUSALS, **context)


async def send_csv_rejects(request: Request) -> Response:
    """The refused rows as the file had them, with their row number, code and reason (the
    rejects file of ``pushgate send``)."""
    got = await page(request)
    if isinstance(got, Response):
        return got
    _, viewer = got
    found = _result(request, viewer)
    if found is None:
        return Response("no such result", status_code=404)
    upload_id, _ = found
    try:
        text = (uploads_dir() / f"{upload_id}.rejects.csv").read_text(encoding="utf-8")
    except FileNotFoundError:
        return Response("no such result", status_code=404)
    return Response(text, media_type="text/csv", headers={
        "Content-Disposition": 'attachment; filename="rejects.csv"',
        "Cache-Control": "no-store"})


# --- messages -----------------------------------------------------------------------------

@project_page
async def messages(request: Request, view: ProjectView) -> Response:
    """The project's messages to a number or carrying a reference, newest first, paged."""
    gateway, _, project_id, context = view
    query = request.query_params.get("q", "").strip()[:200]
    by = "reference" if request.query_params.get("by") == "reference" else "number"
    before = _int(request.query_params.get("before"))
    found: list[Any] = []
    error = None
    older = None
    searched = None
    if query:
        if by == "number":
            searched = typed_number(query)
            if searched is None:
                error = (f"{query!r} is not a number: digits with the country code "
                         "(spaces, dashes and a leading + are fine), or search by reference.")
        else:
            searched = query
        if searched is not None:
            kind = {"number": searched} if by == "number" else {"reference": searched}
            page = await gateway.store.find_messages(project_id, before=before,
                                                     limit=FOUND_PAGE, **kind)
            found, older = page.found, page.older
    return render(request, "messages.html", query=query, by=by, searched=searched,
                  found=found, older=older, first=before is None, error=error, **context)


# --- credits ------------------------------------------------------------------------------

@project_page
async def credits(request: Request, view: ProjectView) -> Response:
    """The project's balance and its credit ledger, newest first, paged."""
    gateway, _, project_id, context = view
    before = _int(request.query_params.get("before"))
    rows = await gateway.store.credit_history(project_id, before, LEDGER_PAGE + 1)
    older = rows[LEDGER_PAGE - 1].id if len(rows) > LEDGER_PAGE else None
    return render(request, "credits.html", ledger=rows[:LEDGER_PAGE], older=older,
                  first=before is None, **context)


ROUTES = [
    Route("/send/csv", send_csv, methods=["GET", "POST"]),
    Route("/send/csv/confirm", send_csv_confirm, methods=["POST"]),
    Route("/send/csv/{upload_id}", send_csv_result),
    Route("/send/csv/{upload_id}/rejects.csv", send_csv_rejects),
    Route("/messages", messages),
    Route("/credits", credits),
]
