"""`pushgate channel …`: the channels a project sends through, and their callback secrets."""

from __future__ import annotations

import json
import time
from typing import Any

import typer
from rich.table import Table

from pushgate.channels.base import KIND_NAMES
from pushgate.cli.common import (
    JsonOption,
    console,
    err_console,
    fail,
    project_id_of,
    show,
    with_store,
)
from pushgate.config import Settings
from pushgate.core.channels import (
    APPLICATION_CODES,
    ChannelSpec,
    PriceUnit,
    default_rules,
    parse_country_codes,
)
from pushgate.core.pricing import format_credits, parse_credits
from pushgate.store.base import Store

channel_app = typer.Typer(help="Channels a project sends through.", no_args_is_help=True)


@channel_app.command("add")
def channel_add(
    project: str = typer.Option(..., "--project", help="Project id or name."),
    kind: str = typer.Option("sandbox", "--type", help="Connector kind: "
                             f"{', '.join(KIND_NAMES)} (fields: `pushgate channel kinds`)."),
    application: int = typer.Option(1, "--application",
                                    help="Picky application code this channel serves."),
    price: str = typer.Option("0", "--price", help="Credits per unit, e.g. 0.005."),
    price_unit: PriceUnit = typer.Option(None, "--price-unit",
                                         help="message, segment or call (default by app)."),
    rate: float = typer.Option(None, "--rate", help="Messages per second; 0 = unlimited "
                               "(default: the connector's, e.g. 80 for WhatsApp Cloud)."),
    delay_ms: int = typer.Option(None, "--delay-ms", help="Pause between two messages "
                                 "(default: the connector's, e.g. 15 s for WhatsApp bridges)."),
    jitter_ms: int = typer.Option(None, "--jitter-ms", help="Random extra pause, up to this "
                                  "(default: the connector's, e.g. 30 s for WhatsApp bridges)."),
    max_chars: int = typer.Option(None, "--max-chars"),
    max_segments: int = typer.Option(None, "--max-segments"),
    name: str = typer.Option("", "--name"),
    config: str = typer.Option("{}", "--config", help="Connector config as JSON."),
    as_json: bool = JsonOption,
) -> None:
    """Add a channel to a project. The connector checks its --config before anything is
    stored. Prints the channel's callback URL: give it to the provider (status webhooks,
    receipts, inbound messages). A WhatsApp bridge channel given no callback secret gets a new
    one, printed with the setting to make on the bridge (`channel callback-secret` shows
    it again)."""
    from pushgate.channels.base import channel_class, known_kinds, split_config

    if kind not in known_kinds():
        fail(f"unknown channel type {kind!r}; known: {', '.join(known_kinds())}")
    connector = channel_class(kind)
    try:
        price_micro = parse_credits(price)
        config_data = json.loads(config)
        if not isinstance(config_data, dict):
            raise ValueError("--config must be a JSON object")
        connector_config, gateway_config = split_config(config_data)
        connector_config, generated_secret = connector.with_callback_secret(connector_config)
        if "check_price" in gateway_config:   # refused here, not at a push
            try:
                parse_credits(gateway_config["check_price"])
            except ValueError as exc:
                raise ValueError(f"check_price: {exc}") from None
        if "allowed_country_codes" in gateway_config:
            gateway_config["allowed_country_codes"] = parse_country_codes(
                gateway_config["allowed_country_codes"])
        config_data = {**connector.validate_config(connector_config), **gateway_config}
    except (ValueError, json.JSONDecodeError) as exc:
        fail(f"invalid --config for {kind}: {exc}" if "config" not in str(exc) else str(exc))
        return
    rate = connector.default_rate_per_second if rate is None else rate
    delay_ms = connector.default_delay_ms if delay_ms is None else delay_ms
    jitter_ms = connector.default_jitter_ms if jitter_ms is None else jitter_ms
    if rate < 0 or delay_ms < 0 or jitter_ms < 0:
        fail("--rate, --delay-ms and --jitter-ms cannot be negative")
    if connector.max_rate_per_second is not None and rate > connector.max_rate_per_second:
        fail(f"--rate {rate:g} is above what {kind} allows ({connector.max_rate_per_second:g}/s)")
    if config_data.get("warmup_first_day") and not config_data.get("warmup_started_at"):
        config_data["warmup_started_at"] = time.time()   # the ramp starts with the channel
    rules = default_rules(application)
    if price_unit is not None:
        rules["price_unit"] = price_unit
    if max_chars is not None:
        rules["max_chars"] = max_chars
    if max_segments is not None:
        rules["max_segments"] = max_segments

    async def run(store: Store) -> dict[str, Any]:
        project_id = await project_id_of(store, project)
        spec = ChannelSpec(id=0, project_id=project_id, kind=kind, application=application,
                           price_micro=price_micro, rate_per_second=rate, delay_ms=delay_ms,
                           jitter_ms=jitter_ms, name=name, config=config_data, **rules)
        same = [c for c in await store.list_channels(project_id) if c.application == application]
        channel = await store.add_channel(spec)
        if same:
            _warn_shared_application(application, same + [channel])
        added = _channel_dict(channel)
        added["callback_url"] = Settings().callback_url(channel.id)
        return added

    added = with_store(run)
    setup = connector.callback_setup(config_data, added["callback_url"])
    if generated_secret:
        added[connector.callback_secret_key] = generated_secret
    if setup:
        added["callback_setup"] = "\n".join(setup)
    if as_json:
        show(added, as_json)
        return
    shown_below = {"callback_setup", connector.callback_secret_key}
    show({k: v for k, v in added.items() if k not in shown_below}, as_json, "channel added")
    _print_callback_setup(connector.callback_secret_key, generated_secret, config_data, setup)


