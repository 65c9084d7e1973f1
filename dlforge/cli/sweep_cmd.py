"""``dlforge sweep``."""

from __future__ import annotations

import click

from dlforge.cli import cli
from dlforge.cli.common import say


@cli.command("sweep")
@click.argument("spec", type=click.Path())
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(),
              help="Sweep directory: cells.jsonl (finished cells; a rerun resumes from it) and the report in audit/.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Run the cells in this process, or on Ray actors.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Ray actors (one CPU each; default: the CPUs Ray sees).")
@click.option("--address", default=None, help="Join an existing Ray cluster (e.g. ray://head:10001 or auto).")
def sweep_command(spec, out_dir, executor, workers, address) -> None:
    """Run the grid in SPEC (a TOML file; kind "audit": engines x attacks x eps x sample shards, kind
    "bench": batch sizes x threads, engines interleaved in each cell) one cell at a time or on Ray;
    finished cells are never recomputed; the merged report is an ordinary audit or bench report."""
    from pathlib import Path

    from tqdm.auto import tqdm

    from dlforge.sweep import EXECUTORS, cells, check_sweep_output, load_spec, run_sweep

    parsed = load_spec(spec)
    if executor not in EXECUTORS:
        from dlforge.errors import InputError

        raise InputError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    check_sweep_output(out_dir, parsed.kind)  # before any work: nothing of the user's is replaced
    grid = cells(parsed)
    total = len(grid)
    counts = {"cached": 0, "computed": 0}
    with tqdm(total=total, desc="sweep", unit="cell", disable=None) as bar:
        def on_cell(result, cached):
            counts["cached" if cached else "computed"] += 1
            c = result["cell"]
            bar.set_postfix_str(f"batch {c['batch']} threads {c['threads']}" if c["kind"] == "bench" else
                                f"{c['attack']} eps {c['eps']:g} {Path(c['engine']).name} "
                                f"[{c['start']}:{c['start'] + c['samples']}]", refresh=False)
            bar.update(1)

        report = run_sweep(parsed, out_dir, executor=executor, workers=workers, address=address, on_cell=on_cell,
                           grid=grid)
    say(f"{total} cells: {counts['computed']} computed, {counts['cached']} already in {Path(out_dir) / 'cells.jsonl'}")
    if parsed.kind == "bench":
        from dlforge.bench import write_bench_artifact
        from dlforge.bench.report import table

        written = write_bench_artifact(report, Path(out_dir) / "bench", force=True)  # the sweep's own report
        say(f"wrote {written.path}/bench.json, report.md and latency.png")
    else:
        from dlforge.adversarial import write_audit_artifact
        from dlforge.adversarial.report import table

        written = write_audit_artifact(report, Path(out_dir) / "audit", force=True)  # the sweep's own report
        say(f"wrote {written.path}/audit.json, samples.jsonl and report.html")
    click.echo(table(report))
