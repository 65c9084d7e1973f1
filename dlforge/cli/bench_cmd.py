"""``dlforge bench``: parse -> :class:`BenchOptions` -> ``run_bench`` -> print."""

from __future__ import annotations

import dataclasses
import json

import click

from dlforge.bench.options import BenchOptions
from dlforge.cli import cli
from dlforge.cli.common import emit_json, force_option, json_option, option_for, say
from dlforge.errors import InputError
from dlforge.options import flag_of

# click types the options' defaults cannot imply (a None default says nothing about the type).
_CLICK_TYPES = {"threads": int, "torch_checkpoint": click.Path(), "data_dir": click.Path(file_okay=False)}


def _bench_options(command):
    """Every BenchOptions field as a click option: flag, default, help and choices from the field."""
    for f in reversed(dataclasses.fields(BenchOptions)):
        extra = {"type": _CLICK_TYPES[f.name]} if f.name in _CLICK_TYPES else {}
        command = option_for(BenchOptions, f.name, flag_of(f), **extra)(command)
    return command


def _load_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read bench JSON {path}: {exc}") from exc


def _compare(old: str, new: str, as_json: bool) -> None:
    from dlforge.bench.report import compare, compare_table

    rows = compare(_load_json(old), _load_json(new))
    if as_json:
        emit_json({"comparison": rows})
    else:
        click.echo(compare_table(rows))


@cli.command("bench")
@click.argument("artifacts", nargs=-1, type=click.Path())
@_bench_options
@click.option("--compare", "compare_files", nargs=2, type=click.Path(), default=None, metavar="OLD.json NEW.json",
              help="Compare two bench JSON files instead of measuring.")
@click.option("-o", "--output", "out_dir", type=click.Path(), default=None,
              help="Write a bench artifact: bench.json, report.md and latency.png.")
@force_option
@json_option
def bench_command(artifacts, compare_files, out_dir, force, as_json, **settings) -> None:
    """Measure latency and throughput of ARTIFACTS (engine/onnx directories or .onnx files), interleaved."""
    if compare_files:
        return _compare(*compare_files, as_json)
    from dlforge.bench import run_bench, write_bench_artifact
    from dlforge.bench.report import table

    options = BenchOptions(**settings)  # bad settings fail here, before -o is touched
    if out_dir:  # claim the output before measuring, so a bad -o fails fast
        from dlforge.artifact import ArtifactWriter

        # --force never replaces a benched input (an engine, the --torch checkpoint, a folder holding one)
        inputs = [*artifacts, *([options.torch_checkpoint] if options.torch_checkpoint else [])]
        ArtifactWriter(out_dir, force=force, protect=inputs).discard()
    report = run_bench(list(artifacts), options)
    if out_dir:
        written = write_bench_artifact(report, out_dir, force=force)
        say(f"wrote {written.path}/bench.json, report.md, latency.png")
    if as_json:
        for note in report.notes:
            say(f"note: {note}")
        emit_json(report.to_json())
    else:
        click.echo(table(report))
