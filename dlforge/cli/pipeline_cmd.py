"""``dlforge pipeline``: the quickstart, every stage end to end."""

from __future__ import annotations

import click

from dlforge.cli import cli
from dlforge.cli.common import cli_progress, emit_json, force_option, json_option, option_for
from dlforge.cli.train_cmd import data_options
from dlforge.pipeline import PipelineOptions
from dlforge.train.options import TrainOptions


@cli.command("pipeline")
@click.argument("model", default="lenet")
@data_options
@option_for(TrainOptions, "epochs")
@option_for(TrainOptions, "seed")
@option_for(PipelineOptions, "backend")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(), help="Run directory.")
@force_option
@json_option
def pipeline_command(model, data, data_dir, epochs, seed, backend, out_dir, force, as_json) -> None:
    """Run every stage on MODEL (default lenet) and DATA, writing OUTPUT/<stage>/."""
    from dlforge.inspect import describe
    from dlforge.kinds import headline
    from dlforge.pipeline import run_pipeline

    artifacts = run_pipeline(model, out_dir, data=data, data_dir=data_dir, epochs=epochs, seed=seed,
                             backend=backend, force=force, progress=cli_progress())
    if as_json:
        emit_json({stage: describe(a.path) for stage, a in artifacts.items()})
    else:
        from dlforge.reporting import format_table

        rows = [{"stage": stage, "artifact": str(a.path), "result": headline(a)} for stage, a in artifacts.items()]
        click.echo(format_table(rows, ["stage", "artifact", "result"]))
        for text in full_reports(artifacts):
            click.echo("\n" + text)
        click.echo(f"details: dlforge inspect {next(iter(artifacts.values())).path.parent}/<stage>")


def full_reports(artifacts: dict) -> list[str]:
    """The reports worth reading in full (bench, drift), rendered from their artifacts' payloads."""
    import json

    from dlforge.bench.report import BenchReport
    from dlforge.bench.report import table as bench_table
    from dlforge.drift import DriftReport
    from dlforge.drift import table as drift_table

    renders = {"bench": lambda d: bench_table(BenchReport.from_json(d)),
               "drift": lambda d: drift_table(DriftReport.from_json(d))}
    return [render(json.loads(artifacts[stage].payload_path.read_text(encoding="utf-8")))
            for stage, render in renders.items() if stage in artifacts]
