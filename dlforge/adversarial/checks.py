"""Sanity checks on an audit's evaluation: is its robust accuracy a number to trust?

Each check returns ``{"name", "status", "passed", "detail"}`` where ``status`` is ``"pass"``,
``"fail"`` or ``"n/a"`` (nothing to judge: ``passed`` is then ``None``, never ``True``).
Following Carlini et al., "On Evaluating Adversarial Robustness" (2019), §5: logits not
probabilities, finite non-zero gradients, near-zero accuracy at an unbounded budget, curves that
do not rise with eps, and no query-only attack stronger than the gradient attacks.
"""

from __future__ import annotations

import numpy as np

from dlforge.adversarial.records import ENGINE_ROUTE, QUERY, TRANSFER

PASS, FAIL, NA = "pass", "fail", "n/a"
GRADIENT_ROUTES = (TRANSFER, ENGINE_ROUTE)  # the gradient routes measured on an engine


def judgeable(rows: list[dict]) -> list[dict]:
    """Rows with something to judge: a row whose target got no point right on the clean input has robust accuracy 0
    whatever the attack did, so it can neither pass nor fail a comparison."""
    return [r for r in rows if r.get("clean_accuracy", 1.0) > 0]


def check(name: str, status: str, detail: str) -> dict:
    return {"name": name, "status": status, "passed": None if status == NA else status == PASS, "detail": detail}


def logits_check(out: np.ndarray) -> dict:
    name = "model outputs logits, not probabilities"
    probs = bool((out >= 0).all() and (out <= 1).all() and np.allclose(out.sum(1), 1.0, atol=1e-3))
    if probs:
        return check(name, FAIL, "outputs are non-negative and sum to 1: a softmax output saturates and masks "
                                 "gradients; export the logits")
    return check(name, PASS, f"output range [{out.min():.3g}, {out.max():.3g}], row sums "
                             f"{out.sum(1).min():.3g}..{out.sum(1).max():.3g}")


def gradient_check(grad: np.ndarray | None) -> dict:
    name = "input gradients are finite and non-zero"
    if grad is None:
        return check(name, NA, "no differentiable model (no PyTorch source and no engine graph): no gradients")
    finite = bool(np.isfinite(grad).all())
    zero = float((np.abs(grad).reshape(len(grad), -1).max(1) == 0).mean())
    ok = finite and zero <= 0.01
    return check(name, PASS if ok else FAIL, f"{'no' if finite else 'some'} NaN/inf; {zero * 100:.1f}% of samples with "
                                             "all-zero gradient (bar: <= 1%)")


def full_range_check(result: tuple[str, float, float] | None, bar: float = 0.1) -> dict:
    """``result``: (attack, eps covering the whole value range, robust accuracy there)."""
    name = "white-box accuracy at eps = full range is near 0"
    if result is None:
        return check(name, NA, "no gradient attack was run: nothing to judge")
    attack, eps, acc = result
    if acc is None:
        return check(name, NA, f"{attack} at eps {eps:g}: no audited point is classified right on the clean input, "
                               "so a near-0 accuracy proves nothing")
    return check(name, PASS if acc <= bar else FAIL,
                 f"{attack} at eps {eps:g}: robust accuracy {acc:.4f} (bar: <= {bar:.2f})")


def monotone_check(rows: list[dict], tolerance: float = 0.005) -> dict:
    name = "robust accuracy does not increase with eps"
    curves: dict = {}
    for r in rows:
        curves.setdefault((r["attack"], r["route"], r["target"]), []).append((r["eps"], r["robust_accuracy"]))
    judged = {k: sorted(v) for k, v in curves.items() if len({e for e, _ in v}) >= 2}
    if not judged:
        return check(name, NA, "no curve has two or more eps values: nothing to judge (give several --eps)")
    bad = [f"{'/'.join(key)}: {a0:.4f} at eps {e0:g} -> {a1:.4f} at eps {e1:g}"
           for key, points in judged.items() for (e0, a0), (e1, a1) in zip(points, points[1:]) if a1 > a0 + tolerance]
    return check(name, FAIL if bad else PASS,
                 "; ".join(bad) if bad else f"{len(judged)} curves non-increasing (tolerance {tolerance})")


