"""``audit``: robust accuracy of engines under attack, with the checks that judge the figures (``dlforge audit -o``)."""

from __future__ import annotations

import json

from dlforge.kinds import ArtifactKind, register_kind


def headline(artifact) -> str:
    report = json.loads(artifact.payload_path.read_text(encoding="utf-8"))
    checks = report["checks"]
    eps = sorted({r["eps"] for r in report["rows"]}) or [0.0]  # a sweep's merged report has no settings.eps
    at = max([e for e in eps if e <= 0.1] or [min(eps)])
    worst: dict[str, float] = {}
    for r in report["rows"]:
        if r["route"] != "white-box" and r["eps"] == at:  # the JSON route of rows crafted and judged on the source
            worst[r["target"]] = min(worst.get(r["target"], 1.0), r["robust_accuracy"])
    return (f"{report['samples']} images; worst robust accuracy at eps {at:g}: "
            + ", ".join(f"{t} {a:.3f}" for t, a in worst.items())
            + "; checks " + ", ".join(f"{sum(c.get('status') == s for c in checks)} {s}"
                                      for s in ("pass", "fail", "n/a")) + " (see report.html)")


register_kind(ArtifactKind("audit", produced_by="dlforge audit -o", headline=headline))
