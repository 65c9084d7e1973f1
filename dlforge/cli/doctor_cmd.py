"""``dlforge doctor``."""

from __future__ import annotations

import click

from dlforge.cli import cli
from dlforge.cli.common import emit_json, json_option


@cli.command("doctor")
@json_option
def doctor_command(as_json) -> None:
    """Show what this machine can run: packages, ORT providers, GPUs, TensorRT."""
    from dlforge.doctor import diagnose, render

    d = diagnose()
    if as_json:
        emit_json(d)
    else:
        click.echo(render(d))
