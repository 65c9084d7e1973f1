"""``dlforge drift``."""

from __future__ import annotations

import click

from dlforge.cli import cli
from dlforge.cli.common import emit_json, force_option, json_option


@cli.command("drift")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path())
@click.option("--samples", default=200, show_default=True, type=click.IntRange(min=1),
              help="Test images PGD attacks for the robust-accuracy column.")
@click.option("--eps", default=0.1, show_default=True, type=click.FloatRange(min=0), help="L-inf eps of that PGD.")
@click.option("--pgd-steps", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--data-dir", default=None, type=click.Path(file_okay=False), help="Directory of the dataset's files.")
@click.option("-o", "--output", "out_dir", default=None, type=click.Path(), help="Also write a drift artifact here.")
@force_option
@json_option
def drift_command(artifacts, samples, eps, pgd_steps, data_dir, out_dir, force, as_json) -> None:
    """Compare ARTIFACTS hop by hop (checkpoint, onnx, engines of one model, in pipeline order)."""
    from dlforge.drift import run_drift, table, write_drift_artifact

    if out_dir is not None:
        from dlforge.artifact import check_output

        check_output(out_dir, force=force)
    report = run_drift(list(artifacts), samples=samples, eps=eps, pgd_steps=pgd_steps, data_dir=data_dir)
    if out_dir is not None:
        write_drift_artifact(report, out_dir, force=force)
    if as_json:
        emit_json(report)
    else:
        click.echo(table(report))