def masking_check(rows: list[dict], tolerance: float = 0.02) -> dict:
    """A query-only attack beating a gradient route on the same engine signals gradient masking (or gradients
    that are simply wrong, as an INT8 graph's are when its straight-through estimator ignores the clipping).

    Two kinds of evidence: a query row below the strongest gradient attack of any one gradient route
    (transfer, white-box (engine)) for the same engine, norm and eps;
    and, inside an AutoAttack row, Square still fooling points all the gradient stages failed on
    (AutoAttack's own ``check_square_sr`` warns at 0.2 points over 10,000 points; an audit runs on
    hundreds, where one point is already 0.2-1 point, so the bar here is ``tolerance``).
    """
    name = "query attack is not stronger than the gradient attacks (no gradient masking)"
    rows = judgeable(rows)
    found, judged = [], 0
    for r in rows:
        stages = [s for s in r.get("stages", []) if "skipped" not in s]
        gradient = [s for s in stages if s["attack"] != "square"]
        square = next((s for s in stages if s["attack"] == "square"), None)
        if r["eps"] > 0 and gradient and square is not None:
            judged += 1
            if square["robust_accuracy"] < gradient[-1]["robust_accuracy"] - tolerance:
                found.append(f"{r['attack']} on {r['target']} ({r['route']}) eps {r['eps']:g}: square took robust "
                             f"accuracy from {gradient[-1]['robust_accuracy']:.4f} to {square['robust_accuracy']:.4f}")
    pairs = []
    for q in (r for r in rows if r["route"] == QUERY and r["eps"] > 0):
        for route in GRADIENT_ROUTES:  # each route on its own: one sound route must not vouch for a broken one
            grads = [r for r in rows if r["route"] == route and r["target"] == q["target"]
                     and r["eps"] == q["eps"] and r["norm"] == q["norm"]]
            if grads:
                pairs.append((q, min(grads, key=lambda g: g["robust_accuracy"])))
    if not pairs and not judged:
        return check(name, NA, "needs a query attack and a gradient attack on the same engine, norm and eps "
                               "(e.g. --attacks pgd,square, or autoattack): nothing to compare")
    found += [f"{q['target']} eps {q['eps']:g}: {q['attack']} {q['robust_accuracy']:.4f} < {g['route']} "
              f"{g['attack']} {g['robust_accuracy']:.4f}"
              for q, g in pairs if q["robust_accuracy"] < g["robust_accuracy"] - tolerance]
    return check(name, FAIL if found else PASS, "; ".join(found) if found else
                 f"{len(pairs) + judged} comparisons (each gradient route on each engine): query robust accuracy >= "
                 f"the route's strongest gradient attack - {tolerance}")


def transfer_gaps(rows: list[dict], bar: float) -> list[dict]:
    """Per engine, attack and eps > 0: transfer robust accuracy minus engine white-box robust accuracy.

    A large positive gap means examples crafted on the source do not carry over to the engine (a
    quantized engine often blunts them), so a transfer-only audit would overstate its robustness. A
    large negative gap (``suspect``) means the engine's own gradients craft weaker examples than the
    source's do on that very engine: a white-box attack should never lose to transfer, so the engine
    graph's gradients are suspect (:func:`engine_gradient_check`).
    """
    rows = judgeable(rows)
    engine = {(r["target"], r["attack"], r["eps"]): r for r in rows if r["route"] == ENGINE_ROUTE}
    out = []
    for t in (r for r in rows if r["route"] == TRANSFER and r["eps"] > 0):
        e = engine.get((t["target"], t["attack"], t["eps"]))
        if e is not None:
            gap = t["robust_accuracy"] - e["robust_accuracy"]
            out.append({"engine": t["target"], "attack": t["attack"], "norm": t["norm"], "eps": t["eps"],
                        "transfer": t["robust_accuracy"], "engine_white_box": e["robust_accuracy"],
                        "gap": gap, "large": gap > bar, "suspect": gap < -bar})
    return out


def transfer_gap_check(gaps: list[dict], bar: float) -> dict:
    """Flags a transfer gap above ``bar``: the transfer rows are not a robustness figure for that engine."""
    name = "transfer attacks do not overstate the engines' robustness (transfer gap)"
    if not gaps:
        return check(name, NA, "needs transfer and white-box (engine) rows for the same engine, attack and eps: "
                               "nothing to compare")
    large = [g for g in gaps if g["large"]]
    worst = max(gaps, key=lambda g: g["gap"])
    if large:
        return check(name, FAIL, "; ".join(f"{g['engine']} {g['attack']} eps {g['eps']:g}: transfer {g['transfer']:.4f}"
                                           f" vs engine white-box {g['engine_white_box']:.4f} (gap {g['gap']:+.4f})"
                                           for g in large[:4]) + (f" and {len(large) - 4} more" if len(large) > 4 else "")
                     + f" (bar: <= {bar:g}); trust the white-box (engine) rows")
    return check(name, PASS, f"{len(gaps)} comparisons; largest gap {worst['gap']:+.4f} ({worst['engine']} "
                             f"{worst['attack']} eps {worst['eps']:g}; bar: <= {bar:g})")


def engine_gradient_check(gaps: list[dict], bar: float) -> dict:
    """Flags a transfer gap below ``-bar``: the engine-graph attack is weaker than transfer on the same engine."""
    name = "engine-graph attacks are at least as strong as transfer (engine gradients are sound)"
    if not gaps:
        return check(name, NA, "needs transfer and white-box (engine) rows for the same engine, attack and eps: "
                               "nothing to compare")
    suspect = [g for g in gaps if g["suspect"]]
    if suspect:
        return check(name, FAIL, "; ".join(f"{g['engine']} {g['attack']} eps {g['eps']:g}: engine white-box "
                                           f"{g['engine_white_box']:.4f} vs transfer {g['transfer']:.4f} (gap "
                                           f"{g['gap']:+.4f})" for g in suspect[:4])
                     + (f" and {len(suspect) - 4} more" if len(suspect) > 4 else "")
                     + f" (bar: >= {-bar:g}); the engine graph's gradients are suspect: trust the transfer rows")
    worst = min(gaps, key=lambda g: g["gap"])
    return check(name, PASS, f"{len(gaps)} comparisons; most negative gap {worst['gap']:+.4f} ({worst['engine']} "
                             f"{worst['attack']} eps {worst['eps']:g}; bar: >= {-bar:g})")


