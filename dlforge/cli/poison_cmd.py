"""``dlforge poison``."""

from __future__ import annotations

import click

from dlforge.adversarial.poisoning.run import PoisonOptions
from dlforge.cli import cli
from dlforge.cli.common import cli_progress, emit_json, force_option, json_option, option_for, say


@cli.command("poison")
@click.argument("model")
@option_for(PoisonOptions, "data")
@option_for(PoisonOptions, "data_dir", type=click.Path(file_okay=False))
@option_for(PoisonOptions, "attack")
@option_for(PoisonOptions, "mode")
@option_for(PoisonOptions, "rate", type=float)
@option_for(PoisonOptions, "rates")
@option_for(PoisonOptions, "reference", "--reference/--no-reference")
@option_for(PoisonOptions, "filter_share", type=float)
@option_for(PoisonOptions, "target_class", type=int)
@option_for(PoisonOptions, "trigger_size", type=int)
@option_for(PoisonOptions, "defences")
@option_for(PoisonOptions, "ac_reduce")
@option_for(PoisonOptions, "ac_analysis")
@option_for(PoisonOptions, "ss_eps", type=float)
@option_for(PoisonOptions, "strip_fpr", type=float)
@option_for(PoisonOptions, "strip_samples", type=int)
@option_for(PoisonOptions, "strip_copies", type=int)
@option_for(PoisonOptions, "retrain", "--retrain/--no-retrain")
@option_for(PoisonOptions, "epochs", type=int)
@option_for(PoisonOptions, "seed", type=int)
@option_for(PoisonOptions, "baseline", "--baseline/--no-baseline")
@option_for(PoisonOptions, "dynamic_batch", "--dynamic-batch/--static-batch")
@option_for(PoisonOptions, "max_batch")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(), help="Run directory.")
@force_option
@json_option
def poison_command(model, out_dir, force, as_json, **settings) -> None:
    """Poison MODEL's training data, deploy it, and measure the attack and the defences on the fp32 and
    the INT8 engine: a backdoor or label flip (C-Acc, ASR, R-Acc) at --rate, or availability poisoning
    (clean accuracy against the injection rate) over --rates."""
    from pathlib import Path

    from dlforge.adversarial.poisoning.report import table, write_poison_artifact
    from dlforge.adversarial.poisoning.run import run_poison

    options = PoisonOptions(**settings)
    report = run_poison(model, out_dir, options, force=force, progress=cli_progress())
    written = write_poison_artifact(report, Path(out_dir) / "poison", force=force)
    say(f"wrote {written.path}/poison.json and report.html")
    if as_json:
        emit_json(report.to_json())
    else:
        click.echo(table(report))
