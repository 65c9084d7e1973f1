"""``dlforge export``."""

from __future__ import annotations

import click

from dlforge.cli import cli
from dlforge.cli.common import emit_json, force_option, json_option, option_for
from dlforge.export.options import ExportOptions


@cli.command("export")
@click.argument("checkpoint", type=click.Path())
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(), help="ONNX artifact directory to write.")
@option_for(ExportOptions, "opset")
@option_for(ExportOptions, "dynamic_batch", "--dynamic-batch/--static-batch")
@option_for(ExportOptions, "atol")
@option_for(ExportOptions, "samples")
@option_for(ExportOptions, "exporter")
@option_for(ExportOptions, "data")
@option_for(ExportOptions, "data_dir", type=click.Path(file_okay=False))
@force_option
@json_option
def export_command(checkpoint, out_dir, force, as_json, **settings) -> None:
    """Export CHECKPOINT to ONNX and verify it against PyTorch (fails beyond --atol)."""
    from dlforge.export import onnx_from_checkpoint
    from dlforge.kinds import headline

    artifact = onnx_from_checkpoint(checkpoint, out_dir, ExportOptions(**settings), force=force)
    if as_json:
        emit_json(artifact.card.to_dict())
    else:
        click.echo(f"{artifact.path}: {headline(artifact)}")
