"""``drift``: accuracy and robustness at each hop from checkpoint to engine (``dlforge drift -o``, ``dlforge pipeline``)."""

from __future__ import annotations

import json

from dlforge.kinds import ArtifactKind, register_kind


def headline(artifact) -> str:
    hops = json.loads(artifact.payload_path.read_text(encoding="utf-8"))["hops"]
    return "accuracy / robust: " + ", ".join(
        f"{h['hop']} {h['accuracy']:.4f} / " + ("-" if h["robust_accuracy"] is None else f"{h['robust_accuracy']:.3f}")
        for h in hops) + " (see report.html)"


register_kind(ArtifactKind("drift", produced_by="dlforge drift -o or dlforge pipeline", headline=headline))
