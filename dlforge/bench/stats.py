"""The one place latency samples are timed and summarized."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

# trtexec-style per-call coefficient of variation: kept in the JSON, no longer a warning (on a shared machine it
# is 100-500% for every row, so a flag on it always fires and says nothing).
COV_WARNING = 0.025
# Stability: how far a target's round medians move against another target's timed in the same rounds.
INSTABILITY_BAR = 0.10


def round_spread(medians) -> float | None:
    """(max - min) / median of a target's per-round medians: between-round variability (machine and engine)."""
    m = np.asarray(medians, dtype=np.float64)
    return float((m.max() - m.min()) / np.median(m)) if len(m) > 1 and np.median(m) > 0 else None


def paired_spread(medians, reference) -> float | None:
    """:func:`round_spread` of this target's round medians divided by ``reference``'s in the same rounds.

    The targets take turns within each round, so a slow moment of the machine slows every target of that
    round alike and cancels in the ratio; what is left is the target's own instability (or the reference's).
    """
    m, r = np.asarray(medians, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if len(m) != len(r) or len(m) < 2 or (r <= 0).any():
        return None
    return round_spread(m / r)


def summarize(latencies_ms: np.ndarray) -> dict:
    """min, mean, median, p90, p95, p99, max and std of latencies in milliseconds."""
    a = np.asarray(latencies_ms, dtype=np.float64)
    p = np.percentile(a, [50, 90, 95, 99])
    return {
        "min": float(a.min()), "mean": float(a.mean()), "median": float(p[0]),
        "p90": float(p[1]), "p95": float(p[2]), "p99": float(p[3]),
        "max": float(a.max()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
    }


def coefficient_of_variation(latencies_ms: np.ndarray) -> float:
    a = np.asarray(latencies_ms, dtype=np.float64)
    return float(a.std(ddof=1) / a.mean()) if len(a) > 1 and a.mean() > 0 else 0.0


def time_calls(fn: Callable[[], object], *, iterations: int = 0, duration_s: float = 0.0,
               max_iterations: int = 1_000_000) -> np.ndarray:
    """Call ``fn`` back to back and return each call's latency in ms.

    Runs ``iterations`` calls, or as many as fit in ``duration_s`` (at least one); when both are
    given, whichever is reached *last* ends the run, as trtexec's ``--iterations``/``--duration``.
    """
    if iterations <= 0 and duration_s <= 0:
        raise ValueError("give iterations or duration_s")
    out = []
    clock = time.perf_counter
    end = clock() + duration_s
    while True:
        start = clock()
        fn()
        stop = clock()
        out.append((stop - start) * 1e3)
        if len(out) >= max_iterations or (len(out) >= iterations and stop >= end):
            break
    return np.asarray(out)


def warm_up(fn: Callable[[], object], *, iterations: int = 10, duration_s: float = 0.2) -> None:
    """Warm caches and lazy initialisation: at least ``iterations`` calls *and* ``duration_s`` seconds."""
    if iterations > 0 or duration_s > 0:
        time_calls(fn, iterations=max(iterations, 1), duration_s=duration_s)
