"""Robustness tooling: attacks on compiled models, the audit that judges them, reports."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dlforge.adversarial.records import AuditReport


def write_audit_artifact(audit: AuditReport, out_dir: str | os.PathLike, *, force: bool = False):
    """Write ``audit.json`` (the payload) and a self-contained ``report.html`` as an audit artifact."""
    from dlforge.adversarial.report import to_html
    from dlforge.reporting import write_report_artifact

    report = audit.to_json()
    files = {"report.html": to_html(audit)}
    if "per_sample" in report:  # the records go to samples.jsonl, audit.json keeps where and how many
        records = report["per_sample"]["records"]
        files[report["per_sample"]["file"]] = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        report = {**report, "per_sample": {k: v for k, v in report["per_sample"].items() if k != "records"}}
    return write_report_artifact(
        "audit", report, out_dir, payload="audit.json", files=files,
        parent=report["target"][0], force=force, protect=report["target"],
        params={**report["settings"], "targets": report["target"], "samples": report["samples"], "data": report["data"]},
        sections={"checks": report["checks"], "clean_accuracy": report["clean_accuracy"]})
