"""`pushgate docs …`: documents generated from the code."""

from __future__ import annotations

from pathlib import Path

import typer

from pushgate.cli.common import console, fail

docs_app = typer.Typer(help="Generated documentation.", no_args_is_help=True)


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
            fail(f"{output} is out of date; run `pushgate docs error-codes`")
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
            fail(f"{output} is out of date; run `pushgate docs channels`")
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    console.print(f"wrote {output}")
