"""The ``pushgate`` command: run the gateway and manage projects, tokens, channels, credits.

Every management command takes ``--json`` for scripts; secrets (tokens, webhook secrets) are
printed once, at creation, and only their hashes are kept.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pushgate.channels.base import KIND_NAMES
from pushgate.config import Settings
from pushgate.core.addresses import UrlError
from pushgate.core.channels import (
    APPLICATION_CODES,
    ChannelSpec,
    PriceUnit,
    default_rules,
    parse_country_codes,
)
from pushgate.core.pricing import format_credits, parse_credits
from pushgate.core.tokens import hash_token, new_token, new_webhook_secret
from pushgate.outbound import AddressRefused, vet_url
from pushgate.store.base import Store
from pushgate.store.errors import StoreUnavailable
from pushgate.store.factory import store_for_url

T = TypeVar("T")

app = typer.Typer(help="pushgate: a self-hosted message push gateway.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
project_app = typer.Typer(help="Projects: balances and webhooks.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
channel_app = typer.Typer(help="Channels a project sends through.", no_args_is_help=True)
credits_app = typer.Typer(help="Project credit.", no_args_is_help=True)
docs_app = typer.Typer(help="Generated documentation.", no_args_is_help=True)
app.add_typer(project_app, name="project")
app.add_typer(token_app, name="token")
app.add_typer(channel_app, name="channel")
app.add_typer(credits_app, name="credits")
app.add_typer(docs_app, name="docs")

console = Console()
err_console = Console(stderr=True)

JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON.")


def _fail(message: str, code: int = 1) -> None:
    # soft_wrap: one line however narrow the terminal, so logs and scripts see it whole.
    err_console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def _with_store(fn: Callable[[Store], Awaitable[T]]) -> T:
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
        _fail(str(exc))
        raise  # unreachable


def _print(data: dict[str, Any], as_json: bool, title: str | None = None) -> None:
    if as_json:
        typer.echo(json.dumps(data, default=str))
        return
    table = Table(title=title, show_header=False)
    for key, value in data.items():
        table.add_row(str(key), str(value))
    console.print(table)


async def _project_id(store: Store, project: str) -> int:
    if project.isdigit():
        found = await store.get_project(int(project))
    else:
        found = await store.find_project(project)
    if found is None:
        _fail(f"no project {project!r}")
    assert found is not None
    return found.id


# --- running ------------------------------------------------------------------------------------
@app.command()
def migrate(as_json: bool = JsonOption) -> None:
    """Create or upgrade the database schema (safe to run repeatedly, and from several nodes
    at once on PostgreSQL)."""
    from sqlalchemy.exc import SQLAlchemyError

    from pushgate.store.migrate import current_revision, upgrade

    settings = Settings()
    try:
        upgrade(settings.database_url)
        revision = current_revision(settings.database_url)
    except StoreUnavailable as exc:
        _fail(str(exc))
        return
    except SQLAlchemyError as exc:   # e.g. a file SQLite cannot write, a server that refuses
        cause = getattr(exc, "orig", None) or exc
        first_line = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        _fail(f"cannot migrate {_redact(settings.database_url)}: {first_line}")
        return
    if as_json:
        typer.echo(json.dumps({"database": _redact(settings.database_url),
                               "revision": revision}))
        return
    console.print(f"schema is up to date at revision {revision} "
                  f"({_redact(settings.database_url)})")


@app.command("migrate-data")
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
            copied = copy_database(source, target, progress)
        except TransferError as exc:
            _fail(str(exc))
            return
    if as_json:
        typer.echo(json.dumps({"copied": copied}))
        return
    console.print(f"copied {sum(copied.values())} rows from {_redact(source)} to "
                  f"{_redact(target)}; point PUSHGATE_DATABASE_URL at the new database")


@app.command()
def serve(
    host: str = typer.Option(None, help="Address to listen on (PUSHGATE_HOST)."),
    port: int = typer.Option(None, help="Port (PUSHGATE_PORT)."),
    api_only: bool = typer.Option(False, "--api-only",
                                  help="Serve the API only; run `pushgate worker` elsewhere."),
    reuse_port: bool = typer.Option(
        False, "--reuse-port",
        help="Share the port with other `pushgate serve --reuse-port` processes (SO_REUSEPORT):"
             " the kernel spreads connections among them. One process accepts only as fast"
             " as one core runs Python; add `--api-only` ones to use more cores."),
) -> None:
    """Run the HTTP API, and (unless --api-only) the dispatcher and webhook deliverer."""
    import uvicorn

    from pushgate.api.gateway import create_app
    from pushgate.api.server import uvicorn_options

    try:
        settings = Settings()
    except ValueError as exc:   # e.g. PUSHGATE_TRUSTED_PROXIES holding a host name
        _fail(f"invalid setting: {exc}")
        return
    _logging()
    host = host or settings.host
    port = port or settings.port
    sock = None
    if reuse_port:
        try:
            sock = _reuse_port_socket(host, port)
        except OSError as exc:
            _fail(f"cannot listen on {host}:{port} with --reuse-port: {exc}")
            return
    try:
        # Opened once here so a database that cannot be used is one line and exit 1, not
        # uvicorn's traceback of a failed startup.
        asyncio.run(_check_store(settings.database_url))
        application = create_app(settings, run_workers=not api_only)
    except StoreUnavailable as exc:
        _fail(str(exc))
        return
    options = uvicorn_options(settings)
    if sock is None:
        uvicorn.run(application, host=host, port=port, **options)
    else:
        uvicorn.Server(uvicorn.Config(application, host=host, port=port, **options)).run(
            sockets=[sock])


async def _check_store(url: str) -> None:
    store = store_for_url(url)
    await store.open()
    await store.close()


def _reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port that other processes may bind too (SO_REUSEPORT)."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise OSError("this system has no SO_REUSEPORT")
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock


@app.command()
def worker() -> None:
    """Run the dispatcher and webhook deliverer without the API (stops cleanly on SIGTERM)."""
    from pushgate.dispatch.worker import new_worker_id
    from pushgate.wiring import build_deliverer, build_dispatcher

    settings = Settings()
    _logging()

    async def run() -> None:
        store = store_for_url(settings.database_url)
        await store.open()
        worker_id = settings.worker_id or new_worker_id()
        wake = asyncio.Event()
        dispatcher = build_dispatcher(settings, store, worker_id, wake)
        deliverer = build_deliverer(settings, store, worker_id, wake)
        loop = asyncio.get_running_loop()

        def stop_both() -> None:
            dispatcher.stop()
            deliverer.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop_both)
        logging.getLogger("pushgate").info("worker %s started", worker_id)
        try:
            await asyncio.gather(dispatcher.run(), deliverer.run())
        finally:
            await store.close()

    try:
        _run_fast(run())
    except StoreUnavailable as exc:
        _fail(str(exc))


def _run_fast(main: Coroutine[Any, Any, None]) -> None:
    """Run the worker on uvloop where installed (``uvicorn[standard]`` brings it, as it does
    for ``serve``): less CPU per connector send than asyncio's own loop (bench/http_channel.py,
    docs/benchmarks.md)."""
    try:
        import uvloop
    except ImportError:   # e.g. Windows, where uvicorn[standard] installs no uvloop
        asyncio.run(main)
        return
    uvloop.run(main)


# --- projects -----------------------------------------------------------------------------------
async def _vetted_webhook(url: str | None) -> str | None:
    """``url`` stripped, or exit: webhook URLs are http(s), and point at public addresses
    unless PUSHGATE_ALLOW_PRIVATE_WEBHOOKS (the deliverer checks again at every send)."""
    if not url:
        return url
    url = url.strip()
    try:
        await vet_url(url, Settings().allow_private_webhooks)
    except UrlError as exc:
        _fail(f"webhook URL {url!r} refused: {exc.reason}")
    except AddressRefused as exc:
        if exc.retryable:   # not resolvable now: the deliverer will check when it is
            err_console.print(f"[yellow]warning:[/yellow] webhook URL {url!r}: {exc.reason}")
        else:
            _fail(f"webhook URL {url!r} refused: {exc.reason}; a receiver on this host or a "
                  f"private network needs PUSHGATE_ALLOW_PRIVATE_WEBHOOKS=true")
    return url


@project_app.command("create")
def project_create(
    name: str,
    credits: str = typer.Option("0", "--credits", help="Starting balance, e.g. 100 or 2.5."),
    webhook: str = typer.Option(None, "--webhook", help="Event webhook URL for reports."),
    as_json: bool = JsonOption,
) -> None:
    """Create a project with a first API token; prints the token and webhook secret once."""
    try:
        balance = parse_credits(credits)
    except ValueError as exc:
        _fail(str(exc))
        return

    async def run(store: Store) -> dict[str, Any]:
        if await store.find_project(name) is not None:
            _fail(f"a project named {name!r} exists already")
        url = await _vetted_webhook(webhook)
        secret = new_webhook_secret()
        project = await store.create_project(name, balance, url, secret)
        token = new_token()
        token_id = await store.create_token(project.id, hash_token(token), "first", [])
        return {"project_id": project.id, "name": name, "balance": format_credits(balance),
                "token_id": token_id, "token": token, "webhook_url": url,
                "webhook_secret": secret}

    _print(_with_store(run), as_json, "project created — keep the token and secret now")


@project_app.command("list")
def project_list(as_json: bool = JsonOption) -> None:
    """List projects with their balances."""

    async def run(store: Store) -> list[dict[str, Any]]:
        return [{"id": p.id, "name": p.name, "balance": format_credits(p.balance_micro),
                 "webhook_url": p.webhook_url, "active": p.active}
                for p in await store.list_projects()]

    rows = _with_store(run)
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table("id", "name", "balance", "webhook", "active")
    for row in rows:
        table.add_row(str(row["id"]), row["name"], row["balance"], row["webhook_url"] or "",
                      str(row["active"]))
    console.print(table)


@project_app.command("webhook")
def project_webhook(
    project: str,
    url: str = typer.Argument(None, help="New URL; omit to remove the webhook."),
    rotate_secret: bool = typer.Option(False, "--rotate-secret"),
    incoming: bool = typer.Option(
        False, "--incoming",
        help="Set the incoming webhook (users' messages, Picky's global webhook) instead."),
    as_json: bool = JsonOption,
) -> None:
    """Set or remove a project's event webhook URL (delivery reports), or with --incoming its
    incoming webhook (messages users send to its channels). Both are signed with the
    project's webhook secret."""

    async def run(store: Store) -> dict[str, Any]:
        project_id = await _project_id(store, project)
        vetted = await _vetted_webhook(url)
        secret = new_webhook_secret() if rotate_secret else None
        if incoming:
            await store.set_incoming_webhook(project_id, vetted)
            if secret:
                current = await store.get_project(project_id)
                await store.set_webhook(project_id, current.webhook_url if current else None,
                                        secret)
            result: dict[str, Any] = {"project_id": project_id, "incoming_webhook_url": vetted}
        else:
            await store.set_webhook(project_id, vetted, secret)
            result = {"project_id": project_id, "webhook_url": vetted}
        if secret:
            result["webhook_secret"] = secret
        return result

    _print(_with_store(run), as_json)


