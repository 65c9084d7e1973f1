"""``engine_from_onnx``: compile an ONNX artifact for a backend and precision, with an accuracy gate.

Every engine is evaluated against its parent ONNX model on the held-out test split; the card
records accuracy, parent accuracy, the drop in percentage points and top-1 agreement, and
``max_accuracy_drop`` turns the drop into a hard failure. ``precision="auto"`` builds the
candidates, measures accuracy and latency side by side, and keeps the fastest within the budget.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from dlforge.artifact import Artifact, ArtifactWriter, Card, open_artifact, source_checkpoint
from dlforge.build.compilers import Compiler, OrtCompiler, TrtCompiler
from dlforge.data import load_dataset
from dlforge.env import environment
from dlforge.errors import InputError, StageFailed

PRECISIONS = ("fp32", "fp16", "int8", "auto")
AUTO_DEFAULT_BUDGET = 1.0  # percentage points


def engine_from_onnx(
    onnx_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    backend: str = "ort",
    precision: str = "fp32",
    calib_data: str | None = None,
    data_dir: str | os.PathLike | None = None,
    calib_samples: int = 512,
    calib_method: str = "minmax",
    per_channel: bool = True,
    max_accuracy_drop: float | None = None,
    eval_samples: int | None = None,
    min_batch: int = 1,
    opt_batch: int = 1,
    max_batch: int = 64,
    shapes: tuple[str, str, str] | None = None,
    workspace_mib: int | None = None,
    optimization_level: int = 3,
    force: bool = False,
    report: Callable[[str], None] = lambda line: None,
) -> Artifact:
    """Build an engine from the onnx artifact at ``onnx_dir`` and write it to ``out_dir``.

    Args:
        backend: ``"ort"`` (ONNX Runtime, CPU) or ``"tensorrt"``.
        precision: ``"fp32"``, ``"fp16"`` (TensorRT), ``"int8"`` (static QDQ quantization) or ``"auto"``.
        calib_data: dataset to calibrate INT8 on (default: the model's own). Evaluation always
            uses the held-out test split of the model's own dataset.
        calib_samples: calibration images, drawn from the training split.
        max_accuracy_drop: fail (nothing written) when accuracy falls more than this many
            percentage points below the parent's. ``auto`` uses it as its budget (default 1.0).
        eval_samples: held-out test images to evaluate on (default: the whole test split).
        min_batch, opt_batch, max_batch: the TensorRT optimization profile of the batch dimension;
            ``opt_batch`` is also the batch ``auto`` times.
        shapes: trtexec-style ``(min, opt, max)`` shape specs, instead of the batch range.
        workspace_mib, optimization_level: TensorRT builder settings.
        report: receives human-readable progress lines (e.g. ``auto``'s table).
    """
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if calib_samples < 1:
        raise InputError(f"--calib-samples must be positive, got {calib_samples}")
    if max_accuracy_drop is not None and max_accuracy_drop < 0:
        raise InputError(f"--max-accuracy-drop must be >= 0 points, got {max_accuracy_drop}")
    if opt_batch < 1:
        raise InputError(f"--opt-batch must be positive, got {opt_batch}")
    parent = open_artifact(onnx_dir, ["onnx"])
    info = parent.card.model
    if backend == "ort":
        compiler: Compiler = OrtCompiler()
    elif backend == "tensorrt":
        compiler = TrtCompiler(info.inputs, min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch,
                               shapes=shapes, workspace_mib=workspace_mib, optimization_level=optimization_level,
                               source=str(parent.path))
    else:
        raise InputError(f"unknown backend {backend!r}; expected ort or tensorrt")
    candidates = list(compiler.precisions) if precision == "auto" else [precision]
    if precision not in (*compiler.precisions, "auto"):
        raise InputError(f"backend {backend} builds {', '.join(compiler.precisions)}, not {precision}"
                         + ("; fp16 needs --backend tensorrt" if precision == "fp16" else ""))
    with ArtifactWriter(out_dir, force=force) as writer:
        params = parent.card.params
        ckpt = source_checkpoint(parent)
        ckpt_params = ckpt.card.params if ckpt is not None else {}
        dataset = _model_dataset(ckpt_params.get("data") or info.dataset, data_dir or ckpt_params.get("data_dir"),
                                 info, "--data-dir")
        calib = _model_dataset(calib_data, data_dir, info, "--calib-data") if calib_data else dataset
        if "int8" in candidates and calib_samples > len(calib.y_train):
            raise InputError(f"--calib-samples {calib_samples} asks for more images than the calibration set "
                             f"({calib.name} training split) has: {len(calib.y_train)}")
        x_eval, y_eval = dataset.x_test[:eval_samples], dataset.y_test[:eval_samples]
        static_batch = None if params.get("dynamic_batch", True) else 1
        calibration = dict(calib_x=calib.x_train[:calib_samples], calib_method=calib_method,
                           per_channel=per_channel, static_batch=static_batch)
        built: dict[str, dict] = {}
        with tempfile.TemporaryDirectory(prefix="dlforge-build-") as tmp:
            for cand in candidates:
                start = time.perf_counter()
                path = Path(tmp) / cand / compiler.payload
                path.parent.mkdir()
                details = compiler.compile(cand, parent.payload_path, path, **calibration)
                session = compiler.open(path, details, info)
                built[cand] = {"path": path, "details": details, "build_s": time.perf_counter() - start,
                               "session": session,
                               "evaluation": _evaluate(session, parent, x_eval, y_eval, info.task)}
            selection = None
            if precision == "auto":
                budget = AUTO_DEFAULT_BUDGET if max_accuracy_drop is None else max_accuracy_drop
                chosen, selection = _choose(built, x_eval, budget, opt_batch, static_batch, report)
            else:
                chosen = precision
            for b in built.values():
                b["session"].close()
            result = built[chosen]
            drop = result["evaluation"]["accuracy_drop"]
            if max_accuracy_drop is not None and drop is not None and drop > max_accuracy_drop:
                ev = result["evaluation"]
                raise StageFailed(
                    f"{chosen} engine accuracy {ev['accuracy']:.4f} is {drop:.2f} points below its parent's "
                    f"{ev['parent_accuracy']:.4f} (> --max-accuracy-drop {max_accuracy_drop:g}); nothing was "
                    "saved. Try more --calib-samples, --calib-method entropy or percentile, or fp32")
            shutil.copyfile(result["path"], writer.file(compiler.payload))
        sections = {
            "backend": backend,
            "precision": chosen,
            "evaluation": {**result["evaluation"], "dataset": dataset.name, "split": "test"},
            "build": {**result["details"], "seconds": round(result["build_s"], 3)},
            **compiler.card_sections(result["details"]),
        }
        if selection:
            sections["selection"] = selection
        card = Card(
            kind="engine", payload=compiler.payload, model=info, parent=parent.lineage(),
            params={"backend": backend, "precision": precision, "calib_data": calib.name,
                    "calib_samples": calib_samples, "calib_method": calib_method, "per_channel": per_channel,
                    "max_accuracy_drop": max_accuracy_drop, "eval_samples": len(y_eval), "min_batch": min_batch,
                    "opt_batch": opt_batch, "max_batch": max_batch, "shapes": list(shapes) if shapes else None,
                    "workspace_mib": workspace_mib, "optimization_level": optimization_level},
            env={**environment(), **compiler.card_env(result["details"])},
            sections=sections,
        )
        return writer.commit(card)


def _model_dataset(name, data_dir, info, flag: str):
    dataset = load_dataset(name, data_dir)
    if tuple(dataset.input_shape) != tuple(info.inputs[0].shape[1:]):
        raise InputError(f"dataset {dataset.name} has images {dataset.input_shape}; the model expects "
                         f"{tuple(info.inputs[0].shape[1:])}: check {flag}")
    return dataset


def _evaluate(session, parent: Artifact, x, y, task: str) -> dict:
    from dlforge.build.evaluate import compare
    from dlforge.runtime.ort import OrtSession

    with OrtSession(parent.payload_path) as reference:
        return compare(session, reference, x, y, task)


def _choose(built: dict, x_eval: np.ndarray, budget: float, opt_batch: int, static_batch, report) -> tuple[str, dict]:
    """Measure each candidate's latency, interleaved, and keep the fastest within the accuracy budget."""
    from dlforge.bench.stats import summarize, time_calls, warm_up

    batch = static_batch or opt_batch
    x = np.ascontiguousarray(np.resize(x_eval, (batch, *x_eval.shape[1:])))
    sessions = {name: b["session"] for name, b in built.items()}
    samples = {name: [] for name in sessions}
    for s in sessions.values():
        warm_up(lambda s=s: s.predict(x), iterations=20, duration_s=0.3)
    for _ in range(5):  # rounds alternate between candidates so machine drift hits all equally
        for name, s in sessions.items():
            samples[name].append(time_calls(lambda s=s: s.predict(x), iterations=20, duration_s=0.2))
    rows = []
    for name, b in built.items():
        stats = summarize(np.concatenate(samples[name]))
        ev = b["evaluation"]
        drop = ev["accuracy_drop"] or 0.0
        rows.append({"precision": name, "median_ms": stats["median"], "p90_ms": stats["p90"],
                     "accuracy": ev["accuracy"], "accuracy_drop": ev["accuracy_drop"],
                     "within_budget": drop <= budget})
    fp32 = next(r for r in rows if r["precision"] == "fp32")
    for r in rows:
        r["speedup_vs_fp32"] = fp32["median_ms"] / r["median_ms"]
    eligible = [r for r in rows if r["within_budget"]] or [fp32]
    chosen = min(eligible, key=lambda r: r["median_ms"])["precision"]
    report(f"precision auto: batch {batch}, accuracy budget {budget:g} points")
    report(f"{'precision':<10}{'median ms':>11}{'p90 ms':>9}{'speedup':>9}{'accuracy':>10}{'drop pts':>10}  verdict")
    for r in rows:
        acc = f"{r['accuracy']:.4f}" if r["accuracy"] is not None else "-"
        drop = f"{r['accuracy_drop']:.2f}" if r["accuracy_drop"] is not None else "-"
        verdict = "chosen" if r["precision"] == chosen else ("over budget" if not r["within_budget"] else "slower")
        report(f"{r['precision']:<10}{r['median_ms']:>11.4f}{r['p90_ms']:>9.4f}{r['speedup_vs_fp32']:>8.2f}x"
               f"{acc:>10}{drop:>10}  {verdict}")
    if chosen == "fp32" and any(r["precision"] != "fp32" and r["within_budget"] for r in rows):
        report("a lower precision is within the accuracy budget but not faster on this machine; keeping fp32")
    return chosen, {"batch_size": batch, "budget_points": budget, "candidates": rows, "chosen": chosen}