def _print_callback_setup(secret_key: str, generated: str | None, config: dict[str, Any],
                          setup: list[str]) -> None:
    if generated:
        console.print(f"\nA new callback secret ({secret_key}) was made for this channel:")
        console.print(f"  [bold]{generated}[/bold]")
    if config.get("insecure_callbacks"):
        err_console.print("[red]warning:[/red] insecure_callbacks is on: this channel accepts "
                          "callbacks without a secret, from anyone who reaches the gateway. "
                          "Use it for local development only.")
    if setup:
        console.print()
        for line in setup:
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        if not Settings().public_url:
            console.print("[yellow]note:[/yellow] the callback URL is built on this machine's "
                          "listen address; set PUSHGATE_PUBLIC_URL to the address the bridge "
                          "reaches.")


def _warn_shared_application(application: int, channels: list[ChannelSpec]) -> None:
    """Several channels of one project serve one application code: say which one a push with
    only `application` reaches (store.find_channel's rule), on stderr so --json stays clean."""
    chosen = min(channels, key=lambda c: (c.paused, c.id))
    ids = ", ".join(str(c.id) for c in channels)
    err_console.print(
        f"[yellow]warning:[/yellow] the project's channels {ids} all serve application "
        f"{application}; a push with only `application` {application} goes to the unpaused "
        f"one with the lowest id (now channel {chosen.id}). Send `channel_id` to pick another.")


@channel_app.command("kinds")
def channel_kinds(as_json: bool = JsonOption) -> None:
    """The channel kinds and the --config keys each takes (docs/channel-config.md)."""
    from pushgate.channels.config import kinds_description

    kinds = kinds_description()
    if as_json:
        typer.echo(json.dumps(kinds, indent=2))
        return
    for entry in kinds:
        keys = ", ".join(f["name"] + ("" if f["required"] else "?") for f in entry["fields"])
        console.print(f"[bold]{entry['kind']}[/bold]: {entry['summary']}\n  keys: {keys}")


@channel_app.command("list")
def channel_list(
    project: str = typer.Option(None, "--project", help="Project id or name (default: all)."),
    as_json: bool = JsonOption,
) -> None:
    """List channels."""

    async def run(store: Store) -> list[dict[str, Any]]:
        project_id = await project_id_of(store, project) if project else None
        return [_channel_dict(c) for c in await store.list_channels(project_id)]

    rows = with_store(run)
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table("id", "project", "type", "application", "price", "unit", "rate/s", "paused")
    for row in rows:
        table.add_row(str(row["id"]), str(row["project_id"]), row["type"],
                      f"{row['application']} {row['application_name']}", row["price"],
                      row["price_unit"], str(row["rate_per_second"]),
                      f"{row['paused']} {row['paused_reason']}".strip())
    console.print(table)


