"""The dashboard's operations pages: channels (state, pause and resume, the callback URL to
give the provider), phones (online or not, queue, revoke, pairing with QR codes) and webhooks
(the project's URLs, reports waiting for them, retry now).

Every action is the call the CLI makes (``api.devices.pause_channel``,
``store.revoke_devices``, ``channels.android.phones.private_token``) on an object first
checked to belong to the signed-in project: an id of another project's is answered as
unknown."""

from __future__ import annotations

import time
from typing import Any

import segno
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from pushgate.api.devices import pause_channel, stopped_by_device_action
from pushgate.api.state import Gateway
from pushgate.channels.android import PhoneSettings
from pushgate.channels.android.phones import (
    api_url_of,
    app_version,
    device_state,
    is_phone,
    private_token,
)
from pushgate.channels.base import channel_class
from pushgate.core.channels import APPLICATION_CODES, ChannelSpec
from pushgate.ui.pages import (
    ProjectView,
    _int,
    common,
    project_page,
    render,
    signed_form,
)
from pushgate.ui.session import Viewer

# Reports listed per kind (event, incoming) on the webhooks page.
DELIVERIES_PAGE = 50
RETRY_KINDS = ("event", "incoming")


async def _own_channel(gateway: Gateway, viewer: Viewer, raw: str | None) -> ChannelSpec | None:
    """The channel of that id if it is the signed-in project's, else None."""
    channel_id = _int(raw)
    if channel_id is None or viewer.project_id is None:
        return None
    channel = await gateway.store.get_channel(channel_id)
    return channel if channel is not None and channel.project_id == viewer.project_id else None


def _flash(request: Request, text: str, to: str) -> Response:
    request.session["flash"] = text
    return RedirectResponse(to, status_code=303)


def _not_found(request: Request, context: dict[str, Any], what: str) -> Response:
    return render(request, "error.html", status_code=404, message=f"No such {what} here.",
                  **context)


# --- channels -----------------------------------------------------------------------------

def channel_state(channel: ChannelSpec, worker: str | None, phones_online: int | None) -> str:
    """paused (by the operator), stopped (Picky's stop-message-queue: the next push resumes
    it), up (a worker holds its lease, or for a phone channel a phone is online), or
    waiting (no worker serving it, or no phone online)."""
    if stopped_by_device_action(channel):
        return "stopped"
    if channel.paused:
        return "paused"
    if phones_online is not None:
        return "up" if phones_online else "waiting"
    return "up" if worker else "waiting"


def callback_secret(channel: ChannelSpec) -> dict[str, str] | None:
    """Which callback secret setting a bridge channel has, and whether it is set (never the
    secret itself); None for kinds checked with their own credentials."""
    try:
        key = channel_class(channel.kind).callback_secret_key
    except ValueError:
        return None
    if not key:
        return None
    if channel.config.get("insecure_callbacks"):
        status = "none (insecure_callbacks: anyone may call back)"
    else:
        status = "set" if channel.config.get(key) else "not set"
    return {"key": key, "status": status}


@project_page
async def channels(request: Request, view: ProjectView) -> Response:
    gateway, _, project_id, context = view
    store = gateway.store
    now = time.time()
    specs = await store.list_channels(project_id)
    workers = await store.channel_workers([c.id for c in specs], now) if specs else {}
    rows = []
    for channel in specs:
        online = None
        if is_phone(channel):
            after = PhoneSettings.from_config(channel.config).offline_after_seconds
            online = sum(1 for d in await store.list_devices(channel.id)
                         if device_state(d, now, after) == "online")
        queue = await store.channel_queue_counts(channel.id)
        rows.append({"channel": channel, "app": APPLICATION_CODES.get(channel.application, ""),
                     "state": channel_state(channel, workers.get(channel.id), online),
                     "worker": workers.get(channel.id), "phones": online,
                     "queued": queue.get("queued", 0), "sending": queue.get("sending", 0),
                     "callback_url": gateway.settings.callback_url(channel.id),
                     "secret": callback_secret(channel)})
    return render(request, "channels.html", channels=rows,
                  public_url=bool(gateway.settings.public_url),
                  flash=request.session.pop("flash", None), **context)


@signed_form
async def channel_pause(request: Request, gateway: Gateway, viewer: Viewer,
                        fields: dict[str, str]) -> Response:
    channel = await _own_channel(gateway, viewer, request.path_params["channel_id"])
    if channel is None:
        return _not_found(request, await common(gateway, viewer), "channel")
    paused = fields.get("action") != "resume"
    await pause_channel(gateway.store, channel.id, paused)
    gateway.lookups.forget()
    if gateway.dispatcher is not None:
        gateway.dispatcher.refresh_soon()
    word = "paused: pushes are still accepted and queued" if paused else "resumed"
    return _flash(request, f"Channel #{channel.id} {word}.", "/ui/channels")


# --- phones -------------------------------------------------------------------------------

def qr_svg(value: str, title: str) -> Markup:
    """A QR code of ``value`` as inline SVG (no request, nothing for the CSP to allow)."""
    return Markup(segno.make(value, error="m").svg_inline(scale=4, border=4, title=title,
                                                          svgclass="qr"))


