"""``--precision auto``: measure each candidate's latency, interleaved, and keep the fastest within budget."""

from __future__ import annotations

import numpy as np

from dlforge.reporting import Column, format_table

COLUMNS = [Column("precision"), Column("median_ms", "median ms", ".4f", ">"), Column("p90_ms", "p90 ms", ".4f", ">"),
            Column("speedup_vs_fp32", "speedup", lambda v: f"{v:.2f}x", ">"),
            Column("accuracy", "accuracy", ".4f", ">"), Column("accuracy_drop", "drop pts", ".2f", ">"),
            Column("verdict")]
ROBUST_COLUMNS = [*COLUMNS[:-1], Column("robust_drop", "robust drop", lambda v: "-" if v is None else f"{v:.2f}", ">"),
                  COLUMNS[-1]]


def time_candidates(engines: dict, x: np.ndarray, rounds: int = 5) -> dict[str, np.ndarray]:
    """Per-call latencies (ms) of each engine on ``x``; rounds alternate so machine drift hits all alike."""
    from dlforge.bench.stats import time_calls, warm_up

    name_of = {n: e.session.inputs[0].name for n, e in engines.items()}
    calls = {n: (lambda e=e, feeds={name_of[n]: x}: e.session.run(feeds)) for n, e in engines.items()}
    for call in calls.values():
        warm_up(call, iterations=20, duration_s=0.3)
    samples: dict[str, list] = {n: [] for n in engines}
    for _ in range(rounds):
        for n, call in calls.items():
            samples[n].append(time_calls(call, iterations=20, duration_s=0.2))
    return {n: np.concatenate(s) for n, s in samples.items()}


def timing_batch(batch_range, opt: int) -> int:
    """The batch ``auto`` times: ``--opt-batch`` clipped to the engine's batch range."""
    lo, hi = batch_range or (1, None)
    return min(max(opt, lo), hi) if hi is not None else max(opt, lo)


def choose(engines: dict, evaluations: dict, x_eval: np.ndarray, options, report,
           robust_drops: dict | None = None) -> tuple[str, dict]:
    """The fastest candidate within the budgets; fp32 when none is.

    ``options.budget`` bounds the accuracy drop. With ``options.max_robust_drop`` set, ``robust_drops`` (points
    of PGD robust accuracy each candidate loses against fp32, measured by the per-layer search through the
    candidate's own graph) bounds that too, and a candidate whose robustness was not measured is not within
    budget: a robustness budget is never waived for lack of a figure."""
    from dlforge.bench.stats import summarize

    batch = timing_batch(engines["fp32"].batch_range, options.opt)
    x = np.ascontiguousarray(np.resize(x_eval, (batch, *x_eval.shape[1:])))
    latencies = time_candidates(engines, x)
    rows = []
    for name, ev in evaluations.items():
        stats = summarize(latencies[name])
        robust = None if name == "fp32" else (robust_drops or {}).get(name)
        robust_ok = options.max_robust_drop is None or name == "fp32" or (
            robust is not None and robust <= options.max_robust_drop)
        rows.append({"precision": name, "median_ms": stats["median"], "p90_ms": stats["p90"],
                     "accuracy": ev["accuracy"], "accuracy_drop": ev["accuracy_drop"],
                     **({"robust_drop": 0.0 if name == "fp32" else robust} if options.max_robust_drop is not None
                        else {}),
                     "within_budget": (ev["accuracy_drop"] or 0.0) <= options.budget and robust_ok})
    fp32 = next(r for r in rows if r["precision"] == "fp32")
    for r in rows:
        r["speedup_vs_fp32"] = fp32["median_ms"] / r["median_ms"]
    chosen = min([r for r in rows if r["within_budget"]] or [fp32], key=lambda r: r["median_ms"])["precision"]
    for r in rows:
        r["verdict"] = "chosen" if r["precision"] == chosen else ("over budget" if not r["within_budget"] else "slower")
    robust_note = (f", robustness budget {options.max_robust_drop:g} points of PGD robust accuracy at eps "
                   f"{options.robust_eps:g}" if options.max_robust_drop is not None else "")
    report(f"precision auto: batch {batch}, accuracy budget {options.budget:g} percentage points{robust_note}")
    report(format_table(rows, COLUMNS if options.max_robust_drop is None else ROBUST_COLUMNS))
    if chosen == "fp32" and any(r["precision"] != "fp32" and r["within_budget"] for r in rows):
        report("a lower precision is within the accuracy budget but not faster on this machine; keeping fp32")
    return chosen, {"batch_size": batch, "budget_points": options.budget,
                    "robust_budget_points": options.max_robust_drop, "candidates": rows, "chosen": chosen}
