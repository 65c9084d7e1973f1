"""Per-layer precision: which ONNX nodes an INT8 engine keeps in fp32, searched on measurements.

A *plan* is the set of nodes kept in fp32; every other node ONNX Runtime's quantizer handles gets
its Q/DQ pairs, so the plan lives in the QDQ graph itself and a strongly typed TensorRT build of
that graph gets exactly the same assignment. ``dlforge build --precision auto`` runs
:class:`PlanSearch`; ``--precision-plan FILE`` applies a saved plan.

The search (what it measures, and how many times):

1. **Sensitivity** (calibration images, not a full evaluation): for each node, the graph with only
   that node quantized; its output's mean KL divergence from fp32's. One compile and one
   inference per node; the calibrated ranges are computed once and reused.
2. **Speed probe** (timing only): for each compute node (Conv, Gemm, MatMul, ConvTranspose), the
   all-INT8 graph with only that node in fp32, timed against all-INT8 in paired rounds. Nodes that
   make the graph faster when kept in fp32 (their INT8 kernel loses to fp32 even with the layout
   and quantization changes around it, which per-kernel profiles do not show) are kept in fp32
   when the whole plan proves faster.
3. **Full evaluations** (accuracy on the tuning half of the held-out split, latency against fp32
   side by side, robust accuracy under a short PGD when ``--max-robust-drop`` is given): all-INT8;
   the speed keeps; bisection over "keep the k most sensitive nodes"; then a pruning pass that
   returns kept nodes to INT8 while the budget holds. At most ``2 * ceil(log2 N) + 10`` of them.

The plan reported is the fastest evaluated one within budget; the accuracy the card records is
measured again on the whole split, and on the half the search never saw (``check_half``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from dlforge.precision.plan import Unit
from dlforge.reporting import Column

COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
SENSITIVITY_SAMPLES = 256
ROBUST_SAMPLES = 200
ROBUST_STEPS = 10


def evaluation_budget(n_units: int) -> int:
    """The most full evaluations a search over ``n_units`` nodes may use: ``2 * ceil(log2 N) + 10``."""
    return 2 * math.ceil(math.log2(max(n_units, 1))) + 10 if n_units > 1 else 10


@dataclass
class Evaluated:
    """One plan's full evaluation."""

    kept: frozenset
    label: str
    accuracy: float
    accuracy_drop: float
    speedup: float  # median over paired rounds of fp32's time / this plan's, timed side by side
    median_ms: float
    robust: float | None = None
    robust_drop: float | None = None
    within_budget: bool = False

    def row(self, units: list[Unit]) -> dict:
        return {"plan": self.label, "kept_fp32": len(self.kept), "accuracy": self.accuracy,
                "accuracy_drop": self.accuracy_drop, "median_ms": self.median_ms, "speedup_vs_fp32": self.speedup,
                "robust_accuracy": self.robust, "robust_drop": self.robust_drop, "within_budget": self.within_budget,
                "keep_fp32": [u.name for u in units if u.name in self.kept]}


@dataclass
class SearchContext:
    """What :class:`PlanSearch` needs from the build: how to compile, open and judge one plan."""

    compile: Callable[[tuple[str, ...], Path], object]  # (kept, dst) -> an opened DeployedModel
    units: list[Unit]
    reference_predict: Callable[[np.ndarray], np.ndarray]  # the parent (fp32) model
    fp32_engine: object  # DeployedModel, the timing yardstick
    x_calib: np.ndarray
    x_tune: np.ndarray
    y_tune: np.ndarray
    timing_batch: np.ndarray
    budget: float  # accuracy points
    workdir: Path  # where plan graphs are compiled
    robust_budget: float | None = None
    robust_eps: float = 0.1
    value_range: tuple[float, float] = (0.0, 1.0)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64) - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def kl_divergence(reference: np.ndarray, other: np.ndarray) -> float:
    """Mean KL(softmax(reference) || softmax(other)) over samples: how far a node's INT8 moves the output."""
    p, q = _softmax(reference), _softmax(other)
    return float((p * (np.log(p + 1e-12) - np.log(q + 1e-12))).sum(axis=1).mean())


