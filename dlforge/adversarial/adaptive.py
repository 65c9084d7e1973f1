"""Adaptive attacks on a detector-guarded engine: the attacker knows the detector.

A detection rate measured against an attack that ignores the detector is not evidence (Carlini & Wagner,
"Adversarial Examples Are Not Easily Detected", AISec 2017, bypassed ten detectors; Tramer et al., "On Adaptive
Attacks to Adversarial Example Defenses", NeurIPS 2020, thirteen defences). With ``--adaptive`` the audit
attacks each detector of ``--detectors`` on each engine with three attacks of the same L-inf budget and step
count, crafted on the engine's own differentiable graph (on the source, by transfer, where the engine has none)
and judged on the engine behind the detector. An example *evades* only if the engine misclassifies it **and**
the detector, its threshold set at its false-positive rate on held-out clean images, does not flag it.

- ``pgd``: PGD on the classifier's loss alone (the non-adaptive baseline, the attack the detector was shown);
- ``pgd+detector``: PGD on two hinge losses, the classifier's margin (true logit minus the best other) and the
  detector's score above its threshold in units of the clean scores' spread, so one step size serves every
  detector (Carlini & Wagner's combined objective, in the hinge form Tramer et al. recommend);
- ``orthogonal-pgd``: Bryniarski et al.'s selective Orthogonal PGD ("Evading Adversarial Example Detection
  Defenses with Orthogonal Projected Gradient Descent", ICLR 2022; reference ``v-wangg/OrthogonalPGD``): while
  the classifier is still right, a step on its loss with the component along the detector's gradient removed;
  once it is wrong but flagged, a step down the detector's score with the component along the classifier's
  gradient removed.

The detector's score enters through :meth:`~dlforge.adversarial.detectors.Detector.torch_score`: feature
squeezing through BPDA, STRIP through fresh random blends at each step (an expectation over its randomness), the
autoencoder through its own graph. As the reference code does, each adaptive attack runs all its steps and keeps,
per point, the misclassified iterate with the lowest detector score (on the differentiable model); the hinge
losses aim a margin past both lines (``MARGIN`` logits, ``DETECTOR_MARGIN`` clean-score spreads), so an example
does not sit on the threshold. Every candidate is judged on the engine, and the ``any`` row takes per point the
best of the three (an evading example where one attack found it): the attacker's best, the figure to read.
Reported per detector, engine and eps: the evasion rate, the detector's TPR at its FPR on the misclassified
examples, AUROC of its score (adversarial against the audited clean points), and the mean L-inf and L2
distortion of the misclassified examples.
"""

from __future__ import annotations

import numpy as np

from dlforge.adversarial.attacks import make_attack
from dlforge.adversarial.attacks.genetic import population_margin
from dlforge.adversarial.attacks.projection import project
from dlforge.errors import InputError

ADAPTIVE_ATTACKS = ("pgd", "pgd+detector", "orthogonal-pgd")
MARGIN = 0.05  # logits past the decision boundary (the reference's slack)
DETECTOR_MARGIN = 0.5  # clean-score spreads below the detector's threshold


