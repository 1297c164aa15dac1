"""`pushgate device …`: pairing, listing and revoking the phones of android channels."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import typer
from rich.table import Table

from pushgate.cli.common import JsonOption, console, fail, show, with_store
from pushgate.config import Settings
from pushgate.store.base import Store

device_app = typer.Typer(help="Phones running SMS Gateway for Android (android channels).",
                         no_args_is_help=True)


@device_app.command("pair")
def device_pair(
    channel_id: int = typer.Option(..., "--channel", help="The android channel's id."),
    server_url: str = typer.Option(None, "--server-url",
                                   help="The gateway's address as the phone reaches it "
                                        "(default PUSHGATE_PUBLIC_URL)."),
    rotate: bool = typer.Option(False, "--rotate-token",
                                help="Replace the private token (paired phones keep working; "
                                     "new ones need the new token)."),
    as_json: bool = JsonOption,
) -> None:
    """Print what to type into the app to pair a phone: the server URL and the channel's
    private token (created now if the channel has none), with QR codes of both."""
    import segno

    from pushgate.channels.android.phones import api_url_of, private_token

    settings = Settings()

    async def run(store: Store) -> str:
        channel = await store.get_channel(channel_id)
        if channel is None:
            fail(f"no channel {channel_id}")
        assert channel is not None
        if channel.kind != "android":
            fail(f"channel {channel_id} is a {channel.kind} channel; phones pair with "
                  "android channels (`pushgate channel add --type android`)")
        return await private_token(store, channel, rotate)

    token = with_store(run)
    api_url = api_url_of(server_url or settings.gateway_url(), settings.mobile_api_prefix)
    if as_json:
        typer.echo(json.dumps({"channel_id": channel_id, "api_url": api_url,
                               "private_token": token}))
        return
    console.print(f"\n[bold]Pair a phone with channel {channel_id}[/bold] "
                  "(SMS Gateway for Android, private server):")
    console.print("  1. In the app, open Settings → Cloud Server and enter")
    console.print(f"       API URL:        [bold]{api_url}[/bold]")
    console.print(f"       Private Token:  [bold]{token}[/bold]")
    console.print("  2. On the Home tab, turn Cloud server on and tap Offline → Online.")
    if not server_url and not settings.public_url:
        console.print("[yellow]note:[/yellow] the URL is this machine's listen address; set "
                      "PUSHGATE_PUBLIC_URL (or --server-url) to the address the phone reaches.")
    for label, value in (("API URL", api_url), ("Private Token", token)):
        console.print(f"\n{label}:")
        segno.make(value, error="m").terminal(out=sys.stdout, compact=True)


@device_app.command("list")
def device_list(
    channel_id: int = typer.Option(None, "--channel", help="One channel's phones only."),
    as_json: bool = JsonOption,
) -> None:
    """List paired phones: online or not, last seen, messages in hand."""
    from pushgate.channels.android import PhoneSettings
    from pushgate.channels.android.phones import app_version, device_state

    async def run(store: Store) -> list[dict[str, Any]]:
        now = time.time()
        offline_after: dict[int, float] = {}
        rows = []
        for device in await store.list_devices(channel_id):
            if device.channel_id not in offline_after:
                channel = await store.get_channel(device.channel_id)
                offline_after[device.channel_id] = PhoneSettings.from_config(
                    channel.config if channel else {}).offline_after_seconds
            status = device_state(device, now, offline_after[device.channel_id])
            rows.append({"id": device.id, "channel_id": device.channel_id, "name": device.name,
                         "status": status, "last_seen_at": device.last_seen_at,
                         "in_flight": device.in_flight,
                         "version": app_version(device.user_agent)})
        return rows

    rows = with_store(run)
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table("id", "channel", "name", "status", "last seen", "in flight", "app")
    for row in rows:
        seen = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["last_seen_at"])) \
            if row["last_seen_at"] else ""
        table.add_row(row["id"], str(row["channel_id"]), row["name"], row["status"], seen,
                      str(row["in_flight"]), row["version"] or "")
    console.print(table)


@device_app.command("revoke")
def device_revoke(device_id: str, as_json: bool = JsonOption) -> None:
    """Revoke a phone's token: it can no longer fetch or report. Messages it held go to the
    channel's other phones when their lease ends (counted as possible re-sends)."""

    async def run(store: Store) -> int:
        return await store.revoke_devices(time.time(), device_id=device_id)

    if not with_store(run):
        fail(f"no active device {device_id!r}")
    show({"device_id": device_id, "revoked": True}, as_json)