def _time_pair(a, b, x: np.ndarray, rounds: int = 7) -> tuple[float, float, float]:
    """Median ms of engines ``a`` and ``b`` on ``x``, and how many times faster ``b`` is, in paired rounds.

    Each round times both back to back (alternating which goes first) and the speed-up is the median of
    the rounds' ratios, so a stall that hits one round moves one ratio, not the verdict.
    """
    from dlforge.bench.stats import time_calls, warm_up

    calls = [(lambda e=e, feeds={e.session.inputs[0].name: x}: e.session.run(feeds)) for e in (a, b)]
    for call in calls:
        warm_up(call, iterations=10, duration_s=0.1)
    medians = np.empty((rounds, 2))
    for r in range(rounds):
        for i in ((0, 1) if r % 2 == 0 else (1, 0)):
            medians[r, i] = np.median(time_calls(calls[i], iterations=5, duration_s=0.06))
    return float(np.median(medians[:, 0])), float(np.median(medians[:, 1])), float(np.median(medians[:, 0] / medians[:, 1]))


class PlanSearch:
    """The search of the module docstring, over one model; ``run()`` returns its record."""

    def __init__(self, ctx: SearchContext):
        self.ctx = ctx
        self.budget_evaluations = evaluation_budget(len(ctx.units))
        self.evaluated: dict[frozenset, Evaluated] = {}
        self._serial = 0
        self._robust_fp32 = None
        self._reference_accuracy = float((ctx.reference_predict(ctx.x_tune).argmax(1) == ctx.y_tune).mean())

    # -- building blocks ---------------------------------------------------------------------
    def _open(self, kept) -> object:
        self._serial += 1
        dst = self.ctx.workdir / f"plan-{self._serial}" / "model.onnx"
        dst.parent.mkdir(parents=True)
        return self.ctx.compile(tuple(u.name for u in self.ctx.units if u.name in kept), dst)

    def sensitivity(self) -> dict[str, float]:
        """KL divergence at the output with only each node quantized, on calibration images."""
        x = self.ctx.x_calib[:SENSITIVITY_SAMPLES]
        ref = self.ctx.reference_predict(x)
        names = [u.name for u in self.ctx.units]
        scores = {}
        for name in names:
            engine = self._open(frozenset(names) - {name})
            try:
                scores[name] = kl_divergence(ref, engine.predict(x))
            finally:
                engine.close()
        return scores

    def speed_keeps(self, all_int8) -> dict[str, float]:
        """Compute nodes whose fp32 kernel beats their INT8 one: ``{name: speed-up of keeping it}``."""
        found = {}
        for u in self.ctx.units:
            if u.op_type not in COMPUTE_OPS:
                continue
            engine = self._open(frozenset({u.name}))
            try:
                _, _, gain = _time_pair(all_int8, engine, self.ctx.timing_batch, rounds=5)
            finally:
                engine.close()
            if gain > 1.10:  # below 10% the machine's noise decides, not the kernel
                found[u.name] = gain
        return found

    def _robust_accuracy(self, onnx_path: Path, predict) -> float:
        """PGD through ``onnx_path``'s own graph, judged by ``predict``; the audit's rule (right before and after)."""
        from dlforge.adversarial.attacks.pgd import PGD
        from dlforge.adversarial.attacks.robust import robust_accuracy
        from dlforge.adversarial.attacks.torch_model import TorchModel
        from dlforge.onnx_torch import torch_module_from_onnx

        x, y = self.ctx.x_tune[:ROBUST_SAMPLES], self.ctx.y_tune[:ROBUST_SAMPLES]
        model = TorchModel(torch_module_from_onnx(onnx_path))
        return robust_accuracy(model, PGD(steps=ROBUST_STEPS), x, y, eps=self.ctx.robust_eps,
                               value_range=self.ctx.value_range, predict=predict)

    def evaluate(self, kept: frozenset, label: str) -> Evaluated:
        """One full evaluation (accuracy, latency vs fp32, robust accuracy if budgeted); cached per plan."""
        if kept in self.evaluated:
            return self.evaluated[kept]
        if len(self.evaluated) >= self.budget_evaluations:
            raise RuntimeError("evaluation budget exhausted")  # the search below never lets this happen
        ctx = self.ctx
        engine = self._open(kept)
        try:
            acc = float((engine.predict(ctx.x_tune).argmax(1) == ctx.y_tune).mean())
            _, t_plan, speedup = _time_pair(ctx.fp32_engine, engine, ctx.timing_batch)
            ev = Evaluated(kept, label, acc, round((self._reference_accuracy - acc) * 100, 4), speedup, t_plan)
            if ctx.robust_budget is not None:
                if self._robust_fp32 is None:
                    self._robust_fp32 = self._robust_accuracy(ctx.fp32_engine.path, ctx.reference_predict)
                ev.robust = self._robust_accuracy(engine.path, engine.predict)
                ev.robust_drop = round((self._robust_fp32 - ev.robust) * 100, 4)
        finally:
            engine.close()
        ev.within_budget = ev.accuracy_drop <= ctx.budget and (
            ctx.robust_budget is None or ev.robust_drop <= ctx.robust_budget)
        self.evaluated[kept] = ev
        return ev

    def _left(self) -> int:
        return self.budget_evaluations - len(self.evaluated)

    # -- the search --------------------------------------------------------------------------
    def run(self, all_int8) -> dict:
        ctx, names = self.ctx, [u.name for u in self.ctx.units]
        scores = self.sensitivity()
        keeps = self.speed_keeps(all_int8)
        base = frozenset()
        int8 = self.evaluate(base, "all-int8")
        if keeps:
            fast = self.evaluate(frozenset(keeps), "speed keeps")
            if fast.speedup > 1.03 * int8.speedup:
                base = fast.kept
        order = sorted((n for n in names if n not in base), key=lambda n: -scores[n])

        def plan(k: int) -> frozenset:
            return base | frozenset(order[:k])

        lo, hi = -1, len(order)  # plan(hi) keeps every node: fp32 by construction, within budget
        if self.evaluate(plan(0), "k=0").within_budget:
            hi = 0
        else:
            lo = 0
            while hi - lo > 1 and self._left() > 0:
                mid = (lo + hi) // 2
                if self.evaluate(plan(mid), f"k={mid}").within_budget:
                    hi = mid
                else:
                    lo = mid
        kept = set(plan(hi))
        for name in reversed(order[:hi]):  # least sensitive first: return kept nodes to INT8 while allowed
            if self._left() <= 0 or len(kept) == len(names):
                break
            trial = frozenset(kept - {name})
            if self.evaluate(trial, f"-{name}").within_budget:
                kept = set(trial)
        within = [e for e in self.evaluated.values() if e.within_budget]
        best = max(within, key=lambda e: e.speedup) if within else None
        return {"units": [{"onnx_node": u.name, "op_type": u.op_type, "module": u.module,
                           "sensitivity_kl": scores[u.name], "speed_keep": keeps.get(u.name)} for u in ctx.units],
                "evaluations": [e.row(ctx.units) for e in self.evaluated.values()],
                "evaluations_used": len(self.evaluated), "evaluation_budget": self.budget_evaluations,
                "front": pareto_front([e.row(ctx.units) for e in self.evaluated.values()]),
                "best": None if best is None else best.row(ctx.units)}


