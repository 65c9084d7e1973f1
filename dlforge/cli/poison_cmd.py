"""``dlforge poison``."""

from __future__ import annotations

import click

from dlforge.cli import cli
from dlforge.cli.common import emit_json, force_option, json_option, say
from dlforge.cli.train_cmd import data_options


@cli.command("poison")
@click.argument("model")
@data_options
@click.option("--attack", type=click.Choice(["badnets", "label-flip"]), default="badnets", show_default=True)
@click.option("--mode", type=click.Choice(["single", "all-to-all"]), default="single", show_default=True,
              help="BadNets: every class to --target-class, or class i to i+1.")
@click.option("--rate", type=float, default=0.1, show_default=True, help="Fraction of training samples poisoned.")
@click.option("--target-class", type=int, default=0, show_default=True)
@click.option("--trigger-size", type=int, default=None, help="BadNets trigger side in pixels (default: width / 9).")
@click.option("--defences", default="activation-clustering,spectral-signatures,strip", show_default=True,
              help="Comma-separated; empty for none.")
@click.option("--strip-fpr", type=float, default=0.01, show_default=True, help="STRIP's false-positive rate.")
@click.option("--epochs", type=int, default=None, help="Training epochs (default: the model's).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-baseline", is_flag=True, help="Skip training the clean model for comparison.")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(), help="Run directory.")
@force_option
@json_option
def poison_command(model, data, data_dir, attack, mode, rate, target_class, trigger_size, defences, strip_fpr, epochs,
                   seed, no_baseline, out_dir, force, as_json) -> None:
    """Poison MODEL's training data, deploy it, and measure the attack and the defences."""
    from pathlib import Path

    from dlforge.adversarial.poisoning.report import table, write_poison_artifact
    from dlforge.adversarial.poisoning.run import run_poison
    from dlforge.artifact import ArtifactWriter

    ArtifactWriter(Path(out_dir) / "poison", force=force).discard()  # fail fast on an unusable -o
    report = run_poison(model, out_dir, data=data, data_dir=data_dir, attack=attack, mode=mode, rate=rate,
                        target=target_class, trigger_size=trigger_size,
                        defences=tuple(d.strip() for d in defences.split(",") if d.strip()), epochs=epochs,
                        seed=seed, strip_fpr=strip_fpr, baseline=not no_baseline, force=force,
                        on_stage=lambda s: say(f"== {s}"))
    written = write_poison_artifact(report, Path(out_dir) / "poison", force=force)
    say(f"wrote {written.path}/poison.json and report.html")
    if as_json:
        emit_json(report)
    else:
        click.echo(table(report))