@channel_app.command("pause")
def channel_pause(channel_id: int, resume: bool = typer.Option(False, "--resume"),
                  as_json: bool = JsonOption) -> None:
    """Stop sending on a channel (pushes are still accepted and queued); --resume restarts."""

    from pushgate.api.devices import pause_channel

    async def run(store: Store) -> ChannelSpec | None:
        return await pause_channel(store, channel_id, paused=not resume)

    channel = with_store(run)
    if channel is None:
        fail(f"no channel {channel_id}")
        return
    show(_channel_dict(channel), as_json)


@channel_app.command("callback-secret")
def channel_callback_secret(
    channel_id: int,
    secret: str = typer.Option(None, "--secret", help="Use this secret instead of a new one."),
    rotate: bool = typer.Option(False, "--rotate", help="Replace the channel's secret (the "
                                "bridge must be given the new one; until then its callbacks "
                                "are refused)."),
    insecure: bool = typer.Option(False, "--insecure", help="Remove the secret and accept "
                                  "callbacks without one, from anyone (local development)."),
    as_json: bool = JsonOption,
) -> None:
    """Give a channel a callback secret (created now if it has none, e.g. a channel added
    before secrets were generated) and print the setting to make on the provider's side."""
    from pushgate.channels.base import GATEWAY_CONFIG_KEYS, channel_class

    async def run(store: Store) -> tuple[ChannelSpec, str | None]:
        channel = await store.get_channel(channel_id)
        if channel is None:
            fail(f"no channel {channel_id}")
        assert channel is not None
        connector = channel_class(channel.kind)
        key = connector.callback_secret_key
        if not key:
            fail(f"channel {channel_id} is a {channel.kind} channel, whose callbacks are "
                  "checked with its own credentials; it takes no separate callback secret")
        config = dict(channel.config)
        made = None
        if insecure:
            config.pop(key, None)
            config["insecure_callbacks"] = True
        else:
            config.pop("insecure_callbacks", None)
            if secret or rotate:
                config.pop(key, None)
            if secret:
                config[key] = secret
            else:
                config, made = connector.with_callback_secret(config)
        if config != channel.config:
            try:
                connector.validate_config({k: v for k, v in config.items()
                                           if k not in GATEWAY_CONFIG_KEYS})
            except ValueError as exc:
                fail(str(exc))
            channel = await store.update_channel(channel_id, config=config) or channel
        return channel, made

    channel, made = with_store(run)
    connector = channel_class(channel.kind)
    key = connector.callback_secret_key
    callback_url = Settings().callback_url(channel.id)
    setup = connector.callback_setup(channel.config, callback_url)
    if as_json:
        typer.echo(json.dumps({"channel_id": channel.id, "callback_url": callback_url,
                               key: channel.config.get(key),
                               "insecure_callbacks": bool(channel.config.get(
                                   "insecure_callbacks")),
                               "callback_setup": "\n".join(setup)}))
        return
    if not made and channel.config.get(key):
        console.print(f"Channel {channel.id}'s callback secret ({key}):")
        console.print(f"  [bold]{channel.config[key]}[/bold]")
    _print_callback_setup(key, made, channel.config, setup)


def _channel_dict(channel: ChannelSpec) -> dict[str, Any]:
    return {"id": channel.id, "project_id": channel.project_id, "type": channel.kind,
            "name": channel.name, "application": channel.application,
            "application_name": APPLICATION_CODES.get(channel.application, ""),
            "price": format_credits(channel.price_micro), "price_unit": str(channel.price_unit),
            "rate_per_second": channel.rate_per_second, "delay_ms": channel.delay_ms,
            "jitter_ms": channel.jitter_ms, "max_chars": channel.max_chars,
            "max_segments": channel.max_segments, "paused": channel.paused,
            "paused_reason": channel.paused_reason}
