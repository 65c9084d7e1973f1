"""``dlforge drift``."""

from __future__ import annotations

import click

from dlforge.cli import cli
from dlforge.cli.common import emit_json, force_option, json_option, option_for
from dlforge.drift import DriftOptions


@cli.command("drift")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path())
@option_for(DriftOptions, "samples")
@option_for(DriftOptions, "eps")
@option_for(DriftOptions, "pgd_steps")
@option_for(DriftOptions, "seed")
@option_for(DriftOptions, "data_dir", type=click.Path(file_okay=False))
@click.option("-o", "--output", "out_dir", default=None, type=click.Path(), help="Also write a drift artifact here.")
@force_option
@json_option
def drift_command(artifacts, samples, eps, pgd_steps, seed, data_dir, out_dir, force, as_json) -> None:
    """Compare ARTIFACTS hop by hop (checkpoint, onnx, engines of one model, in pipeline order)."""
    from dlforge.drift import run_drift, table, write_drift_artifact

    if out_dir is not None:
        from dlforge.artifact import check_output

        check_output(out_dir, force=force)
    report = run_drift(list(artifacts), samples=samples, eps=eps, pgd_steps=pgd_steps, seed=seed, data_dir=data_dir)
    if out_dir is not None:
        write_drift_artifact(report, out_dir, force=force)
    if as_json:
        emit_json(report.to_json())
    else:
        click.echo(table(report))
