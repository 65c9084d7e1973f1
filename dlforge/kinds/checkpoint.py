"""``checkpoint``: a trained or imported PyTorch model (``dlforge train`` / ``dlforge import``)."""

from __future__ import annotations

from dlforge.card_validation import check_checkpoint_card
from dlforge.kinds import ArtifactKind, register_kind


def headline(artifact) -> str:
    s = artifact.card.sections
    m = s.get("metrics")
    imported = s.get("architecture", {}).get("route") or ("zoo" if "weights" in s else None)
    if m is None:
        return f"imported ({imported} route); not measured (import it with --data to record its test accuracy)"
    quality = (f"test accuracy {m['test_accuracy']:.4f}" if m.get("test_accuracy") is not None else
               f"test reconstruction MSE {m['test_mse']:.5f} (mean-image baseline {m['mean_image_mse']:.5f})")
    if imported:
        fixed = s.get("weights", {}).get("fixups")
        return (f"{quality} on {m.get('test_samples', '?')} test images (imported, {imported} route"
                + (f"; weights fixed up: {len(fixed)} step(s), see card.json" if fixed else "") + ")")
    return f"{quality} ({len(m['history'])} epochs, {m['train_seconds']:.1f} s, {m['samples_per_s']:.0f} samples/s)"


register_kind(ArtifactKind("checkpoint", produced_by="dlforge train or dlforge import", holds_model=True,
                           headline=headline,
                           check_card=check_checkpoint_card))
