"""``onnx``: an exported ONNX model with its numerics verified against the checkpoint (``dlforge export``)."""

from __future__ import annotations

from dlforge.kinds import ArtifactKind, slow_int8, register_kind


def headline(artifact) -> str:
    v = artifact.card.sections["verification"]
    agreement = f", top-1 agreement {v['top1_agreement']:.4f}" if v.get("top1_agreement") is not None else ""
    warning = slow_int8(artifact.card.sections.get("graph", {}).get("int8_arithmetic"))
    return (f"verified on {v['samples']} samples: max abs diff {v['max_abs_diff']:.2e} (atol {v['atol']:g}){agreement}"
            + warning)


register_kind(ArtifactKind("onnx", produced_by="dlforge export", holds_model=True, headline=headline))
