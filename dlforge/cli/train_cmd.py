"""``dlforge models``, ``dlforge train`` and ``dlforge download``."""

from __future__ import annotations

import click

from dlforge.cli import cli
from dlforge.cli.common import emit_json, force_option, json_option, parse_overrides, say
from dlforge.reporting import format_table as table


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
        click.echo(table(rows, ["name", "task", "epochs", "batch_size", "lr", "summary"]))


def epoch_printer(record) -> None:
    quality = (f"val_accuracy {record.val_accuracy:.4f}" if record.val_accuracy is not None
               else f"val_mse {record.val_mse:.5f}")
    say(f"epoch {record.epoch}: train_loss {record.train_loss:.4f}  {quality}  ({record.seconds:.1f} s)")


def data_options(fn):
    fn = click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                      help="Directory of the IDX files (MNIST, Fashion-MNIST).")(fn)
    return click.option("--data", default="digits", show_default=True,
                        help="digits, mnist, fashion-mnist, or a .npz file with x and y.")(fn)


def train_options(fn):
    for opt in reversed([
        click.option("--epochs", type=int, default=None, help="Passes over the data (default: the model's)."),
        click.option("--batch-size", type=int, default=None, help="Default: the model's."),
        click.option("--lr", type=float, default=None, help="Peak learning rate (AdamW, cosine decay)."),
        click.option("--weight-decay", type=float, default=None, help="Decoupled weight decay (AdamW)."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True),
        click.option("--adv-train", type=click.Choice(["fgsm", "pgd"]), default=None,
                     help="Adversarial training: Goodfellow's FGSM mixed objective, or Madry's PGD."),
        click.option("--adv-eps", type=float, default=0.25, show_default=True, help="L-inf budget of --adv-train."),
        click.option("--adv-steps", type=int, default=7, show_default=True, help="PGD steps of --adv-train pgd."),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Architecture option, e.g. --set hidden=256 (see `dlforge models --json`)."),
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
def train_command(model, data, data_dir, epochs, batch_size, lr, weight_decay, seed, device, adv_train, adv_eps,
                  adv_steps, overrides, out_dir, force, as_json) -> None:
    """Train MODEL from the zoo and write a checkpoint artifact."""
    from dlforge.train import checkpoint_from_training

    artifact = checkpoint_from_training(
        model, out_dir, data=data, data_dir=data_dir, epochs=epochs, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, seed=seed, device=device, overrides=parse_overrides(overrides),
        force=force, on_epoch=epoch_printer, on_message=say, adv_train=adv_train, adv_eps=adv_eps,
        adv_steps=adv_steps)
    if as_json:
        emit_json(artifact.card.to_dict())
    else:
        from dlforge.inspect import headline

        click.echo(f"{artifact.path}: {headline(artifact)}")


@cli.command("download")
@click.argument("dataset", type=click.Choice(["mnist", "fashion-mnist"]))
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Where to put the IDX files (default: $DLFORGE_HOME/data/DATASET).")
def download_command(dataset, data_dir) -> None:
    """Download a dataset's IDX files, checking their MD5 sums."""
    from pathlib import Path

    from dlforge.data.dataset import default_data_dir
    from dlforge.data.idx import download_idx

    target = Path(data_dir) if data_dir else default_data_dir(dataset)
    for path in download_idx(dataset, target):
        click.echo(str(path))
