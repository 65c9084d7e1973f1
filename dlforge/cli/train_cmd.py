"""``dlforge models``, ``dlforge train`` and ``dlforge download``."""

from __future__ import annotations

import click

from dlforge.cli import cli
from dlforge.cli.common import cli_progress, emit_json, force_option, json_option, option_for, parse_overrides
from dlforge.data.dataset import IDX_DATASETS
from dlforge.reporting import Column, format_table
from dlforge.train.options import TrainOptions

MODEL_COLUMNS = [Column("name"), Column("task"), Column("epochs", align=">"), Column("batch_size", align=">"),
                 Column("lr", fmt="g", align=">"), Column("summary")]


@cli.command("models")
@json_option
def models_command(as_json: bool) -> None:
    """List the model zoo."""
    from dlforge_models import get_entry, list_models

    rows = []
    for name in list_models():
        entry = get_entry(name)
        d = entry.defaults
        rows.append({"name": name, "task": entry.task, "summary": entry.summary, "epochs": d.epochs,
                     "batch_size": d.batch_size, "lr": d.lr, "options": entry.options()})
    if as_json:
        emit_json({"models": rows})
    else:
        click.echo(format_table(rows, MODEL_COLUMNS))


def data_options(fn):
    """``--data`` and ``--data-dir``, as :class:`TrainOptions` declares them."""
    fn = option_for(TrainOptions, "data_dir", type=click.Path(file_okay=False))(fn)
    return option_for(TrainOptions, "data")(fn)


def train_options(fn):
    overrides_help = TrainOptions.__dataclass_fields__["overrides"].metadata["help"]
    for opt in reversed([
        # fields whose default is None carry no type for click to read: name it here
        *(option_for(TrainOptions, name, type=kind) for name, kind in
          (("epochs", int), ("batch_size", int), ("lr", float), ("weight_decay", float))),
        option_for(TrainOptions, "image_size", type=str, metavar="H[xW]"),
        option_for(TrainOptions, "channels"),
        option_for(TrainOptions, "resample"),
        *(option_for(TrainOptions, name) for name in ("seed", "device", "adv_train", "adv_eps", "adv_steps",
                                                       "adv_warmup")),
        option_for(TrainOptions, "normalize", metavar="none|auto|MEAN/STD"),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=overrides_help),
    ]):
        fn = opt(fn)
    return fn


@cli.command("train")
@click.argument("model")
@data_options
@train_options
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(), help="Checkpoint directory to write.")
@force_option
@json_option
def train_command(model, out_dir, force, as_json, overrides, **settings) -> None:
    """Train MODEL from the zoo and write a checkpoint artifact."""
    from dlforge.train import checkpoint_from_training

    options = TrainOptions(overrides=parse_overrides(overrides), **settings)
    artifact = checkpoint_from_training(model, out_dir, options, force=force, progress=cli_progress())
    if as_json:
        emit_json(artifact.card.to_dict())
    else:
        from dlforge.kinds import headline

        click.echo(f"{artifact.path}: {headline(artifact)}")


@cli.command("download")
@click.argument("dataset", type=click.Choice((*IDX_DATASETS, "cifar10", "speech-commands")))
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Where to put the files (default: $DLFORGE_HOME/data/DATASET).")
def download_command(dataset, data_dir) -> None:
    """Download a dataset's files, checking their published MD5 sums (MNIST and Fashion-MNIST: the IDX files;
    CIFAR-10: the python-version archive, unpacked to cifar-10-batches-py/; Speech Commands v0.02: the archive's
    SHA-256, then its ten keyword folders and split lists)."""
    from pathlib import Path

    from dlforge.data.dataset import default_data_dir

    target = Path(data_dir) if data_dir else default_data_dir(dataset)
    if dataset == "cifar10":
        from dlforge.data.cifar import download_cifar10

        paths = download_cifar10(target)
    elif dataset == "speech-commands":
        from dlforge.data.speech_commands import download_speech_commands

        paths = download_speech_commands(target)
    else:
        from dlforge.data.idx import download_idx

        paths = download_idx(dataset, target)
    for path in paths:
        click.echo(str(path))
