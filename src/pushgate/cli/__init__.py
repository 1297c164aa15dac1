"""The ``pushgate`` command: run the gateway and manage projects, tokens, channels, credits.

Every management command takes ``--json`` for scripts; secrets (tokens, webhook secrets) are
printed once, at creation, and only their hashes are kept. One module per command group; this
one assembles them, in the order ``pushgate --help`` lists them.
"""

from __future__ import annotations

import typer

from pushgate.cli.channels import channel_app
from pushgate.cli.config import show_config
from pushgate.cli.database import migrate, migrate_data
from pushgate.cli.devices import device_app
from pushgate.cli.docs import docs_app
from pushgate.cli.optouts import optout_app
from pushgate.cli.projects import credits_app, demo, project_app
from pushgate.cli.pushes import push_app, report
from pushgate.cli.send import send
from pushgate.cli.serve import serve, worker
from pushgate.cli.tokens import token_app

__all__ = ["app", "main", "serve"]

app = typer.Typer(help="pushgate: a self-hosted message push gateway.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
app.command()(migrate)
app.command("migrate-data")(migrate_data)
app.command()(serve)
app.command()(worker)
app.command("config")(show_config)
app.command()(demo)
app.add_typer(project_app, name="project")
app.add_typer(token_app, name="token")
app.add_typer(channel_app, name="channel")
app.add_typer(credits_app, name="credits")
app.add_typer(optout_app, name="optout")
app.add_typer(push_app, name="push")
app.command()(report)
app.command()(send)
app.add_typer(docs_app, name="docs")
app.add_typer(device_app, name="device")


def main() -> None:  # pragma: no cover
    app()
