"""``dlforge bench``."""

from __future__ import annotations

import json

import click

from dlforge.cli import cli
from dlforge.cli.common import emit_json, force_option, json_option, say
from dlforge.errors import InputError


def _batch_sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError as exc:
        raise InputError(f"--batch-sizes expects comma-separated integers such as 1,8,64, got {text!r}") from exc


def _load_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read bench JSON {path}: {exc}") from exc


@cli.command("bench")
@click.argument("artifacts", nargs=-1, type=click.Path())
@click.option("--batch-sizes", default="1,8,64", show_default=True, help="Comma-separated batch sizes.")
@click.option("--warmup", type=int, default=10, show_default=True, help="Warm-up calls (at least).")
@click.option("--warmup-time", type=float, default=0.2, show_default=True, help="Warm-up seconds (at least).")
@click.option("--iterations", type=int, default=50, show_default=True, help="Timed calls (at least).")
@click.option("--duration", type=float, default=1.0, show_default=True, help="Timed seconds (at least).")
@click.option("--rounds", type=int, default=5, show_default=True, help="Interleaved rounds per batch size.")
@click.option("--threads", type=int, default=None, help="Intra-op threads (default: the backend's choice).")
@click.option("--random-inputs", is_flag=True, help="Random inputs instead of real held-out images.")
@click.option("--trt-mode", type=click.Choice(["end-to-end", "compute"]), default="end-to-end", show_default=True,
              help="TensorRT: time host copies too, or device-resident compute only.")
@click.option("--cuda-graph", is_flag=True, help="TensorRT: replay the enqueue as a captured CUDA graph.")
@click.option("--torch", "torch_checkpoint", type=click.Path(), default=None,
              help="Add eager PyTorch on this checkpoint as a baseline row.")
@click.option("--accuracy", is_flag=True, help="Also measure held-out accuracy of each artifact.")
@click.option("--data", default=None, help="Dataset for inputs/accuracy (default: each model's own).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--baseline", default=None, help="Artifact the speedup column is relative to (default: the first).")
@click.option("--compare", "compare_files", nargs=2, type=click.Path(), default=None, metavar="OLD.json NEW.json",
              help="Compare two bench JSON files instead of measuring.")
@click.option("-o", "--output", "out_dir", type=click.Path(), default=None,
              help="Write a bench artifact: bench.json, report.md and latency.png.")
@force_option
@json_option
def bench_command(artifacts, batch_sizes, warmup, warmup_time, iterations, duration, rounds, threads, random_inputs,
                  trt_mode, cuda_graph, torch_checkpoint, accuracy, data, data_dir, baseline, compare_files, out_dir,
                  force, as_json) -> None:
    """Measure latency and throughput of ARTIFACTS (engine/onnx directories or .onnx files), interleaved."""
    from dlforge.bench.report import compare, compare_table, table

    if compare_files:
        rows = compare(_load_json(compare_files[0]), _load_json(compare_files[1]))
        if as_json:
            emit_json({"comparison": rows})
        else:
            click.echo(compare_table(rows))
        return
    from dlforge.bench.runner import run_bench

    if out_dir:  # claim the output before measuring, so a bad -o fails fast
        from dlforge.artifact import ArtifactWriter

        ArtifactWriter(out_dir, force=force).discard()
    report = run_bench(
        list(artifacts), batch_sizes=_batch_sizes(batch_sizes), warmup=warmup, warmup_time=warmup_time,
        iterations=iterations, duration=duration, rounds=rounds, threads=threads, random_inputs=random_inputs,
        trt_mode=trt_mode, cuda_graph=cuda_graph, torch_checkpoint=torch_checkpoint, accuracy=accuracy, data=data,
        data_dir=data_dir)
    text = table(report, baseline)
    if out_dir:
        from dlforge.bench import write_bench_artifact

        written = write_bench_artifact(report, out_dir, baseline=baseline, force=force)
        say(f"wrote {written.path}/bench.json, report.md, latency.png")
    if as_json:
        emit_json(report)
    else:
        click.echo(text)
