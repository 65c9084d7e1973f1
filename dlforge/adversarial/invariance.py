"""Is the deployed engine a function of its input alone? Batch-composition and rebuild invariance.

Users of TensorRT report engines whose outputs change with the batch an input travels in
(NVIDIA/TensorRT#4796: kernels chosen per batch size, padding rows, reductions across the batch) and
rebuilds of one ONNX that give different engines (#4730: tactic selection by timing). An audit's
robust accuracy is only a property of the *model* if the engine answers the same input the same way
whatever else is in the batch. :func:`batch_invariance` feeds the audited inputs

- one at a time (batch 1, padded up to the engine's minimum batch where it has one),
- at the deployment batch (the engine's optimum batch, else the audit's batch size),
- mixed with other inputs (every audited input's batch filled with different, shuffled images),

and compares each with the deployment-batch answer: top-1 agreement and the largest logit
difference, judged against a tolerance (``atol`` absolute, plus ``rtol`` of the logits' scale; fp32
CPU kernels differ by summation order, ~1e-6). :func:`rebuild_invariance` builds the engine again
from its parent ONNX with the card's settings and compares the two engines' answers. Both work on
any :class:`~dlforge.runtime.deployed.DeployedModel`, TensorRT's included.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from dlforge.adversarial.checks import FAIL, NA, PASS, check

ATOL = 1e-4
RTOL = 1e-4


def _compare(reference: np.ndarray, other: np.ndarray, atol: float, rtol: float) -> dict:
    diff = float(np.abs(reference.astype(np.float64) - other.astype(np.float64)).max())
    scale = float(np.abs(reference).max())
    return {"max_abs_diff": diff, "top1_agreement": float((reference.argmax(1) == other.argmax(1)).mean()),
            "tolerance": atol + rtol * scale, "within": diff <= atol + rtol * scale}


def batch_invariance(engine, x: np.ndarray, others: np.ndarray, *, batch: int, atol: float = ATOL,
                     rtol: float = RTOL, seed: int = 0) -> dict:
    """``engine``'s answers on ``x`` alone, at ``batch`` and mixed into batches of ``others``, compared."""
    lo, hi = engine.batch_range
    deploy = max(lo, min(batch, hi)) if hi is not None else max(lo, batch)
    reference = engine.predict(x, deploy)
    single = engine.predict(x, max(1, lo))
    rng = np.random.default_rng(seed)
    mixed = np.empty_like(reference)
    fill = others if len(others) else x
    for i in range(len(x)):  # each input in a batch of other images, at a varying position
        batch_x = fill[rng.integers(0, len(fill), deploy)].copy()
        pos = int(rng.integers(0, deploy))
        batch_x[pos] = x[i]
        mixed[i] = engine.predict(batch_x, deploy)[pos]
    out = {"engine": engine.label, "samples": int(len(x)), "deployment_batch": int(deploy),
           "single": _compare(reference, single, atol, rtol), "mixed": _compare(reference, mixed, atol, rtol)}
    out["passed"] = out["single"]["within"] and out["mixed"]["within"]
    return out


def rebuild_invariance(engine, x: np.ndarray, *, batch: int, workdir, atol: float = ATOL, rtol: float = RTOL) -> dict:
    """Build ``engine`` again from its parent ONNX with the settings its card records; compare the answers."""
    from dlforge.build import engine_from_onnx
    from dlforge.build.options import BuildOptions
    from dlforge.runtime import open_deployed

    artifact = engine.artifact
    parent = engine.lineage()[1] if artifact is not None and len(engine.lineage()) > 1 else None
    if parent is None or parent.kind != "onnx":
        return {"engine": engine.label, "passed": None, "reason": "no parent ONNX artifact to rebuild from"}
    known = set(BuildOptions.__dataclass_fields__)
    params = {k: v for k, v in artifact.card.params.items() if k in known}
    params["precision"] = artifact.card.sections.get("precision", params.get("precision"))
    if params["precision"] == "mixed":
        return {"engine": engine.label, "passed": None, "reason": "a per-layer plan: rebuild it with --precision-plan"}
    if artifact.card.sections.get("graph", {}).get("quantized"):
        params["precision"] = "fp32"
    rebuilt_art = engine_from_onnx(parent.path, workdir, **params)
    rebuilt = open_deployed(rebuilt_art.path)
    try:
        cmp = _compare(engine.predict(x, batch), rebuilt.predict(x, batch), atol, rtol)
    finally:
        rebuilt.close()
    return {"engine": engine.label, "rebuilt_sha256": rebuilt_art.card.sha256,
            "same_file": rebuilt_art.card.sha256 == artifact.card.sha256, **cmp, "passed": cmp["within"]}


def invariance_check(results: list[dict]) -> dict:
    """One audit check over every engine's batch (and, when asked for, rebuild) invariance."""
    name = "engine outputs do not depend on batch composition or rebuild (invariance)"
    judged = [r for r in results if r.get("passed") is not None]
    if not judged:
        return check(name, NA, "no engine could be judged: " + "; ".join(r.get("reason", "?") for r in results))
    bad = []
    for r in judged:
        for part in ("single", "mixed"):
            if part in r and not r[part]["within"]:
                bad.append(f"{r['engine']} {'at batch 1' if part == 'single' else 'mixed with other inputs'}: max abs "
                           f"diff {r[part]['max_abs_diff']:.3g} (tolerance {r[part]['tolerance']:.3g}), top-1 agreement "
                           f"{r[part]['top1_agreement']:.4f}")
        if "rebuilt_sha256" in r and not r["within"]:
            bad.append(f"{r['engine']} rebuilt: max abs diff {r['max_abs_diff']:.3g}, top-1 agreement "
                       f"{r['top1_agreement']:.4f}")
    if bad:
        return check(name, FAIL, "; ".join(bad))
    worst = max((r[p]["max_abs_diff"] for r in judged for p in ("single", "mixed") if p in r), default=0.0)
    return check(name, PASS, f"{len(judged)} judgement(s); largest logit difference {worst:.3g} across batch 1, the "
                             "deployment batch and mixed batches" + ("; rebuilds agree" if any(
                                 "rebuilt_sha256" in r for r in judged) else ""))


INVARIANCE_SAMPLES = 16
INVARIANCE_BATCH = 32


def audit_invariance(run) -> list[dict]:
    """The audit's step: batch-composition invariance of every engine on the first audited inputs
    (:func:`batch_invariance`), and rebuild invariance (:func:`rebuild_invariance`) with ``rebuild_check``."""
    x = run.x[:INVARIANCE_SAMPLES]
    others = run.held_out(256) if len(run.dataset.x_test) > len(run.y) else run.x
    out = []
    for e in run.engines:
        batch = int((e.artifact.card.params.get("opt_batch") if e.artifact else None) or INVARIANCE_BATCH)
        out.append(batch_invariance(e, x, others, batch=batch, seed=run.options.seed))
        if run.options.rebuild_check:
            with tempfile.TemporaryDirectory(prefix="dlforge-rebuild-") as tmp:
                out.append(rebuild_invariance(e, run.x[:64], batch=batch, workdir=Path(tmp) / "engine"))
    return out
