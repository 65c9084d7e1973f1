"""``engine``: a compiled model for one backend and precision, evaluated against its parent (``dlforge build``)."""

from __future__ import annotations

from dlforge.card_validation import check_engine_card
from dlforge.kinds import ArtifactKind, slow_int8, register_kind


def headline(artifact) -> str:
    s = artifact.card.sections
    ev = s["evaluation"]
    if ev.get("accuracy") is None:
        quality = f"reconstruction MSE {ev['mse']:.5f} (parent {ev['parent_mse']:.5f})"
    else:
        quality = (f"accuracy {ev['accuracy']:.4f} (parent {ev['parent_accuracy']:.4f}, drop "
                   f"{ev['accuracy_drop']:.2f} pts, top-1 agreement {ev['top1_agreement']:.4f})")
    warning = slow_int8(s.get("build", {}).get("int8_arithmetic"))
    return f"{s['backend']} {s['precision']}: {quality} on {ev['samples']} held-out samples{warning}"


register_kind(ArtifactKind("engine", produced_by="dlforge build", holds_model=True, headline=headline,
                           check_card=check_engine_card))
