"""`pushgate token …`: API tokens, printed once and stored as hashes."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import typer
from rich.table import Table

from pushgate.cli.common import JsonOption, console, fail, project_id_of, show, with_store
from pushgate.core.models import TokenRecord
from pushgate.core.tokens import hash_token, new_token
from pushgate.store.base import Store

token_app = typer.Typer(help="API tokens.", no_args_is_help=True)


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
            fail(f"not an IP address or network: {entry!r}")

    async def run(store: Store) -> dict[str, Any]:
        project_id = await project_id_of(store, project)
        token = new_token()
        token_id = await store.create_token(project_id, hash_token(token), label, ip)
        return {"project_id": project_id, "token_id": token_id, "token": token, "ip_allow": ip}

    show(with_store(run), as_json, "token created — it is shown only now")


@token_app.command("revoke")
def token_revoke(token_id: int, as_json: bool = JsonOption) -> None:
    """Revoke a token by id; pushes with it answer status 402 from then on."""

    async def run(store: Store) -> bool:
        return await store.revoke_token(token_id)

    if not with_store(run):
        fail(f"no active token {token_id}")
    show({"token_id": token_id, "revoked": True}, as_json)


@token_app.command("list")
def token_list(project: str = typer.Option(..., "--project"), as_json: bool = JsonOption) -> None:
    """List a project's tokens (never the tokens themselves)."""

    async def run(store: Store) -> list[TokenRecord]:
        return await store.list_tokens(await project_id_of(store, project))

    tokens = with_store(run)
    if as_json:
        typer.echo(json.dumps([asdict(token) for token in tokens]))
        return
    table = Table("id", "label", "ip allow-list", "revoked")
    for token in tokens:
        table.add_row(str(token.id), token.label, ",".join(token.ip_allow),
                      "yes" if token.revoked_at else "")
    console.print(table)
