"""Latency and throughput measurement: ``run_bench`` and its reports."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_bench_artifact(report: dict, out_dir: str | os.PathLike, *, baseline: str | None = None,
                         force: bool = False):
    """Write ``bench.json`` (the payload), ``report.md`` and ``latency.png`` as a bench artifact."""
    from dlforge.artifact import ArtifactWriter, Card, is_artifact, open_artifact
    from dlforge.bench.report import markdown, plot

    with ArtifactWriter(out_dir, force=force) as writer:
        writer.file("bench.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        writer.file("report.md").write_text(markdown(report, baseline), encoding="utf-8")
        plot(report, writer.file("latency.png"))
        first = report["results"][0]["artifact"]
        parent = open_artifact(first, verify=False).lineage() if Path(first).is_dir() and is_artifact(first) else None
        card = Card(kind="bench", payload="bench.json", model=None, parent=parent,
                    params={**report["settings"], "artifacts": list(dict.fromkeys(r["artifact"] for r in report["results"]))},
                    env=report["env"])
        return writer.commit(card)
