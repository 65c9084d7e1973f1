"""Per-layer precision on models where all-INT8 costs accuracy: fp32, all-INT8, dlforge's plan and a
sensitivity-ranking-only baseline, side by side in one run.

The cases are zoo models whose INT8 calibration images were captured darker than the images the
model meets later (the training split at a fraction of its brightness: a camera calibrated under
other lighting), the setting under which whole-model INT8 loses points on this CPU; per-tensor
scales and few calibration images cost these models under 1 point (see the module's note in
``dlforge/build/mixed.py``).

For each case:

* ``fp32`` and ``int8``: ``dlforge build --precision fp32|int8`` (the INT8 one with the dim images);
* ``plan``: ``dlforge build --precision auto --opt-batch 64 --threads 1`` with the same calibration: the
  per-layer search (its full evaluations are counted against ``2 * ceil(log2 N) + 10``);
* ``ranking``: the baseline most per-layer tools amount to: the same sensitivity ranking, keep the
  k most sensitive nodes in fp32 for k = 1, 2, ... and stop at the first k within the accuracy
  budget on the whole test split (one build and evaluation per k; it ignores latency).

All four payloads are then timed in alternating rounds (ONNX Runtime, batch 64 and 1, 1 thread),
medians. "kept" is the share of all-INT8's time saving the plan keeps: (s_plan - 1) / (s_int8 - 1)
with s = fp32 median / median; the goal is >= 80% with the plan within 0.5 points of fp32.

    python bench/precision_plan.py [--cases lenet-digits,transformer-mnist] [--onnx MODEL-DATASET=DIR] [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from common import SHARED_MNIST
from int8_speed import measure

# name: (model, dataset, brightness of the calibration images)
CASES = {
    "lenet-digits": ("lenet", "digits", 0.5),
    "transformer-digits": ("transformer", "digits", 0.7),
    "transformer-mnist": ("transformer", "mnist", 0.5),
    "transformer-fashion": ("transformer", "fashion-mnist", 0.3),
    "mlp-fashion": ("mlp", "fashion-mnist", 0.3),
    "dbn-fashion": ("dbn", "fashion-mnist", 0.5),
    "lenet-fashion": ("lenet", "fashion-mnist", 0.5),
}
BUDGET = 0.5  # accuracy points, the acceptance bar


def _data_dir(dataset: str) -> str | None:
    return None if dataset == "digits" else str(SHARED_MNIST.parent / dataset)


def onnx_for(model: str, dataset: str, root: Path, given: dict) -> Path:
    """The case's onnx artifact: given with --onnx, else trained (model defaults) and exported now."""
    if f"{model}-{dataset}" in given:
        return Path(given[f"{model}-{dataset}"])
    from dlforge.export import onnx_from_checkpoint
    from dlforge.train import checkpoint_from_training
    from dlforge.train.options import TrainOptions

    print(f"training {model} on {dataset} ...", flush=True)
    ckpt = checkpoint_from_training(model, root / "checkpoint", TrainOptions(data=dataset, data_dir=_data_dir(dataset)))
    return onnx_from_checkpoint(ckpt.path, root / "onnx").path


def dim_calibration(dataset: str, brightness: float, path: Path) -> Path:
    from dlforge.data import load_dataset

    d = load_dataset(dataset, data_dir=_data_dir(dataset))
    x = d.x_train[:2048]
    np.savez(path, x=(x[:, 0] if x.shape[1] == 1 else x) * np.float32(brightness), y=d.y_train[:2048])
    return path


