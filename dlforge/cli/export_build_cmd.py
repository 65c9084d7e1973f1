"""``dlforge export`` and ``dlforge build``."""

from __future__ import annotations

import click

from dlforge.cli import cli
from dlforge.cli.common import emit_json, force_option, json_option, say
from dlforge.inspect import headline


@cli.command("export")
@click.argument("checkpoint", type=click.Path())
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(), help="ONNX artifact directory to write.")
@click.option("--opset", type=int, default=18, show_default=True)
@click.option("--dynamic-batch/--static-batch", default=True, show_default=True,
              help="Export the batch dimension as dynamic, or fixed at 1.")
@click.option("--atol", type=float, default=1e-4, show_default=True,
              help="Largest allowed |ONNX - PyTorch| on real samples; beyond it the export fails.")
@click.option("--samples", type=int, default=512, show_default=True, help="Test images to verify on.")
@click.option("--exporter", type=click.Choice(["dynamo", "torchscript"]), default="dynamo", show_default=True)
@click.option("--data", default=None, help="The model's dataset, if not where training found it.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@force_option
@json_option
def export_command(checkpoint, out_dir, opset, dynamic_batch, atol, samples, exporter, data, data_dir, force,
                   as_json) -> None:
    """Export CHECKPOINT to ONNX and verify it against PyTorch (fails beyond --atol)."""
    from dlforge.export import onnx_from_checkpoint

    artifact = onnx_from_checkpoint(checkpoint, out_dir, opset=opset, dynamic_batch=dynamic_batch, atol=atol,
                                    samples=samples, exporter=exporter, data=data, data_dir=data_dir, force=force)
    if as_json:
        emit_json(artifact.card.to_dict())
    else:
        click.echo(f"{artifact.path}: {headline(artifact)}")


@cli.command("build")
@click.argument("onnx_dir", type=click.Path())
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(), help="Engine directory to write.")
@click.option("--backend", type=click.Choice(["ort", "tensorrt"]), default="ort", show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8", "auto"]), default="fp32", show_default=True,
              help="fp16 needs --backend tensorrt; auto measures the candidates and keeps the fastest in budget.")
@click.option("--calib-data", default=None, help="INT8 calibration dataset (default: the model's own).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--calib-samples", type=int, default=512, show_default=True)
@click.option("--calib-method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax",
              show_default=True)
@click.option("--per-channel/--per-tensor", default=True, show_default=True, help="INT8 weight scales.")
@click.option("--max-accuracy-drop", type=float, default=None, metavar="PTS",
              help="Fail when accuracy drops more than PTS percentage points below the parent's.")
@click.option("--eval-samples", type=int, default=None, help="Held-out images to evaluate on (default: all).")
@click.option("--min-batch", type=int, default=1, show_default=True, help="TensorRT profile: smallest batch.")
@click.option("--opt-batch", type=int, default=1, show_default=True,
              help="TensorRT profile: batch to optimize for; also the batch --precision auto times.")
@click.option("--max-batch", type=int, default=64, show_default=True, help="TensorRT profile: largest batch.")
@click.option("--min-shapes", default=None, metavar="NAME:DxD..", help="TensorRT profile as trtexec shapes (with --opt/--max-shapes).")
@click.option("--opt-shapes", default=None, metavar="NAME:DxD..")
@click.option("--max-shapes", default=None, metavar="NAME:DxD..")
@click.option("--workspace", "workspace_mib", type=int, default=None, metavar="MIB", help="TensorRT workspace limit.")
@click.option("--builder-optimization-level", type=int, default=3, show_default=True, help="TensorRT, 0..5.")
@force_option
@json_option
def build_command(onnx_dir, out_dir, backend, precision, calib_data, data_dir, calib_samples, calib_method,
                  per_channel, max_accuracy_drop, eval_samples, min_batch, opt_batch, max_batch, min_shapes,
                  opt_shapes, max_shapes, workspace_mib, builder_optimization_level, force, as_json) -> None:
    """Compile ONNX_DIR into an engine, evaluated against its parent."""
    from dlforge.build import engine_from_onnx
    from dlforge.errors import InputError

    given = [s for s in (min_shapes, opt_shapes, max_shapes) if s]
    if given and len(given) != 3:
        raise InputError("--min-shapes, --opt-shapes and --max-shapes go together; give all three")

    artifact = engine_from_onnx(
        onnx_dir, out_dir, backend=backend, precision=precision, calib_data=calib_data, data_dir=data_dir,
        calib_samples=calib_samples, calib_method=calib_method, per_channel=per_channel,
        max_accuracy_drop=max_accuracy_drop, eval_samples=eval_samples, min_batch=min_batch, opt_batch=opt_batch,
        max_batch=max_batch, shapes=(min_shapes, opt_shapes, max_shapes) if given else None,
        workspace_mib=workspace_mib, optimization_level=builder_optimization_level, force=force, report=say)
    if as_json:
        emit_json(artifact.card.to_dict())
    else:
        click.echo(f"{artifact.path}: {headline(artifact)}")