# --- tokens -------------------------------------------------------------------------------------
@token_app.command("create")
def token_create(
    project: str = typer.Option(..., "--project", help="Project id or name."),
    label: str = typer.Option("", "--label"),
    ip: list[str] = typer.Option([], "--ip", help="Allowed address or CIDR (repeatable)."),
    as_json: bool = JsonOption,
) -> None:
    """Create an API token (printed once; only its hash is stored)."""
    import ipaddress

    for entry in ip:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            _fail(f"not an IP address or network: {entry!r}")

    async def run(store: Store) -> dict[str, Any]:
        project_id = await _project_id(store, project)
        token = new_token()
        token_id = await store.create_token(project_id, hash_token(token), label, ip)
        return {"project_id": project_id, "token_id": token_id, "token": token, "ip_allow": ip}

    _print(_with_store(run), as_json, "token created — it is shown only now")


@token_app.command("revoke")
def token_revoke(token_id: int, as_json: bool = JsonOption) -> None:
    """Revoke a token by id; pushes with it answer status 402 from then on."""

    async def run(store: Store) -> bool:
        return await store.revoke_token(token_id)

    if not _with_store(run):
        _fail(f"no active token {token_id}")
    _print({"token_id": token_id, "revoked": True}, as_json)


@token_app.command("list")
def token_list(project: str = typer.Option(..., "--project"), as_json: bool = JsonOption) -> None:
    """List a project's tokens (never the tokens themselves)."""

    async def run(store: Store) -> list[dict[str, Any]]:
        return await store.list_tokens(await _project_id(store, project))

    rows = _with_store(run)
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table("id", "label", "ip allow-list", "revoked")
    for row in rows:
        table.add_row(str(row["id"]), row["label"], ",".join(row["ip_allow"]),
                      "yes" if row["revoked_at"] else "")
    console.print(table)