def auroc(negative: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve of a score that should be higher on ``positive``: P(positive > negative), ties
    counted half (the Mann-Whitney statistic). None when either side is empty."""
    if len(negative) == 0 or len(positive) == 0:
        return None
    scores = np.concatenate([negative, positive])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(average, counts)
    u = ranks[len(negative):].sum() - len(positive) * (len(positive) + 1) / 2
    return float(u / (len(negative) * len(positive)))


def _flat_dot(a, b):
    return (a * b).reshape(len(a), -1).sum(1).reshape(-1, *[1] * (a.ndim - 1))


def _orthogonal(a, b):
    """``a`` with its component along ``b`` removed, per sample."""
    return a - _flat_dot(a, b) / _flat_dot(b, b).clamp_min(1e-20) * b


def adaptive_attack(kind: str, model, detector, x: np.ndarray, y: np.ndarray, *, eps: float, value_range,
                    steps: int, spread: float, seed: int = 0, batch_size: int = 256) -> np.ndarray:
    """``kind`` (``pgd+detector`` or ``orthogonal-pgd``) crafted on ``model`` (a
    :class:`~dlforge.adversarial.attacks.torch_model.TorchModel`) against ``detector`` (fitted: its threshold is
    the bar), within the L-inf ball; ``spread``: the clean scores' standard deviation (the detector's unit)."""
    import torch

    if kind not in ADAPTIVE_ATTACKS[1:]:
        raise ValueError(f"unknown adaptive attack {kind!r}")
    module, device = model.model, model.device
    lo, hi = value_range
    threshold, unit = float(detector.threshold), max(float(spread), 1e-12)
    out = np.empty_like(x)
    generator = torch.Generator().manual_seed(seed)
    alpha = 2.5 * eps / steps
    for start in range(0, len(x), batch_size):
        xb = torch.from_numpy(x[start:start + batch_size]).to(device)
        yb = torch.from_numpy(y[start:start + batch_size].astype(np.int64)).to(device)
        lower, upper = (xb - eps).clamp(lo, hi), (xb + eps).clamp(lo, hi)
        noise = (torch.rand(xb.shape, generator=generator) * 2 - 1).to(device) * eps
        x_adv = torch.minimum(torch.maximum(xb + noise, lower), upper)
        best = x_adv.detach().clone()
        best_score = torch.full((len(xb),), float("inf"), device=device)
        for _ in range(steps + 1):  # the last pass only scores the final iterate
            x_adv = x_adv.detach().requires_grad_(True)
            logits = module(x_adv)
            score = detector.torch_score(module, x_adv)
            true = logits.gather(1, yb[:, None])[:, 0]
            other = logits.masked_fill(torch.nn.functional.one_hot(yb, logits.shape[1]).bool(), float("-inf"))
            margin = true - other.max(1).values  # > 0: still right
            excess = (score - threshold) / unit  # > 0: flagged
            wrong = (margin < 0).detach()
            better = wrong & (score.detach() < best_score)  # the misclassified iterate with the lowest score
            best[better], best_score[better] = x_adv.detach()[better], score.detach()[better]
            if _ == steps:
                break
            if kind == "pgd+detector":
                loss = torch.relu(margin + MARGIN).sum() + torch.relu(excess + DETECTOR_MARGIN).sum()
                step = -torch.autograd.grad(loss, x_adv)[0]
            else:
                g_cls = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, yb, reduction="sum"), x_adv,
                                            retain_graph=True)[0]
                g_det = torch.autograd.grad(score.sum(), x_adv)[0]
                past = (margin < -MARGIN).detach().reshape(-1, *[1] * (xb.ndim - 1))
                step = torch.where(past, -_orthogonal(g_det, g_cls), _orthogonal(g_cls, g_det))
            x_adv = torch.minimum(torch.maximum(x_adv.detach() + alpha * step.sign(), lower), upper)
        never = torch.isinf(best_score)
        best[never] = x_adv.detach()[never]
        out[start:start + len(xb)] = best.cpu().numpy()
    return out


def judge(detector, predict, x: np.ndarray, x_adv: np.ndarray, y: np.ndarray, clean_ok: np.ndarray,
          clean_scores: np.ndarray) -> dict:
    """An attack's outcome on the engine behind the detector (see the module docstring). Every candidate is scored
    in its place in the audited set, so a detector's random draws (STRIP's blends) are the same for every attack."""
    wrong = clean_ok & (predict(x_adv).argmax(1) != y)
    adv_scores = detector.score(predict, x_adv)[wrong]
    flagged = adv_scores > detector.threshold
    delta = (x_adv - x)[wrong].reshape(int(wrong.sum()), -1)
    return {"misclassified": float(wrong.sum() / max(clean_ok.sum(), 1)),
            "evaded": float((wrong.sum() - flagged.sum()) / max(clean_ok.sum(), 1)),
            "tpr": float(flagged.mean()) if len(flagged) else None,
            "auroc": auroc(clean_scores, adv_scores),
            "linf": float(np.abs(delta).max(1).mean()) if len(delta) else None,
            "l2": float(np.linalg.norm(delta, axis=1).mean()) if len(delta) else None,
            "examples": int(wrong.sum())}


def best_per_point(detector, predict, crafted: dict[str, np.ndarray], y: np.ndarray,
                   clean_ok: np.ndarray) -> np.ndarray:
    """Per point, the attacker's best candidate of ``crafted``: one that evades (the lowest score among them),
    else a misclassified one (the lowest score), else the first attack's."""
    names = list(crafted)
    wrong = np.stack([clean_ok & (predict(crafted[k]).argmax(1) != y) for k in names])
    scores = np.stack([detector.score(predict, crafted[k]) for k in names])
    evades = wrong & (scores <= detector.threshold)
    # rank: evading first, then misclassified, then the rest; the lowest score within a rank
    rank = np.where(evades, 0, np.where(wrong, 1, 2)) * 1e12 + np.where(np.isfinite(scores), scores, 0)
    choice = rank.argmin(0)
    stacked = np.stack([crafted[k] for k in names])
    return stacked[choice, np.arange(len(y))]