def run_case(name: str, onnx_dir: Path, calib: Path, work: Path, rounds: int) -> dict:
    from dlforge.build import engine_from_onnx

    common = {"calib_data": str(calib), "data_dir": _data_dir(CASES[name][1])}
    fp32 = engine_from_onnx(onnx_dir, work / "fp32", precision="fp32", data_dir=common["data_dir"])
    int8 = engine_from_onnx(onnx_dir, work / "int8", precision="int8", **common)
    plan = engine_from_onnx(onnx_dir, work / "plan", precision="auto", opt_batch=64, threads=1,
                            max_accuracy_drop=BUDGET, **common)
    search = plan.card.sections["selection"]["plan_search"]
    order = [u["onnx_node"] for u in sorted(search["units"], key=lambda u: -u["sensitivity_kl"])]
    ranking, k = None, 0
    while ranking is None or ranking.card.sections["evaluation"]["accuracy_drop"] > BUDGET:
        k += 1
        (work / f"rank-{k}.json").write_text(json.dumps({"keep_fp32": order[:k]}))
        ranking = engine_from_onnx(onnx_dir, work / f"rank-{k}", precision="int8",
                                   precision_plan=str(work / f"rank-{k}.json"), force=True, **common)
    engines = {"fp32": fp32, "int8": int8, "plan": plan, "ranking": ranking}
    shape = tuple(fp32.card.model.inputs[0].shape[1:])
    rows = []
    for batch in (64, 1):
        ms = measure({n: e.payload_path for n, e in engines.items()}, shape, batch, 1, rounds)
        for n, e in engines.items():
            ev = e.card.sections["evaluation"]
            s, s_int8 = ms["fp32"] / ms[n], ms["fp32"] / ms["int8"]
            rows.append({"case": name, "batch": batch, "engine": n, "precision": e.card.sections["precision"],
                         "fp32_nodes": len(e.card.sections.get("plan", {}).get("keep_fp32", [])),
                         "accuracy": ev["accuracy"], "drop": ev["accuracy_drop"], "median_ms": ms[n], "speedup": s,
                         "kept": (s - 1) / (s_int8 - 1) if n != "fp32" and s_int8 > 1 else None,
                         "evaluations": {"plan": search["evaluations_used"], "ranking": k}.get(n),
                         "evaluation_budget": search["evaluation_budget"] if n == "plan" else None})
    return {"rows": rows, "plan_nodes": plan.card.sections.get("plan", {}).get("nodes", []),
            "quantizable_nodes": len(search["units"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--onnx", action="append", default=[], metavar="MODEL-DATASET=DIR",
                    help="reuse an onnx artifact, e.g. transformer-mnist=runs/t/onnx (repeatable)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    from dlforge.reporting import Column, format_table

    given = dict(item.split("=", 1) for item in args.onnx)
    results = {}
    with tempfile.TemporaryDirectory(prefix="dlforge-plan-bench-") as tmp:
        for name in args.cases.split(","):
            model, dataset, brightness = CASES[name]
            work = Path(tmp) / name
            work.mkdir()
            onnx_dir = onnx_for(model, dataset, work, given)
            calib = dim_calibration(dataset, brightness, work / "calib.npz")
            print(f"{name}: calibration at {brightness:.0%} brightness", flush=True)
            results[name] = run_case(name, onnx_dir, calib, work, args.rounds)
    rows = [r for res in results.values() for r in res["rows"]]
    pct = lambda v: f"{v:.0%}"  # noqa: E731
    print(format_table(rows, [Column("case"), Column("batch", align=">"), Column("engine"), Column("precision"),
                              Column("fp32_nodes", "fp32 nodes", "d", ">"), Column("accuracy", "accuracy", ".4f", ">"),
                              Column("drop", "drop pts", ".2f", ">"), Column("median_ms", "median ms", ".4f", ">"),
                              Column("speedup", "vs fp32", lambda v: f"{v:.2f}x", ">"),
                              Column("kept", "kept", pct, ">"), Column("evaluations", "evaluations", "d", ">")]))
    for name, res in results.items():
        nodes = ", ".join(f"{n['onnx_node']} ({n['module'] or 'top-level forward'})" for n in res["plan_nodes"])
        print(f"{name}: the plan keeps {len(res['plan_nodes'])} of {res['quantizable_nodes']} nodes in fp32: {nodes}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
