"""``dlforge build``."""

from __future__ import annotations

import dataclasses

import click

from dlforge.cli import cli
from dlforge.build.options import BuildOptions
from dlforge.cli.common import cli_progress, emit_json, force_option, json_option, option_for
from dlforge.kinds import headline


BUILD_FIELDS = {f.name for f in dataclasses.fields(BuildOptions)}


def backend_option_flags(fn):
    """A flag for each field of each backend's own options class (generated: a new backend's options appear
    here with its registration). A flag not given passes nothing, so another backend's defaults never reach
    the chosen one; the chosen backend refuses a flag of another."""
    from dlforge.backends import BACKENDS
    from dlforge.options import choices_of, flag_of

    for name, backend in reversed(BACKENDS.items()):
        cls = backend.options_class
        for f in reversed(dataclasses.fields(cls) if cls is not None else ()):
            if not f.metadata.get("cli", True):
                continue
            choices = choices_of(f)
            annotation = str(f.type).replace(" ", "")
            text = f"(--backend {name}) {f.metadata.get('help', '')}  [default: {f.default}]"
            if annotation.startswith("bool"):
                flag = flag_of(f)
                fn = click.option(f"{flag}/--no-{flag[2:]}", f.name, default=None, help=text)(fn)
                continue
            kind = click.Choice(choices) if choices else int if annotation.startswith("int") else \
                float if annotation.startswith("float") else str
            fn = click.option(flag_of(f), f.name, type=kind, default=None, help=text)(fn)
    return fn


@cli.command("build")
@click.argument("onnx_dir", type=click.Path())
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(), help="Engine directory to write.")
@option_for(BuildOptions, "backend")
@option_for(BuildOptions, "precision")
@option_for(BuildOptions, "calib_data")
@option_for(BuildOptions, "data_dir", type=click.Path(file_okay=False))
@option_for(BuildOptions, "calib_samples", type=int)
@option_for(BuildOptions, "calib_method")
@option_for(BuildOptions, "per_channel", "--per-channel/--per-tensor")
@option_for(BuildOptions, "max_accuracy_drop", type=float, metavar="PTS")
@option_for(BuildOptions, "precision_plan", type=click.Path(), metavar="PLAN")
@option_for(BuildOptions, "max_robust_drop", type=float, metavar="PTS")
@option_for(BuildOptions, "robust_eps", type=float, metavar="EPS")
@option_for(BuildOptions, "eval_samples", type=int)
@option_for(BuildOptions, "threads", type=int)
@option_for(BuildOptions, "min_batch", type=int)
@option_for(BuildOptions, "opt_batch", type=int)
@option_for(BuildOptions, "max_batch", type=int)
@click.option("--min-shapes", default=None, metavar="NAME:DxD..", help="TensorRT profile as trtexec shapes (with --opt/--max-shapes).")
@click.option("--opt-shapes", default=None, metavar="NAME:DxD..")
@click.option("--max-shapes", default=None, metavar="NAME:DxD..")
@backend_option_flags
@force_option
@json_option
def build_command(onnx_dir, out_dir, min_shapes, opt_shapes, max_shapes, force, as_json, **settings) -> None:
    """Compile ONNX_DIR into an engine, evaluated against its parent."""
    from dlforge.build import engine_from_onnx

    own = {name: settings.pop(name) for name in list(settings) if name not in BUILD_FIELDS}
    own = {name: value for name, value in own.items() if value is not None}  # the flags given
    shapes = tuple(s for s in (min_shapes, opt_shapes, max_shapes) if s) or None
    if shapes is not None:
        own["shapes"] = shapes
    options = BuildOptions(**settings, backend_options=own)
    artifact = engine_from_onnx(onnx_dir, out_dir, options, force=force, progress=cli_progress())
    if as_json:
        emit_json(artifact.card.to_dict())
    else:
        click.echo(f"{artifact.path}: {headline(artifact)}")
