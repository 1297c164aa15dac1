"""`pushgate config`: the effective settings, where each comes from, secrets masked."""

from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from pushgate.cli.common import JsonOption, console, fail
from pushgate.config import Settings

MASK = "***"
# A field whose name holds one of these is a secret: its value is never printed.
SECRET_WORDS = ("secret", "token", "password")


def show_config(as_json: bool = JsonOption) -> None:
    """Print the effective settings (environment, then the .env file, then the defaults),
    secrets masked: what `serve` and `worker` started here would use."""
    try:
        settings = Settings()
    except ValueError as exc:
        fail(f"invalid setting: {exc}")
        return
    rows = effective_settings(settings)
    if as_json:
        typer.echo(json.dumps({name: row["value"] for name, row in rows.items()}))
        return
    table = Table(title="pushgate settings")
    table.add_column("variable", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("from")
    for name, row in rows.items():
        table.add_row(f"PUSHGATE_{name.upper()}", escape(str(row["value"])), row["source"])
    console.print(table)


def effective_settings(settings: Settings) -> dict[str, dict[str, Any]]:
    """``{field: {"value": masked value, "source": "environment" | ".env" | "default"}}``."""
    environment = {k.upper() for k in os.environ}
    from_file = _dotenv_names(settings)
    rows: dict[str, dict[str, Any]] = {}
    for name in type(settings).model_fields:
        variable = f"PUSHGATE_{name.upper()}"
        source = ("environment" if variable in environment
                  else ".env" if variable in from_file else "default")
        rows[name] = {"value": masked(name, getattr(settings, name)), "source": source}
    return rows


def masked(name: str, value: Any) -> Any:
    if any(word in name for word in SECRET_WORDS):
        return MASK if value else value
    if name == "database_url" and isinstance(value, str):
        return mask_url_password(value)
    return value


def mask_url_password(url: str) -> str:
    """The URL with its password (in the user part, or libpq's ``password=`` query
    parameter) replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is not None:
        userinfo, _, host = parts.netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        parts = parts._replace(netloc=f"{user}:{MASK}@{host}")
    if "password=" in parts.query:
        pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        parts = parts._replace(query=urllib.parse.urlencode(
            [(k, MASK if k == "password" else v) for k, v in pairs], safe="*"))
    return urllib.parse.urlunsplit(parts)


def _dotenv_names(settings: Settings) -> set[str]:
    from dotenv import dotenv_values

    env_file = settings.model_config.get("env_file")
    if not isinstance(env_file, str | Path) or not Path(env_file).is_file():
        return set()
    return {k.upper() for k in dotenv_values(env_file)}
