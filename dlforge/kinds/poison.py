"""``poison``: a data-poisoning experiment: the poisoned model's engines and the defences' rates (``dlforge poison``)."""

from __future__ import annotations

import json

from dlforge.kinds import ArtifactKind, register_kind


def headline(artifact) -> str:
    report = json.loads(artifact.payload_path.read_text(encoding="utf-8"))
    if "curve" in report:  # an availability attack: accuracy against the poisoned share
        worst = min(report["curve"], key=lambda r: r["fp32"])
        return (f"{report['attack']}: fp32 accuracy {report['clean_accuracy']:.4f} clean, {worst['fp32']:.4f} at "
                f"rate {worst['rate']:g} (see report.html)")
    engines = ", ".join(f"{e['precision']} {e['clean_accuracy']:.4f} / {e['attack_success_rate']:.3f}"
                        for e in report.get("engines", []))
    return f"{report['attack']}: clean accuracy / attack success: {engines} (see report.html)"


register_kind(ArtifactKind("poison", produced_by="dlforge poison", headline=headline))