def crafting_model(run, engine) -> tuple[object | None, str]:
    """What attacks on ``engine`` are crafted on, and the route: its own differentiable graph (``white-box
    (engine)``), else the PyTorch source (``transfer``), else None."""
    graph = next((g.model for e, g in zip(run.engines, run.graphs) if e is engine and g.model is not None), None)
    return (graph, "white-box (engine)") if graph is not None else (run.model, "transfer")


def adaptive_steps(options) -> int:
    """The step count every attack of the adaptive comparison runs: that of the audit's ``pgd`` spec where it sets
    one (``--attacks pgd:steps=100``), else ``--pgd-steps``; the baseline and the adaptive attacks share it."""
    for spec in options.attacks:
        if spec.split(":")[0].strip() == "pgd":
            return int(options.attack(spec).steps)
    return options.pgd_steps


def genetic_evasion(genetic, detector, predict, x: np.ndarray, y: np.ndarray, *, eps: float, spread: float,
                    value_range) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The genetic attack (:class:`~dlforge.adversarial.attacks.genetic.GenAttack`) on the engine *and* the detector,
    queries only: fitness is minus the two hinges of ``pgd+detector`` (the engine's margin, the detector's score above
    its threshold in clean-score spreads), the goal misclassified and not flagged, the oracle (where the attack has
    one) in the loop. It reads the detector's score, not only its verdict: a stronger attacker than one who sees
    only whether a query was flagged (its row's route says ``query (scores)``). ``(x_adv, engine queries per point,
    oracle rejections per point or None)``."""
    threshold, unit = float(detector.threshold), max(float(spread), 1e-12)

    def fitness(cands: np.ndarray, rows: np.ndarray):
        n, p = cands.shape[:2]
        flat = cands.reshape(n * p, *cands.shape[2:])
        margin = population_margin(predict(flat), y[rows], p)
        score = detector.score(predict, flat).reshape(n, p)
        excess = (score - threshold) / unit
        goal = (margin < 0) & (score <= threshold)
        return -(np.maximum(margin + MARGIN, 0) + np.maximum(excess + DETECTOR_MARGIN, 0)), goal

    result = genetic.search(fitness, x, y, eps=eps, value_range=value_range)
    return result.x_adv, result.queries, genetic.last_rejections


def adaptive_rows(run, detector, engine, held_out: np.ndarray, show=None) -> list[dict]:
    """The three attacks of :data:`ADAPTIVE_ATTACKS` and their per-point best (``any``) on ``engine`` guarded by
    ``detector`` (fitted on ``held_out``) at each L-inf eps of the audit; one row each, or one row saying why none
    could run. ``show(stage)``: progress."""
    o = run.options
    show = show or (lambda stage: None)
    predict = lambda z: engine.predict(z, o.batch_size)  # noqa: E731
    base = {"detector": detector.name, "settings": dict(getattr(detector, "settings", {})), "engine": engine.label,
            "fpr_target": detector.fpr, "threshold": detector.threshold, "norm": "linf"}
    model, route = crafting_model(run, engine)
    budgets = [e for e in o.eps if e > 0]
    genetic_spec = next((s for s in o.attacks if s.split(":")[0].strip() == "genetic"), None)
    if not any(run.options.attack(s).norm == "linf" for s in o.attacks) or not budgets:
        return [{**base, "skipped": "the adaptive attacks are L-inf: give an L-inf attack and an eps > 0"}]
    x, y = run.x, run.y
    clean_ok = run.clean[engine.label] == y
    clean_scores = detector.score(predict, x[clean_ok])
    spread = float(detector.score(predict, held_out).std())
    reason = None
    if model is None:
        why = ("--engine-gradients off and no PyTorch source" if o.engine_gradients == "off" else
               "the engine's graph cannot be differentiated and there is no PyTorch source")
        reason = f"no differentiable model to craft on ({why}): only the query-only genetic attack can run"
    else:
        try:
            if detector.torch_score(model.model, _tensor(x[:64], model)) is None:
                reason = (f"{detector.name} offers no differentiable score (Detector.torch_score): no gradient "
                          "adaptive attack ran, so its detection rate is not evidence")
        except InputError as exc:
            reason = f"no gradient adaptive attack ran: {exc}"
    if model is None and genetic_spec is None:
        return [{**base, "skipped": reason + " (add genetic to --attacks)"}]
    rows = []
    steps = adaptive_steps(o)
    for eps in budgets:
        crafted, extra = {}, {}
        if model is not None:
            show(f"adaptive: pgd eps {eps:g}")
            plain = make_attack("pgd", steps=steps, seed=o.seed)
            crafted["pgd"] = project(model.attack(plain, x, y, eps=eps, value_range=run.value_range,
                                                  batch_size=o.batch_size), x, eps, "linf", run.value_range)
            extra["pgd"] = {"route": route, "steps": steps}
        if genetic_spec is not None:
            show(f"adaptive: genetic eps {eps:g}")
            genetic = o.attack(genetic_spec)
            x_gen, used, rejected = genetic_evasion(genetic, detector, predict, x, y, eps=eps, spread=spread,
                                                    value_range=run.value_range)
            crafted["genetic"] = project(x_gen, x, eps, "linf", run.value_range)
            extra["genetic"] = {"route": "query (scores)", "steps": None, "queries_median": float(np.median(used)),
                                "oracle": genetic.oracle,
                                **({"oracle_rejections": int(rejected.sum())} if rejected is not None else {})}
        if reason is None:
            for kind in ADAPTIVE_ATTACKS[1:]:
                show(f"adaptive: {kind} eps {eps:g}")
                crafted[kind] = project(adaptive_attack(kind, model, detector, x, y, eps=eps, steps=steps,
                                                        value_range=run.value_range, spread=spread, seed=o.seed,
                                                        batch_size=o.batch_size), x, eps, "linf", run.value_range)
                extra[kind] = {"route": route, "steps": steps}
        if len(crafted) > 1:
            crafted["any"] = best_per_point(detector, predict, crafted, y, clean_ok)
            extra["any"] = {"route": "best of the above", "steps": None}
            if eps == max(budgets):
                _keep_gallery(run, detector, engine, predict, x, crafted["any"], y, clean_ok, eps)
        for kind, x_adv in crafted.items():
            rows.append({**base, "attack": kind, "eps": float(eps), **extra[kind],
                         "false_positive_rate": float((clean_scores > detector.threshold).mean())
                         if len(clean_scores) else None,
                         **judge(detector, predict, x, x_adv, y, clean_ok, clean_scores)})
        if reason is not None:
            rows.append({**base, "attack": "adaptive", "eps": float(eps), "route": route, "skipped": reason})
    return rows


GALLERY = 4  # evading examples shown per detector and engine


def _keep_gallery(run, detector, engine, predict, x, x_adv, y, clean_ok, eps) -> None:
    """A few of the adaptive attacker's evading examples (clean beside adversarial) for the HTML report."""
    pred = predict(x_adv).argmax(1)
    evading = clean_ok & (pred != y) & ~detector.detect(predict, x_adv)
    from dlforge.adversarial.evidence import class_name

    name = (lambda i: class_name(run.dataset.labels, i))  # noqa: E731
    items = run.cache.setdefault("adaptive_gallery", [])
    for i in np.flatnonzero(evading)[:GALLERY]:
        group = f"{detector.name} on {engine.label}, eps {eps:g}"
        items += [{"group": group, "title": f"clean: {name(y[i])}", "image": x[i].tolist()},
                  {"group": group, "title": f"evades: {name(pred[i])}", "image": x_adv[i].tolist()}]


