"""``dlforge pipeline``: every stage, end to end, into one run directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from dlforge.artifact import Artifact

# The audit's and the drift report's attack settings agree, so their robust accuracies can be compared.
AUDIT_SAMPLES, AUDIT_PGD_STEPS, DRIFT_EPS = 200, 20, 0.1
STAGES = ("checkpoint", "onnx", "engine-ort-fp32", "engine-ort-int8", "bench", "audit", "drift")


def run_pipeline(
    model: str,
    out_dir: str | os.PathLike,
    *,
    data: str = "digits",
    data_dir: str | os.PathLike | None = None,
    epochs: int | None = None,
    seed: int = 0,
    force: bool = False,
    bench: bool = True,
    audit: bool = True,
    on_stage: Callable[[str], None] = lambda stage: None,
    on_epoch: Callable | None = None,
) -> dict[str, Artifact]:
    """Train ``model`` on ``data``, export, build fp32 and int8 engines, benchmark them side by side
    with eager PyTorch, audit their robustness, and end with the per-hop drift report (PyTorch -> ONNX
    -> each engine), each stage into ``out_dir/<stage>/``.

    Returns the artifacts by stage name.
    """
    from dlforge.artifact import check_output
    from dlforge.build import engine_from_onnx
    from dlforge.export import onnx_from_checkpoint
    from dlforge.train import checkpoint_from_training
    from dlforge.train.options import TrainOptions
    from dlforge_models import get_entry

    get_entry(model)
    train = TrainOptions(data=data, data_dir=None if data_dir is None else str(data_dir), epochs=epochs, seed=seed)
    out = Path(out_dir)
    for stage in STAGES:  # every output checked before any work, so bad input writes nothing
        check_output(out / stage, force=force)
    artifacts: dict[str, Artifact] = {}
    on_stage("train")
    artifacts["checkpoint"] = checkpoint_from_training(model, out / "checkpoint", train, force=force, on_epoch=on_epoch)
    on_stage("export")
    artifacts["onnx"] = onnx_from_checkpoint(artifacts["checkpoint"].path, out / "onnx", force=force)
    for precision in ("fp32", "int8"):
        on_stage(f"build ort {precision}")
        artifacts[f"engine-ort-{precision}"] = engine_from_onnx(
            artifacts["onnx"].path, out / f"engine-ort-{precision}", precision=precision, force=force)
    if bench:
        from dlforge.bench import write_bench_artifact
        from dlforge.bench.runner import run_bench

        on_stage("bench")
        report = run_bench([artifacts["engine-ort-fp32"].path, artifacts["engine-ort-int8"].path],
                           torch_checkpoint=artifacts["checkpoint"].path, batch_sizes=(1, 64), accuracy=True,
                           duration=0.5, rounds=3)
        artifacts["bench"] = write_bench_artifact(report, out / "bench", force=force)
    if audit and artifacts["checkpoint"].card.model.task != "classification":
        on_stage(f"audit skipped: {model} is a {artifacts['checkpoint'].card.model.task} model, and robust "
                 "accuracy needs class labels (use it as an input filter: dlforge audit --detectors autoencoder=DIR)")
    elif audit:
        from dlforge.adversarial import write_audit_artifact
        from dlforge.adversarial.audit import run_audit

        on_stage("audit")
        report = run_audit([artifacts["engine-ort-fp32"].path, artifacts["engine-ort-int8"].path],
                           source=artifacts["checkpoint"].path, samples=AUDIT_SAMPLES, pgd_steps=AUDIT_PGD_STEPS,
                           square_queries=300)
        artifacts["audit"] = write_audit_artifact(report, out / "audit", force=force)
    if artifacts["checkpoint"].card.model.task == "classification":
        from dlforge.drift import run_drift, write_drift_artifact

        on_stage("drift")
        hops = [artifacts[s].path for s in ("checkpoint", "onnx", "engine-ort-fp32", "engine-ort-int8")]
        drift = run_drift(hops, samples=AUDIT_SAMPLES, eps=DRIFT_EPS, pgd_steps=AUDIT_PGD_STEPS)
        artifacts["drift"] = write_drift_artifact(drift, out / "drift", force=force)
    return artifacts
