"""``dlforge import``: your own PyTorch model in, as a checkpoint artifact."""

from __future__ import annotations

import json

import click

from dlforge.cli import cli
from dlforge.cli.common import CommaList, emit_json, force_option, json_option, option_for
from dlforge.errors import InputError
from dlforge.train.import_options import ImportOptions


@cli.command("import")
@click.argument("model")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(), help="Checkpoint directory to write.")
@option_for(ImportOptions, "input_shape", type=CommaList(int), metavar="C,H,W")
@option_for(ImportOptions, "labels", metavar="A,B,..")
@option_for(ImportOptions, "num_classes")
@option_for(ImportOptions, "labels_file", type=click.Path(dir_okay=False))
@option_for(ImportOptions, "value_range", metavar="LOW,HIGH")
@option_for(ImportOptions, "data")
@option_for(ImportOptions, "data_dir", type=click.Path(file_okay=False))
@option_for(ImportOptions, "normalize", metavar="MEAN/STD")
@option_for(ImportOptions, "task")
@option_for(ImportOptions, "resize")
@option_for(ImportOptions, "crop", type=CommaList(int), metavar="H,W")
@option_for(ImportOptions, "interpolation")
@option_for(ImportOptions, "channel_order")
@option_for(ImportOptions, "atol")
@option_for(ImportOptions, "name")
@option_for(ImportOptions, "weights", metavar="FILE")
@click.option("--kwargs", "kwargs_json", default=None, metavar="JSON",
              help=ImportOptions.__dataclass_fields__["kwargs"].metadata["help"])
@force_option
@json_option
def import_command(model, out_dir, kwargs_json, force, as_json, **settings) -> None:
    """Import MODEL, a model of your own, as an artifact the other stages take.

    MODEL is a .pt2 file (torch.export.save of your model; it is vetted and never unpickled),
    package.module:factory (a callable that builds the model) or a zoo model's name, each with
    --weights (safetensors, or a PyTorch state dict read without unpickling code): these give a
    checkpoint. A .onnx file gives an onnx artifact: its labels, value range, normalization (put in
    front of the graph, so eps stays in pixel units) and photograph preprocessing recorded.

    Examples: dlforge import net.pt2 --data mnist --normalize 0.1307/0.3081 -o ckpt;
    dlforge import mobilenet.onnx --labels-file synset.txt --normalize 0.485,0.456,0.406/0.229,0.224,0.225
    --resize 256 --data photos/ -o onnx
    """
    from dlforge.kinds import headline
    from dlforge.train.user_model import checkpoint_from_file

    options = ImportOptions(**settings, kwargs=_parse_kwargs(kwargs_json))
    artifact = checkpoint_from_file(model, out_dir, options, force=force)
    if as_json:
        emit_json(artifact.card.to_dict())
    else:
        click.echo(f"{artifact.path}: {headline(artifact)}")


def _parse_kwargs(text: str | None) -> dict:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--kwargs is not JSON ({exc.msg}); give an object such as '{{\"width\": 32}}'") from None
    if not isinstance(value, dict):
        raise InputError(f"--kwargs expects a JSON object such as '{{\"width\": 32}}', got {text!r}")
    return value