def arms_race(run, detector, engine, held_out: np.ndarray, rounds: int, show=None) -> list[dict]:
    """The attacker/defender loop on ``detector`` (one that learns from examples: ``retrain``) guarding ``engine``, at
    the audit's largest L-inf eps: round 0 is the detector as the audit fitted it; each later round crafts the
    attacks of the ``any`` row (plain PGD, ``pgd+detector``, ``orthogonal-pgd``, per point the attacker's best)
    against the current detector on
    the detector's own training images, retrains it with the misclassified ones added as positives, sets its
    threshold again on the held-out clean images, and attacks the audited points afresh. Per round: TPR at its FPR
    against plain PGD (fixed across rounds) and against the fresh adaptive attack, AUROC, the share that evades, and
    the robust accuracy of engine + detector (right on the clean input, and the attack neither fooled the engine
    unflagged); the clean FPR that buys it beside them."""
    o = run.options
    predict = lambda z: engine.predict(z, o.batch_size)  # noqa: E731
    base = {"detector": detector.name, "engine": engine.label}
    model, _ = crafting_model(run, engine)
    budgets = [e for e in o.eps if e > 0]
    if model is None or not budgets:
        return [{**base, "skipped": "the arms race crafts adaptive L-inf examples: it needs a differentiable model "
                                    "and an eps > 0"}]
    eps, x, y = max(budgets), run.x, run.y
    clean_ok = run.clean[engine.label] == y
    xt, yt = detector.x_train, detector.y_train

    steps = adaptive_steps(o)
    plain = make_attack("pgd", steps=steps, seed=o.seed)

    def pgd(points, labels):
        return project(model.attack(plain, points, labels, eps=eps, value_range=run.value_range,
                                    batch_size=o.batch_size), points, eps, "linf", run.value_range)

    def adaptive_best(points, labels, ok, x_pgd, spread):
        """Per point the attacker's best of plain PGD and the two adaptive attacks (as the ``any`` row)."""
        crafted = {"pgd": x_pgd}
        for kind in ADAPTIVE_ATTACKS[1:]:
            crafted[kind] = project(adaptive_attack(kind, model, detector, points, labels, eps=eps, steps=steps,
                                                    value_range=run.value_range, spread=spread, seed=o.seed,
                                                    batch_size=o.batch_size), points, eps, "linf", run.value_range)
        return best_per_point(detector, predict, crafted, labels, ok)

    x_pgd, xt_pgd = pgd(x, y), None
    rows = []
    show = show or (lambda stage: None)
    for r in range(rounds + 1):
        show(f"arms race round {r}/{rounds}")
        added, learned = 0, {}
        if r > 0:
            train_ok = predict(xt).argmax(1) == yt
            xt_pgd = pgd(xt, yt) if xt_pgd is None else xt_pgd
            adv = adaptive_best(xt, yt, train_ok, xt_pgd, float(detector.score(predict, held_out).std()))
            fooled = train_ok & (predict(adv).argmax(1) != yt)
            added = int(fooled.sum())
            before = float(detector.detect(predict, adv[fooled]).mean()) if added else None
            detector.retrain(adv[fooled])
            detector.fit(predict, held_out)
            # the examples it was retrained on, flagged before and after: the retraining took
            learned = {"tpr_added_before": before,
                       "tpr_added_after": float(detector.detect(predict, adv[fooled]).mean()) if added else None}
        clean_scores = detector.score(predict, x[clean_ok])
        spread = float(detector.score(predict, held_out).std())  # the retrained detector's unit
        attacked = judge(detector, predict, x, adaptive_best(x, y, clean_ok, x_pgd, spread), y, clean_ok, clean_scores)
        against_pgd = judge(detector, predict, x, x_pgd, y, clean_ok, clean_scores)
        rows.append({**base, "round": r, "eps": float(eps), "added": added, **learned, "threshold": detector.threshold,
                     "false_positive_rate": float((clean_scores > detector.threshold).mean()) if len(clean_scores)
                     else None, "tpr_pgd": against_pgd["tpr"], "tpr_adaptive": attacked["tpr"],
                     "auroc_adaptive": attacked["auroc"], "evaded": attacked["evaded"],
                     "robust_accuracy": float(clean_ok.mean() * (1 - attacked["evaded"]))})
    return rows


def _tensor(x: np.ndarray, model):
    import torch

    return torch.from_numpy(x).to(model.device)


__all__ = ["ADAPTIVE_ATTACKS", "adaptive_attack", "adaptive_rows", "adaptive_steps", "arms_race", "auroc",
           "best_per_point", "crafting_model", "genetic_evasion", "judge"]
