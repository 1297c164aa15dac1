"""`pushgate project …`, `pushgate credits …` and `pushgate demo`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

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
from pushgate.core.addresses import UrlError
from pushgate.core.channels import (
    ChannelSpec,
    default_rules,
)
from pushgate.core.optouts import KeywordSettings, parse_keywords
from pushgate.core.pricing import format_credits, parse_credits
from pushgate.core.tokens import hash_token, new_token, new_webhook_secret
from pushgate.outbound import AddressRefused, vet_url
from pushgate.store.base import Store

project_app = typer.Typer(help="Projects: balances and webhooks.", no_args_is_help=True)
credits_app = typer.Typer(help="Project credit.", no_args_is_help=True)


async def _vetted_webhook(url: str | None) -> str | None:
    """``url`` stripped, or exit: webhook URLs are http(s), and point at public addresses
    unless PUSHGATE_ALLOW_PRIVATE_WEBHOOKS (the deliverer checks again at every send)."""
    if not url:
        return url
    url = url.strip()
    try:
        await vet_url(url, Settings().allow_private_webhooks)
    except UrlError as exc:
        fail(f"webhook URL {url!r} refused: {exc.reason}")
    except AddressRefused as exc:
        if exc.retryable:   # not resolvable now: the deliverer will check when it is
            err_console.print(f"[yellow]warning:[/yellow] webhook URL {url!r}: {exc.reason}")
        else:
            fail(f"webhook URL {url!r} refused: {exc.reason}; a receiver on this host or a "
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
        fail(str(exc))
        return

    async def run(store: Store) -> dict[str, Any]:
        if await store.find_project(name) is not None:
            fail(f"a project named {name!r} exists already")
        url = await _vetted_webhook(webhook)
        secret = new_webhook_secret()
        project = await store.create_project(name, balance, url, secret)
        token = new_token()
        token_id = await store.create_token(project.id, hash_token(token), "first", [])
        return {"project_id": project.id, "name": name, "balance": format_credits(balance),
                "token_id": token_id, "token": token, "webhook_url": url,
                "webhook_secret": secret}

    show(with_store(run), as_json, "project created — keep the token and secret now")


@project_app.command("list")
def project_list(as_json: bool = JsonOption) -> None:
    """List projects with their balances."""

    async def run(store: Store) -> list[dict[str, Any]]:
        return [{"id": p.id, "name": p.name, "balance": format_credits(p.balance_micro),
                 "webhook_url": p.webhook_url, "active": p.active}
                for p in await store.list_projects()]

    rows = with_store(run)
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
        project_id = await project_id_of(store, project)
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

    show(with_store(run), as_json)


@project_app.command("keywords")
def project_keywords(
    project: str,
    stop: str = typer.Option(None, "--stop", help="STOP keywords, comma-separated "
                             "(replace the defaults: STOP, UNSUBSCRIBE, STOPALL, CANCEL, END, "
                             "QUIT)."),
    start: str = typer.Option(None, "--start", help="START keywords, comma-separated "
                              "(replace the defaults: START, UNSTOP)."),
    stop_reply: str = typer.Option(None, "--stop-reply",
                                   help="Confirmation answered to a STOP; empty: none."),
    start_reply: str = typer.Option(None, "--start-reply",
                                    help="Confirmation answered to a START; empty: none."),
    defaults: bool = typer.Option(False, "--defaults",
                                  help="Back to the default keywords and no confirmations."),
    as_json: bool = JsonOption,
) -> None:
    """Show or set the keywords that opt a user out (STOP) or back in (START) when it is the
    whole message they write, and the confirmations answered to them."""

    async def run(store: Store) -> dict[str, Any]:
        project_id = await project_id_of(store, project)
        current = KeywordSettings() if defaults else await store.keyword_settings(project_id)
        changed = KeywordSettings(
            stop=current.stop if stop is None else parse_keywords(stop),
            start=current.start if start is None else parse_keywords(start),
            stop_reply=current.stop_reply if stop_reply is None else (stop_reply or None),
            start_reply=current.start_reply if start_reply is None else (start_reply or None))
        if not changed.stop:
            fail("--stop needs at least one keyword")
        if set(changed.stop) & set(changed.start):
            fail("a keyword cannot both stop and start")
        if changed != await store.keyword_settings(project_id) or defaults:
            await store.set_keyword_settings(project_id, changed)
        return {"project_id": project_id, "stop": ", ".join(changed.stop),
                "start": ", ".join(changed.start), "stop_reply": changed.stop_reply or "",
                "start_reply": changed.start_reply or "",
                "opted_out": await store.count_optouts(project_id)}

    show(with_store(run), as_json)


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
        fail(str(exc))
        return

    async def run(store: Store) -> dict[str, Any]:
        project_id = await project_id_of(store, project)
        try:
            balance = await store.add_credits(project_id, -micro if negative else micro, reason)
        except ValueError as exc:
            fail(str(exc))
            raise
        return {"project_id": project_id, "balance": format_credits(balance)}

    show(with_store(run), as_json)


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

    info = with_store(run)
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
