"""Latency and throughput measurement: ``run_bench`` (settings in ``BenchOptions``) and its reports."""

from __future__ import annotations

import os

from dlforge.bench.options import BenchOptions
from dlforge.bench.report import BenchReport
from dlforge.bench.runner import run_bench


def write_bench_artifact(report: BenchReport, out_dir: str | os.PathLike, *, force: bool = False):
    """Write ``bench.json`` (the payload), ``report.md`` and ``latency.png`` as a bench artifact.

    The card's ``params`` are the options the report was measured with; its parent is the first
    benchmarked artifact (lineage verified).
    """
    from dlforge.bench.report import markdown, plot
    from dlforge.reporting import write_report_artifact

    artifacts = report.artifacts
    return write_report_artifact(
        "bench", report.to_json(), out_dir, payload="bench.json",
        files={"report.md": markdown(report), "latency.png": lambda path: plot(report, path)},
        parent=artifacts[0], params=report.options, sections={"artifacts": artifacts}, force=force,
        protect=artifacts)


__all__ = ["BenchOptions", "BenchReport", "run_bench", "write_bench_artifact"]