# --- channels -----------------------------------------------------------------------------------
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
        _fail(f"unknown channel type {kind!r}; known: {', '.join(known_kinds())}")
    connector = channel_class(kind)
    try:
        price_micro = parse_credits(price)
        config_data = json.loads(config)
        if not isinstance(config_data, dict):
            raise ValueError("--config must be a JSON object")
        connector_config, gateway_config = split_config(config_data)
        connector_config, generated_secret = connector.with_callback_secret(connector_config)
        if "allowed_country_codes" in gateway_config:
            gateway_config["allowed_country_codes"] = parse_country_codes(
                gateway_config["allowed_country_codes"])
        config_data = {**connector.validate_config(connector_config), **gateway_config}
    except (ValueError, json.JSONDecodeError) as exc:
        _fail(f"invalid --config for {kind}: {exc}" if "config" not in str(exc) else str(exc))
        return
    rate = connector.default_rate_per_second if rate is None else rate
    delay_ms = connector.default_delay_ms if delay_ms is None else delay_ms
    jitter_ms = connector.default_jitter_ms if jitter_ms is None else jitter_ms
    if rate < 0 or delay_ms < 0 or jitter_ms < 0:
        _fail("--rate, --delay-ms and --jitter-ms cannot be negative")
    if connector.max_rate_per_second is not None and rate > connector.max_rate_per_second:
        _fail(f"--rate {rate:g} is above what {kind} allows ({connector.max_rate_per_second:g}/s)")
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
        project_id = await _project_id(store, project)
        spec = ChannelSpec(id=0, project_id=project_id, kind=kind, application=application,
                           price_micro=price_micro, rate_per_second=rate, delay_ms=delay_ms,
                           jitter_ms=jitter_ms, name=name, config=config_data, **rules)
        same = [c for c in await store.list_channels(project_id) if c.application == application]
        channel = await store.add_channel(spec)
        if same:
            _warn_shared_application(application, same + [channel])
        added = _channel_dict(channel)
        added["callback_url"] = f"{Settings().gateway_url()}/channels/{channel.id}/callback"
        return added

    added = _with_store(run)
    setup = connector.callback_setup(config_data, added["callback_url"])
    if generated_secret:
        added[connector.callback_secret_key] = generated_secret
    if setup:
        added["callback_setup"] = "\n".join(setup)
    if as_json:
        _print(added, as_json)
        return
    shown_below = {"callback_setup", connector.callback_secret_key}
    _print({k: v for k, v in added.items() if k not in shown_below}, as_json, "channel added")
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
        project_id = await _project_id(store, project) if project else None
        return [_channel_dict(c) for c in await store.list_channels(project_id)]

    rows = _with_store(run)
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

    async def run(store: Store) -> ChannelSpec | None:
        return await store.update_channel(
            channel_id, paused=not resume, paused_reason="" if resume else "paused by operator")

    channel = _with_store(run)
    if channel is None:
        _fail(f"no channel {channel_id}")
        return
    _print(_channel_dict(channel), as_json)


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
            _fail(f"no channel {channel_id}")
        assert channel is not None
        connector = channel_class(channel.kind)
        key = connector.callback_secret_key
        if not key:
            _fail(f"channel {channel_id} is a {channel.kind} channel, whose callbacks are "
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
                _fail(str(exc))
            channel = await store.update_channel(channel_id, config=config) or channel
        return channel, made

    channel, made = _with_store(run)
    connector = channel_class(channel.kind)
    key = connector.callback_secret_key
    callback_url = f"{Settings().gateway_url()}/channels/{channel.id}/callback"
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


# --- credits ------------------------------------------------------------------------------------
@credits_app.command("add")
def credits_add(
    project: str = typer.Option(..., "--project", help="Project id or name."),
    amount: str = typer.Argument(..., help="Credits to add (negative to remove)."),
    reason: str = typer.Option("top-up", "--reason"),
    as_json: bool = JsonOption,
) -> None:
    """Add credit to a project."""
    negative = amount.strip().startswith("-")
    try:
        micro = parse_credits(amount.strip().lstrip("-"))
    except ValueError as exc:
        _fail(str(exc))
        return

    async def run(store: Store) -> dict[str, Any]:
        project_id = await _project_id(store, project)
        try:
            balance = await store.add_credits(project_id, -micro if negative else micro, reason)
        except ValueError as exc:
            _fail(str(exc))
            raise
        return {"project_id": project_id, "balance": format_credits(balance)}

    _print(_with_store(run), as_json)


# --- demo and docs ------------------------------------------------------------------------------
@app.command()
def demo(
    token_file: Path = typer.Option(Path("data/demo-token"), help="Where the token is kept."),
    as_json: bool = JsonOption,
) -> None:
    """Make sure a `demo` project with sandbox channels exists; print its token and a curl line."""
    settings = Settings()

    async def run(store: Store) -> dict[str, Any]:
        project = await store.find_project("demo")
        if project is None:
            project = await store.create_project("demo", parse_credits("100"), None,
                                                 new_webhook_secret())
            for application in (1, 3):
                await store.add_channel(ChannelSpec(
                    id=0, project_id=project.id, kind="sandbox", application=application,
                    price_micro=parse_credits("0.005"), name=f"sandbox app {application}",
                    config={"delivery_delay": 1.0}, **default_rules(application)))
        token = token_file.read_text().strip() if token_file.exists() else ""
        info = await store.authenticate(hash_token(token)) if token else None
        if info is None or info.revoked or info.project_id != project.id:
            token = new_token()
            await store.create_token(project.id, hash_token(token), "demo", [])
            token_file.parent.mkdir(parents=True, exist_ok=True)
            token_file.write_text(token + "\n")
            token_file.chmod(0o600)
        project = await store.get_project(project.id)
        assert project is not None
        return {"project_id": project.id, "token": token,
                "balance": format_credits(project.balance_micro)}

    info = _with_store(run)
    base = f"http://{settings.host}:{settings.port}"
    body = json.dumps({"token": info["token"], "application": "1", "globalmessage": "",
                       "data": [
                           {"number": "919876543210", "message": "Hello Asha, your bill is due"},
                           {"number": "14155552671", "message": "Hi Sam, see you at 9"}]})
    curl = f"curl -s {base}/api/v2/push -H 'Content-Type: application/json' -d '{body}'"
    if as_json:
        typer.echo(json.dumps({**info, "curl": curl, "base_url": base}))
        return
    console.print(f"\n[bold green]pushgate demo project ready[/bold green] "
                  f"(balance {info['balance']} credits)")
    console.print(f"API token: [bold]{info['token']}[/bold]")
    console.print("Send a push:")
    typer.echo(curl)
    console.print("See what the sandbox 'sent':")
    typer.echo(f"curl -s '{base}/api/v2/sandbox/inbox?token={info['token']}'")
    console.print(f"API docs: {base}/docs\n")


@docs_app.command("error-codes")
def docs_error_codes(
    output: Path = typer.Option(Path("docs/error-codes.md"), "--output"),
    check: bool = typer.Option(False, "--check", help="Fail if the file is out of date."),
) -> None:
    """Write docs/error-codes.md from the code table."""
    from pushgate.core.errors import render_markdown

    text = render_markdown()
    if check:
        if not output.exists() or output.read_text() != text:
            _fail(f"{output} is out of date; run `pushgate docs error-codes`")
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    console.print(f"wrote {output}")


@docs_app.command("channels")
def docs_channels(
    output: Path = typer.Option(Path("docs/channel-config.md"), "--output"),
    check: bool = typer.Option(False, "--check", help="Fail if the file is out of date."),
) -> None:
    """Write docs/channel-config.md from the channel config models."""
    from pushgate.channels.config import render_channels_doc

    text = render_channels_doc()
    if check:
        if not output.exists() or output.read_text() != text:
            _fail(f"{output} is out of date; run `pushgate docs channels`")
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    console.print(f"wrote {output}")


# --- devices (phones) ---------------------------------------------------------------------------
device_app = typer.Typer(help="Phones running SMS Gateway for Android (android channels).",
                         no_args_is_help=True)
app.add_typer(device_app, name="device")


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
    import secrets

    import segno


    settings = Settings()

    async def run(store: Store) -> str:
        channel = await store.get_channel(channel_id)
        if channel is None:
            _fail(f"no channel {channel_id}")
        assert channel is not None
        if channel.kind != "android":
            _fail(f"channel {channel_id} is a {channel.kind} channel; phones pair with "
                  "android channels (`pushgate channel add --type android`)")
        token = channel.config.get("private_token")
        if not token or rotate:
            token = secrets.token_urlsafe(24)
            await store.update_channel(channel_id,
                                       config={**channel.config, "private_token": token})
        return str(token)

    token = _with_store(run)
    base = (server_url or settings.gateway_url()).rstrip("/")
    api_url = base + settings.mobile_api_prefix.rstrip("/")
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
    from pushgate.channels.android.phones import app_version

    async def run(store: Store) -> list[dict[str, Any]]:
        now = time.time()
        offline_after: dict[int, float] = {}
        rows = []
        for device in await store.list_devices(channel_id):
            if device.channel_id not in offline_after:
                channel = await store.get_channel(device.channel_id)
                offline_after[device.channel_id] = PhoneSettings.from_config(
                    channel.config if channel else {}).offline_after_seconds
            if device.revoked_at is not None:
                status = "revoked"
            elif device.paused_until > now:
                status = "resting"   # Android refused to send more
            else:
                status = "online" if device.online(now, offline_after[device.channel_id]) \
                    else "offline"
            rows.append({"id": device.id, "channel_id": device.channel_id, "name": device.name,
                         "status": status, "last_seen_at": device.last_seen_at,
                         "in_flight": device.in_flight,
                         "version": app_version(device.user_agent)})
        return rows

    rows = _with_store(run)
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

    if not _with_store(run):
        _fail(f"no active device {device_id!r}")
    _print({"device_id": device_id, "revoked": True}, as_json)


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
