"""The dashboard's pages: sign-in, overview, send, pushes (list, one push with live progress,
cancel, CSV export). Each handler reads the same store and core functions as the API."""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from pushgate.api.answers import iso_time
from pushgate.api.auth import authenticate, resolve_channel
from pushgate.api.cancel import cancel_push
from pushgate.api.push import accept_body, entries, start_sending
from pushgate.api.report_rows import csv_chunks
from pushgate.api.state import Gateway
from pushgate.core.channels import APPLICATION_CODES
from pushgate.core.errors import ApiError, Code
from pushgate.core.lifecycle import FINAL_STATES, State
from pushgate.core.pricing import format_credits
from pushgate.core.push import decode_push
from pushgate.core.tokens import hash_token
from pushgate.ui.session import (
    Viewer,
    csrf_ok,
    csrf_token,
    password_mark,
    password_ok,
    session_key,
    viewer_of,
)

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.filters["credits"] = format_credits
templates.env.filters["time"] = lambda ts: (iso_time(ts) or "")[:19].replace("T", " ")

# The pages in the navigation, in order: (path, label).
NAV = [("/ui/", "Overview"), ("/ui/send", "Send"), ("/ui/pushes", "Pushes")]
NAV += [("/ui/messages", "Messages"), ("/ui/credits", "Credits")]  # ui/campaign_pages.py
NAV += [("/ui/channels", "Channels"), ("/ui/phones", "Phones"), ("/ui/webhooks", "Webhooks")]
PUSHES_PAGE = 25
MESSAGES_PAGE = 50
# Seconds between two looks at a push's progress (htmx polling).
POLL_SECONDS = 2
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; base-uri 'none';"
                               " form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
}


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
    context.setdefault("viewer", None)
    response = templates.TemplateResponse(
        request, name, {"nav": NAV, "csrf": csrf_token(request), "path": request.url.path,
                        **context}, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response


def to_login() -> Response:
    return RedirectResponse("/ui/login", status_code=303)


async def page(request: Request) -> tuple[Gateway, Viewer] | Response:
    """The gateway and the signed-in viewer, or the redirect to sign in."""
    gateway = gateway_of(request)
    viewer = await viewer_of(request, gateway)
    if viewer is None:
        return to_login()
    return gateway, viewer


async def form_ok(request: Request) -> dict[str, str] | None:
    """The POSTed form's fields, or None when its CSRF token is not the session's."""
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    return fields if csrf_ok(request, fields.get("csrf")) else None


def forbidden(request: Request) -> Response:
    return render(request, "error.html", status_code=403,
                  message="This form has expired (or did not come from this dashboard). "
                          "Go back, reload the page and try again.")


async def common(gateway: Gateway, viewer: Viewer) -> dict[str, Any]:
    """What every signed-in page shows: the project and, for the operator, the switcher."""
    store = gateway.store
    project = None if viewer.project_id is None else await store.get_project(viewer.project_id)
    projects = await store.list_projects() if viewer.operator else []
    return {"viewer": viewer, "project": project, "projects": projects}


class ProjectView(NamedTuple):
    """What a page of the viewer's project is given: the gateway, the viewer, the project's id
    and what every signed-in page shows (``common``)."""

    gateway: Gateway
    viewer: Viewer
    project_id: int
    context: dict[str, Any]


Endpoint = Callable[[Request], Awaitable[Response]]


def project_page(handler: Callable[[Request, ProjectView], Awaitable[Response]]) -> Endpoint:
    """A page of the signed-in viewer's project: the sign-in redirect for nobody, and for an
    operator who has picked no project yet the overview with its switcher."""
    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        got = await page(request)
        if isinstance(got, Response):
            return got
        gateway, viewer = got
        context = await common(gateway, viewer)
        if viewer.project_id is None:
            return render(request, "overview.html", **context)
        return await handler(request, ProjectView(gateway, viewer, viewer.project_id, context))
    return endpoint


FormHandler = Callable[[Request, Gateway, Viewer, dict[str, str]], Awaitable[Response]]


def signed_form(handler: FormHandler) -> Endpoint:
    """A form's POST: the sign-in redirect for nobody, the "form expired" page (403) when its
    CSRF token is not the session's, else the handler with the form's fields."""
    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        got = await page(request)
        if isinstance(got, Response):
            return got
        gateway, viewer = got
        fields = await form_ok(request)
        if fields is None:
            return forbidden(request)
        return await handler(request, gateway, viewer, fields)
    return endpoint


# --- sign-in ------------------------------------------------------------------------------

async def login(request: Request) -> Response:
    gateway = gateway_of(request)
    operator = bool(gateway.settings.admin_password)
    if request.method == "GET":
        return render(request, "login.html", operator=operator)
    fields = await form_ok(request)
    if fields is None:
        return render(request, "login.html", status_code=403, operator=operator,
                      error="The form expired; please sign in again.")
    client_ip = request.client.host if request.client else None
    throttle = gateway.lookups.failures
    token = fields.get("token", "").strip()
    password = fields.get("password", "")
    try:
        if password and not token:
            if throttle is not None:
                throttle.check(client_ip)
            if not password_ok(gateway.settings, password):
                if throttle is not None:
                    throttle.failed(client_ip)
                raise ApiError(Code.AUTH_FAILED, "wrong password")
            session = {"operator": password_mark(session_key(gateway.settings),
                                                 gateway.settings.admin_password)}
        else:
            # The API's checks: throttle, unknown, revoked, inactive project, IP allow-list.
            await authenticate(gateway.lookups, request, token or None)
            session = {"token_hash": hash_token(token)}
    except ApiError as exc:
        if exc.code == Code.RATE_LIMITED:
            message = (f"Too many wrong sign-ins from this address; try again in "
                       f"{exc.extra.get('retry_after', 60)} seconds.")
        elif exc.code == Code.AUTH_FAILED:
            message = "That token (or password) is not valid."
        else:
            message = exc.message
        return render(request, "login.html", status_code=401, operator=operator, error=message)
    request.session.clear()     # a new session: new CSRF token
    request.session.update(session)
    return RedirectResponse("/ui/", status_code=303)


async def logout(request: Request) -> Response:
    if await form_ok(request) is None:
        return forbidden(request)
    request.session.clear()
    return to_login()


@signed_form
async def choose_project(request: Request, gateway: Gateway, viewer: Viewer,
                         fields: dict[str, str]) -> Response:
    if viewer.operator:
        wanted = fields.get("project", "")
        if wanted.isdigit() and await gateway.store.get_project(int(wanted)) is not None:
            request.session["project"] = int(wanted)
    return RedirectResponse("/ui/", status_code=303)


# --- overview -----------------------------------------------------------------------------

@project_page
async def overview(request: Request, view: ProjectView) -> Response:
    gateway, viewer, project_id, context = view
    store = gateway.store
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    counts = await store.project_counts_since(project_id, midnight.timestamp())
    channels = await store.list_channels(project_id)
    gauges = gateway.store_gauges
    await gauges.refresh()
    snap = gauges.snapshot
    rows = []
    for channel in channels:
        rows.append({"channel": channel,
                     "app": APPLICATION_CODES.get(channel.application, ""),
                     "queued": sum(n for (cid, _), n in snap.queue.items() if cid == channel.id),
                     "up": snap.channels_up.get(channel.id),
                     "phones": snap.phones_online.get(channel.id)})
    today = {
        "accepted": sum(counts.values()),
        "sent": sum(counts.get(s, 0) for s in ("submitted", "delivered", "read")),
        "delivered": counts.get("delivered", 0) + counts.get("read", 0),
        "failed": sum(counts.get(s, 0) for s in ("failed", "refunded", "expired")),
    }
    backlog = (await store.outbox_stats())["pending"] if viewer.operator else None
    return render(request, "overview.html", today=today, channels=rows, backlog=backlog,
                  **context)


# --- send ---------------------------------------------------------------------------------

@project_page
async def send(request: Request, view: ProjectView) -> Response:
    gateway, viewer, project_id, context = view
    choices = await application_choices(gateway, project_id)
    values = {"application": choices[0][0] if choices else "", "numbers": "",
              "message": "", "media": "", "priority": "0", "send_at": ""}
    if request.method == "GET":
        return render(request, "send.html", choices=choices, values=values,
                      once=secrets.token_urlsafe(16), **context)
    fields = await form_ok(request)
    if fields is None:
        return forbidden(request)
    values.update({k: fields.get(k, "") for k in values})
    once = fields.get("once", "")
    try:
        result = await accept_form(gateway, viewer, values, once)
    except ApiError as exc:
        data = exc.extra.get("data")
        refused = ([refusal_row(item) for item in data if "msg_id" not in item]
                   if isinstance(data, list) else None)
        return render(request, "send.html", status_code=422, choices=choices, values=values,
                      error=exc.message, refused=refused, once=once, **context)
    # Post/redirect/get: reloading the push's page sends nothing again.
    refused = result.pop("refused")
    result["refused"] = refused[:FLASH_REFUSALS]
    result["more_refused"] = len(refused) - len(result["refused"])
    request.session["sent"] = result
    return RedirectResponse(f"/ui/pushes/{result['push_id']}", status_code=303)


# Refusals a push's page shows after the form (the session cookie holds them); the push
# route's answer, and the CSV form's rejects file, list them all.
FLASH_REFUSALS = 10


async def application_choices(gateway: Gateway, project_id: int) -> list[tuple[str, str]]:
    """The project's applications as (code, label naming its channels), for a select."""
    channels = await gateway.store.list_channels(project_id)
    return [(str(code), f"{code} — {APPLICATION_CODES.get(code, 'application')}"
             f" ({', '.join(c.name for c in channels if c.application == code)})")
            for code in sorted({c.application for c in channels})]


def refusal_row(item: dict[str, Any]) -> dict[str, Any]:
    """A refused entry of a push answer's ``data`` as the refusal tables show it."""
    return {"number": item.get("number", ""), "code": item.get("status", ""),
            "reason": item.get("message", "")}


async def accept_form(gateway: Gateway, viewer: Viewer, values: dict[str, str],
                      once: str = "") -> dict[str, Any]:
    """The form as a push, through the push route's path: the body decoded as Picky's, the
    channel resolved, ``accept_body`` (``api/push.py``) and ``start_sending``. ``once`` (a
    random value the form carries) is its idempotency key: a form sent twice is one push."""
    assert viewer.project_id is not None
    numbers = [n.strip() for n in values["numbers"].replace(",", "\n").splitlines() if n.strip()]
    if not numbers:
        raise ApiError(Code.INVALID_FIELD, "give at least one number, one a line")
    raw: dict[str, Any] = {"application": values["application"],
                           "globalmessage": values["message"],
                           "priority": values["priority"] or "0",
                           "data": [{"number": n} for n in numbers]}
    if values["media"].strip():
        raw["globalmedia"] = values["media"].strip()
    if values.get("send_at", "").strip():
        raw["send_at"] = values["send_at"].strip()
    if viewer.token_id is not None:
        gateway.rate_limiter.check(viewer.token_id)
    body = decode_push(orjson.dumps(raw))
    channel = await resolve_channel(gateway.lookups, viewer.project_id, body.application, None)
    key = f"ui:{once}" if once and len(once) <= 64 and once.isascii() and once.isprintable() \
        else None
    accepted = await accept_body(gateway.store, gateway.settings, gateway.limits,
                                 gateway.media_names, viewer.project_id, channel, body, key)
    plan, result = accepted.plan, accepted.result
    if not result.replayed:
        await start_sending(gateway, channel, accepted)
    answer = entries(plan, result.message_ids)
    return {"push_id": result.push_id, "accepted": len(plan.accepted),
            "credit": format_credits(plan.credit_total),
            "balance": format_credits(result.balance_micro),
            "refused": [refusal_row(item) for item in answer if "msg_id" not in item]}


# --- pushes -------------------------------------------------------------------------------

def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() and len(value) < 19 else None


@project_page
async def pushes(request: Request, view: ProjectView) -> Response:
    gateway, _, project_id, context = view
    before = _int(request.query_params.get("before"))
    rows = await gateway.store.list_pushes(project_id, before, PUSHES_PAGE + 1)
    older = rows[PUSHES_PAGE - 1].id if len(rows) > PUSHES_PAGE else None
    return render(request, "pushes.html", pushes=rows[:PUSHES_PAGE], older=older,
                  first=before is None, **context)


LIVE = (State.QUEUED.value, State.SENDING.value, State.SUBMITTED.value)


async def _push_context(request: Request, gateway: Gateway,
                        viewer: Viewer) -> dict[str, Any] | None:
    assert viewer.project_id is not None
    push_id = _int(request.path_params["push_id"])
    push = None if push_id is None else await gateway.store.get_push(viewer.project_id, push_id)
    if push is None:
        return None
    after = _int(request.query_params.get("after")) or 0
    messages = await gateway.store.push_messages(viewer.project_id, push.id, after,
                                                 MESSAGES_PAGE + 1)
    more = messages[MESSAGES_PAGE - 1].id if len(messages) > MESSAGES_PAGE else None
    counts = push.counts
    return {"push": push, "messages": messages[:MESSAGES_PAGE], "after": after, "more": more,
            "counts": sorted(counts.items()),
            "live": any(counts.get(s, 0) for s in LIVE),
            "cancellable": (counts.get(State.QUEUED.value, 0)
                            + counts.get(State.SCHEDULED.value, 0)) > 0,
            "ended": sum(n for s, n in counts.items() if State(s) in FINAL_STATES),
            "poll": POLL_SECONDS}


@project_page
async def push_page(request: Request, view: ProjectView) -> Response:
    gateway, viewer, _, context = view
    detail = await _push_context(request, gateway, viewer)
    if detail is None:
        return render(request, "error.html", status_code=404, message="No such push here.",
                      **context)
    flash = request.session.pop("flash", None)
    sent = request.session.pop("sent", None)
    if not (isinstance(sent, dict) and sent.get("push_id") == detail["push"].id):
        sent = None
    return render(request, "push.html", flash=flash, sent=sent, **detail, **context)


async def push_live(request: Request) -> Response:
    """The live part of a push's page (counts and the page of messages), polled by htmx."""
    got = await page(request)
    if isinstance(got, Response):
        return got
    gateway, viewer = got
    if viewer.project_id is None:
        return to_login()
    detail = await _push_context(request, gateway, viewer)
    if detail is None:
        return Response("no such push", status_code=404)
    return render(request, "_live.html", viewer=viewer, **detail)


@signed_form
async def push_cancel(request: Request, gateway: Gateway, viewer: Viewer,
                      _fields: dict[str, str]) -> Response:
    push_id = _int(request.path_params["push_id"])
    if viewer.project_id is None or push_id is None:
        return to_login()
    answer = await cancel_push(gateway.store, viewer.project_id, push_id, time.time())
    if answer is not None:
        request.session["flash"] = (f"{answer['cancelled']} messages cancelled, "
                                    f"{answer['refunded']} credits refunded.")
    return RedirectResponse(f"/ui/pushes/{push_id}", status_code=303)


async def push_csv(request: Request) -> Response:
    got = await page(request)
    if isinstance(got, Response):
        return got
    gateway, viewer = got
    push_id = _int(request.path_params["push_id"])
    push = (None if viewer.project_id is None or push_id is None
            else await gateway.store.get_push(viewer.project_id, push_id))
    if push is None or viewer.project_id is None:
        return Response("no such push", status_code=404)
    return StreamingResponse(
        csv_chunks(gateway.store, push, viewer.project_id), media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="push-{push.id}.csv"'})


ROUTES = [
    Route("/", overview),
    Route("/login", login, methods=["GET", "POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/project", choose_project, methods=["POST"]),
    Route("/send", send, methods=["GET", "POST"]),
    Route("/pushes", pushes),
    Route("/pushes/{push_id}", push_page),
    Route("/pushes/{push_id}/live", push_live),
    Route("/pushes/{push_id}/cancel", push_cancel, methods=["POST"]),
    Route("/pushes/{push_id}/report.csv", push_csv),
]