async def _phones_context(gateway: Gateway, viewer: Viewer) -> dict[str, Any]:
    assert viewer.project_id is not None
    store = gateway.store
    now = time.time()
    phone_channels = [c for c in await store.list_channels(viewer.project_id) if is_phone(c)]
    groups = []
    for channel in phone_channels:
        after = PhoneSettings.from_config(channel.config).offline_after_seconds
        devices = [{"device": d, "state": device_state(d, now, after),
                    "version": app_version(d.user_agent)}
                   for d in await store.list_devices(channel.id)]
        queue = await store.channel_queue_counts(channel.id)
        groups.append({"channel": channel, "devices": devices,
                       "queued": queue.get("queued", 0), "sending": queue.get("sending", 0)})
    return {"groups": groups, "server_url": gateway.settings.gateway_url(),
            "public_url": bool(gateway.settings.public_url)}


@project_page
async def phones(request: Request, view: ProjectView) -> Response:
    gateway, viewer, _, context = view
    return render(request, "phones.html", flash=request.session.pop("flash", None),
                  **await _phones_context(gateway, viewer), **context)


@signed_form
async def phone_pair(request: Request, gateway: Gateway, viewer: Viewer,
                     fields: dict[str, str]) -> Response:
    """The pairing values (the app's API URL and the channel's private token), shown once in
    this answer with their QR codes, as ``pushgate device pair`` prints them."""
    context = await common(gateway, viewer)
    channel = await _own_channel(gateway, viewer, fields.get("channel"))
    if channel is None or not is_phone(channel):
        return _not_found(request, context, "phone channel")
    server = fields.get("server_url", "").strip() or gateway.settings.gateway_url()
    if not server.startswith(("http://", "https://")):
        return render(request, "phones.html", status_code=422,
                      error="The server address starts with http:// or https://.",
                      **await _phones_context(gateway, viewer), **context)
    token = await private_token(gateway.store, channel, rotate=fields.get("rotate") == "on")
    gateway.lookups.forget()
    api_url = api_url_of(server, gateway.settings.mobile_api_prefix)
    pairing = {"channel": channel, "api_url": api_url, "token": token,
               "api_qr": qr_svg(api_url, "QR code of the API URL"),
               "token_qr": qr_svg(token, "QR code of the private token")}
    return render(request, "phones.html", pairing=pairing,
                  **await _phones_context(gateway, viewer), **context)


@signed_form
async def phone_revoke(request: Request, gateway: Gateway, viewer: Viewer,
                       _fields: dict[str, str]) -> Response:
    device_id = request.path_params["device_id"]
    device = await gateway.store.get_device(device_id)
    if device is None or viewer.project_id is None or device.project_id != viewer.project_id:
        return _not_found(request, await common(gateway, viewer), "phone")
    revoked = await gateway.store.revoke_devices(time.time(), device_id=device.id)
    text = (f"Phone {device.name or device.id} revoked: it can no longer fetch or report."
            if revoked else f"Phone {device.name or device.id} was already revoked.")
    return _flash(request, text, "/ui/phones")


# --- webhooks -----------------------------------------------------------------------------

@project_page
async def webhooks(request: Request, view: ProjectView) -> Response:
    gateway, _, project_id, context = view
    deliveries = await gateway.store.webhook_deliveries(project_id, DELIVERIES_PAGE)
    deliveries.sort(key=lambda d: d.at, reverse=True)
    failed = sum(1 for d in deliveries if d.attempts or d.next_attempt_at is None)
    return render(request, "webhooks.html", deliveries=deliveries, failed=failed,
                  schedule=gateway.settings.webhook_schedule(), limit=DELIVERIES_PAGE,
                  flash=request.session.pop("flash", None), **context)


@signed_form
async def webhook_retry(request: Request, gateway: Gateway, viewer: Viewer,
                        fields: dict[str, str]) -> Response:
    if viewer.project_id is None:
        return RedirectResponse("/ui/", status_code=303)
    kind = fields.get("kind") or None
    item_id = _int(fields.get("id"))
    if kind is not None and (kind not in RETRY_KINDS or item_id is None):
        return _not_found(request, await common(gateway, viewer), "report")
    moved = await gateway.store.retry_webhooks_now(viewer.project_id, time.time(), kind,
                                                   item_id)
    if kind is not None and not moved:
        return _not_found(request, await common(gateway, viewer), "failed report")
    return _flash(request, f"{moved} report{'s' if moved != 1 else ''} will be tried again now.",
                  "/ui/webhooks")


ROUTES = [
    Route("/channels", channels),
    Route("/channels/{channel_id}/pause", channel_pause, methods=["POST"]),
    Route("/phones", phones),
    Route("/phones/pair", phone_pair, methods=["POST"]),
    Route("/phones/{device_id}/revoke", phone_revoke, methods=["POST"]),
    Route("/webhooks", webhooks),
    Route("/webhooks/retry", webhook_retry, methods=["POST"]),
]
