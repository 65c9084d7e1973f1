"""``dlforge pipeline``: every stage, end to end, into one run directory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dlforge.artifact import Artifact
from dlforge.backends import BACKENDS
from dlforge.options import Options, option, option_like
from dlforge.progress import ProgressLike, as_progress
from dlforge.train.options import TrainOptions

# The audit's and the drift report's attack settings agree, so their robust accuracies can be compared.
AUDIT_SAMPLES, AUDIT_PGD_STEPS, DRIFT_EPS = 200, 20, 0.1
# Audio models: the drift's budget in dB_x, and the audit adds the targeted attack ("make it hear ...")
DRIFT_DB = -40.0
AUDIO_AUDIT_ATTACKS = ("fgsm", "pgd", "targeted:points=50:queries=500")
PRECISIONS = ("fp32", "int8")


@dataclass
class PipelineOptions(Options):
    data: str = option_like(TrainOptions, "data")  # training's own declarations: one help text, one check
    data_dir: str | None = option_like(TrainOptions, "data_dir")
    epochs: int | None = option_like(TrainOptions, "epochs")
    seed: int = option_like(TrainOptions, "seed")
    backend: str = option("ort", "Backend that compiles the fp32 and INT8 engines (the stages are "
                                 "engine-<backend>-<precision>).", choices=BACKENDS.names)
    bench: bool = option(True, "Benchmark the engines beside eager PyTorch.")
    audit: bool = option(True, "Audit the engines' robustness.")


def stages(backend: str = "ort") -> tuple[str, ...]:
    """The pipeline's stage directories, in order, for engines built by ``backend``."""
    return ("checkpoint", "onnx", *(f"engine-{backend}-{p}" for p in PRECISIONS), "bench", "audit", "drift")


STAGES = stages()


def run_pipeline(
    model: str,
    out_dir: str | os.PathLike,
    options: PipelineOptions | None = None,
    *,
    force: bool = False,
    progress: ProgressLike = None,
    **overrides,
) -> dict[str, Artifact]:
    """Train ``model`` on ``data``, export, build fp32 and int8 engines with ``backend``, benchmark them side
    by side with eager PyTorch, audit their robustness, and end with the per-hop drift report (PyTorch ->
    ONNX -> each engine), each stage into ``out_dir/<stage>/``.

    ``options`` (:class:`PipelineOptions`) or keyword ``overrides`` (``data="mnist"``) set what runs.
    Returns the artifacts by stage name. ``progress`` (:class:`~dlforge.progress.Progress`) hears each stage
    and what the stages report.
    """
    o = PipelineOptions.build(options, **overrides)
    progress = as_progress(progress)
    data, data_dir, epochs, seed, bench, audit = o.data, o.data_dir, o.epochs, o.seed, o.bench, o.audit
    engines = [f"engine-{o.backend}-{p}" for p in PRECISIONS]
    from dlforge_models import get_entry

    from dlforge.artifact import check_output
    from dlforge.build import engine_from_onnx
    from dlforge.export import onnx_from_checkpoint
    from dlforge.train import checkpoint_from_training

    get_entry(model)
    train = TrainOptions(data=data, data_dir=None if data_dir is None else str(data_dir), epochs=epochs, seed=seed)
    out = Path(out_dir)
    for stage in stages(o.backend):  # every output checked before any work, so bad input writes nothing
        check_output(out / stage, force=force)
    artifacts: dict[str, Artifact] = {}
    progress.stage("train")
    artifacts["checkpoint"] = checkpoint_from_training(model, out / "checkpoint", train, force=force,
                                                       progress=progress)
    progress.stage("export")
    artifacts["onnx"] = onnx_from_checkpoint(artifacts["checkpoint"].path, out / "onnx", force=force)
    for stage, precision in zip(engines, PRECISIONS):
        progress.stage(f"build {o.backend} {precision}")
        artifacts[stage] = engine_from_onnx(artifacts["onnx"].path, out / stage, precision=precision,
                                            backend=o.backend, force=force, progress=progress)
    if bench:
        from dlforge.bench import write_bench_artifact
        from dlforge.bench.runner import run_bench

        progress.stage("bench")
        report = run_bench([artifacts[e].path for e in engines],
                           torch_checkpoint=artifacts["checkpoint"].path, batch_sizes=(1, 64), accuracy=True,
                           duration=0.5, rounds=3, progress=progress)
        artifacts["bench"] = write_bench_artifact(report, out / "bench", force=force)
    if audit and artifacts["checkpoint"].card.model.task != "classification":
        progress.message(f"audit skipped: {model} is a {artifacts['checkpoint'].card.model.task} model, and robust "
                 "accuracy needs class labels (use it as an input filter: dlforge audit --detectors autoencoder=DIR)")
    elif audit:
        from dlforge.adversarial import write_audit_artifact
        from dlforge.adversarial.audit import run_audit

        progress.stage("audit")
        audio = {"attacks": AUDIO_AUDIT_ATTACKS} if artifacts["checkpoint"].card.model.is_audio else {}
        report = run_audit([artifacts[e].path for e in engines],
                           source=artifacts["checkpoint"].path, samples=AUDIT_SAMPLES, pgd_steps=AUDIT_PGD_STEPS,
                           square_queries=300, progress=progress, **audio)
        artifacts["audit"] = write_audit_artifact(report, out / "audit", force=force)
    if artifacts["checkpoint"].card.model.task == "classification":
        from dlforge.drift import run_drift, write_drift_artifact

        progress.stage("drift")
        hops = [artifacts[s].path for s in ("checkpoint", "onnx", *engines)]
        info = artifacts["checkpoint"].card.model
        if info.is_audio:
            from dlforge.data.wav import eps_from_db

            eps = eps_from_db(DRIFT_DB, info.audio_peak)
        else:
            eps = DRIFT_EPS
        drift = run_drift(hops, samples=AUDIT_SAMPLES, eps=eps, pgd_steps=AUDIT_PGD_STEPS, progress=progress)
        artifacts["drift"] = write_drift_artifact(drift, out / "drift", force=force)
    return artifacts