def tramer_bounds(adaptive: list[dict] | None, rows: list[dict], clean: dict[str, float],
                  margin: float = 0.02) -> list[dict]:
    """Tramer's reduction ("Detecting Adversarial Examples Is (Nearly) As Hard As Classifying Them", ICML 2022,
    Theorem 4): a detector-guarded classifier with robust accuracy R at eps implies a (slow) classifier with robust
    accuracy R at eps/2. Per detector, engine and eps: the robust accuracy of engine + detector its attacks leave,
    where a point counts when the engine is right on it, the detector does not flag it clean, and the attack does not
    evade (``pgd``: the attack that ignores the detector, ``any``: the adaptive attacker's best); taken as
    ``clean * (1 - FPR - evaded)``, a lower bound (a point may be both flagged clean and evaded), so the check errs
    towards passing. Beside it the best robust accuracy the audit measured at eps/2 (per engine its strongest
    attack's, the best engine's): the yardstick is what this audit measured, so audit a robustly trained model
    alongside for a stronger one. A claim above it by more than ``margin`` implies a classifier better than any
    measured: suspect."""
    out = []
    measured: dict[float, dict[str, float]] = {}
    for r in judgeable(rows):
        if r.get("norm") == "linf":
            per = measured.setdefault(round(r["eps"], 9), {})
            per[r["target"]] = min(per.get(r["target"], 1.0), r["robust_accuracy"])
    by = {}
    for r in adaptive or []:
        if "skipped" not in r and r["attack"] in ("pgd", "any"):
            by.setdefault((r["detector"], r["engine"], r["eps"]), {})[r["attack"]] = r
    for (detector, engine, eps), found in by.items():
        if "pgd" not in found:
            continue
        claim = {k: clean[engine] * max(0.0, 1 - (v.get("false_positive_rate") or 0.0) - v["evaded"])
                 for k, v in found.items()}
        half = measured.get(round(eps / 2, 9))
        best = max(half.values()) if half else None
        out.append({"detector": detector, "engine": engine, "eps": eps, "half_eps": eps / 2,
                    "claimed": claim["pgd"], "claimed_adaptive": claim.get("any"), "best_measured_half": best,
                    "suspect": best is not None and claim["pgd"] > best + margin,
                    "suspect_adaptive": best is not None and claim.get("any") is not None
                    and claim["any"] > best + margin})
    return out


def tramer_check(bounds: list[dict]) -> dict:
    """Fails where a detector's robust accuracy *under its adaptive attack* implies a classifier at eps/2 better
    than the best the audit measured there (the adaptive attack may be too weak); n/a without adaptive rows or an
    audited eps/2."""
    name = "detector claims do not imply a better classifier at eps/2 than measured (Tramer 2022)"
    judged = [b for b in bounds if b["best_measured_half"] is not None and b["claimed_adaptive"] is not None]
    if not bounds:
        return check(name, NA, "no adaptive detector rows (--detectors ... --adaptive): nothing to judge")
    if not judged:
        if all(b["claimed_adaptive"] is None for b in bounds):
            return check(name, NA, "no adaptive attack ran on any detector (see the adaptive notes): nothing to judge")
        eps = sorted({b["eps"] for b in bounds if b["best_measured_half"] is None})
        return check(name, NA, "no robust accuracy measured at eps/2 to compare with: add "
                               f"{', '.join(f'{e / 2:g}' for e in eps)} to --eps")
    bad = [b for b in judged if b["suspect_adaptive"]]
    overclaims = sum(b["suspect"] for b in judged)
    note = (f"; the non-adaptive figures of {overclaims} would (they are not evidence)" if overclaims else "")
    if bad:
        b = max(bad, key=lambda b: b["claimed_adaptive"] - b["best_measured_half"])
        return check(name, FAIL, f"{b['detector']} on {b['engine']} at eps {b['eps']:g}: robust accuracy "
                                 f"{b['claimed_adaptive']:.3f} under its adaptive attack implies a classifier with "
                                 f"{b['claimed_adaptive']:.3f} at eps {b['half_eps']:g}, the best measured there is "
                                 f"{b['best_measured_half']:.3f} (by this audit's engines): attack it harder, or "
                                 f"show a classifier that robust, before trusting it{note}")
    return check(name, PASS, f"{len(judged)} detector/engine/eps claims under adaptive attack are within the best "
                             f"robust accuracy measured at eps/2{note}")
