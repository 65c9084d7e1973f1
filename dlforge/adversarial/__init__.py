"""Robustness tooling: attacks on compiled models, the audit that judges them, reports."""

from __future__ import annotations

import json
import os


def write_audit_artifact(report: dict, out_dir: str | os.PathLike, *, force: bool = False):
    """Write ``audit.json`` (the payload) and a self-contained ``report.html`` as an audit artifact."""
    from pathlib import Path

    from dlforge.adversarial.report import to_html
    from dlforge.artifact import ArtifactWriter, Card, is_artifact, open_artifact

    with ArtifactWriter(out_dir, force=force) as writer:
        writer.file("audit.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        writer.file("report.html").write_text(to_html(report), encoding="utf-8")
        first = report["target"][0]
        parent = open_artifact(first, verify=False).lineage() if Path(first).is_dir() and is_artifact(first) else None
        card = Card(kind="audit", payload="audit.json", model=None, parent=parent,
                    params={**report["settings"], "targets": report["target"], "samples": report["samples"],
                            "data": report["data"]},
                    env=report["env"],
                    sections={"checks": report["checks"], "clean_accuracy": report["clean_accuracy"]})
        return writer.commit(card)
