"""``dlforge inspect``."""

from __future__ import annotations

import click

from dlforge.cli import cli
from dlforge.cli.common import emit_json, json_option


@cli.command("inspect")
@click.argument("artifact", type=click.Path())
@json_option
def inspect_command(artifact, as_json) -> None:
    """Show what ARTIFACT (a directory, or a plain .onnx file) is and where it came from."""
    from dlforge.inspect import describe, render

    info = describe(artifact)
    if as_json:
        emit_json(info)
    else:
        click.echo(render(info))