def pareto_front(rows: list[dict]) -> list[str]:
    """Labels of the rows no other row beats on accuracy, speed-up and robust accuracy at once."""
    def key(r):
        return (r["accuracy"], r["speedup_vs_fp32"], r["robust_accuracy"] if r["robust_accuracy"] is not None else 0.0)

    front = []
    for r in rows:
        a = key(r)
        if not any(all(o >= s for o, s in zip(key(q), a)) and key(q) != a for q in rows):
            front.append(r["plan"])
    return front


SENSITIVITY_COLUMNS = [Column("onnx_node", "ONNX node"), Column("op_type", "op"),
                       Column("module", "PyTorch module", lambda v: v or "(top-level forward)"),
                       Column("sensitivity_kl", "KL if INT8 alone", ".2e", ">"),
                       Column("speed_keep", "fp32 faster", lambda v: "" if v is None else f"{v:.2f}x", ">")]
EVALUATION_COLUMNS = [Column("plan"), Column("kept_fp32", "fp32 nodes", "d", ">"),
                      Column("accuracy", "accuracy", ".4f", ">"), Column("accuracy_drop", "drop pts", ".2f", ">"),
                      Column("speedup_vs_fp32", "speed-up", lambda v: f"{v:.2f}x", ">"),
                      Column("robust_accuracy", "robust", lambda v: "-" if v is None else f"{v:.3f}", ">"),
                      Column("within_budget", "in budget", lambda v: "yes" if v else "no")]


def search_summary(record: dict) -> str:
    """One line for the terminal; the tables are in ``precision.html`` and the card."""
    best = record["best"]
    found = (f"the fastest within budget keeps {best['kept_fp32']} node(s) in fp32 ({best['plan']}, {best['speedup_vs_fp32']:.2f}x "
             f"fp32)" if best else "none was within budget")
    return (f"per-layer plan: {len(record['units'])} quantizable nodes, {record['evaluations_used']} of at most "
            f"{record['evaluation_budget']} full evaluations; {found}; tables in precision.html")

