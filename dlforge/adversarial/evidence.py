"""What an audit shows beside its robust-accuracy rows: engines compared on the same adversarial
inputs, input-filter detectors scored, and a gallery of successful examples."""

from __future__ import annotations

import numpy as np

from dlforge.errors import InputError


def comparisons(run) -> list[dict]:
    """Between the first engine and each other: robust-accuracy difference and top-1 disagreement on
    the *same* adversarial inputs (quantization shifts robustness; reported per eps)."""
    if len(run.engines) < 2:
        return []
    base, y, bs = run.engines[0], run.y, run.options.batch_size
    out = []
    for other in run.engines[1:]:
        ca, cb = run.clean[base.label], run.clean[other.label]
        out.append({"a": base.label, "b": other.label, "attack": "clean", "eps": 0.0,
                    "robust_accuracy_diff": float((cb == y).mean() - (ca == y).mean()),
                    "disagreement": float((cb != ca).mean())})
        for key, x_adv in run.adv.items():
            if not key.transferable:  # examples found on one engine are specific to it
                continue
            pa, pb = base.predict(x_adv, bs).argmax(1), other.predict(x_adv, bs).argmax(1)
            # robust as the audit counts it: right on the clean input and on the adversarial one
            robust_a, robust_b = (ca == y) & (pa == y), (cb == y) & (pb == y)
            out.append({"a": base.label, "b": other.label, "attack": key.attack, "eps": float(key.eps),
                        "robust_accuracy_diff": float(robust_b.mean() - robust_a.mean()),
                        "disagreement": float((pa != pb).mean())})
    return out


MIN_HELD_OUT = 100  # clean test images beside the audited ones that a detector's threshold is set on


def check_held_out(run) -> None:
    """Refuse detectors where too few test images lie outside the audited slice to set a threshold on."""
    if len(run.held_out(MIN_HELD_OUT)) < MIN_HELD_OUT:
        raise InputError(f"detectors need >= {MIN_HELD_OUT} held-out clean test images beside the {len(run.y)} "
                         f"audited; {run.dataset.name} has {len(run.dataset.x_test)} test images: lower --samples")


def detections(run, fpr_examples: int = 1000, bar=None) -> tuple[list[dict], list[dict] | None, list[dict] | None]:
    """Each detector on each engine: threshold at its FPR on held-out clean images, then the share of
    successful adversarial examples it flags (and its false-positive rate on the audited images); with
    ``--adaptive``, also the attacks that know the detector (:mod:`dlforge.adversarial.adaptive`), and with
    ``--arms-race``, the rounds of retraining and attacking again. ``bar``: the audit's progress bar (one unit per
    detector and engine; the stage as its postfix)."""
    from dlforge.adversarial.adaptive import adaptive_rows, arms_race
    from dlforge.adversarial.detectors import make_detector

    held_out = run.held_out(fpr_examples)  # disjoint from the audited slice, whatever --start is
    check_held_out(run)
    out, adaptive = [], [] if run.options.adaptive else None
    race = [] if run.options.arms_race else None
    for spec in run.options.detectors:
        detector = make_detector(spec)
        try:
            for engine in run.engines:
                def show(stage: str, where=f"{detector.name} on {engine.label}") -> None:
                    if bar is not None:
                        bar.set_postfix_str(f"{where}: {stage}", refresh=True)

                show("fitting and scoring")
                out += _detect_on(detector, engine, held_out, run)
                if adaptive is not None:  # fitted on this engine by _detect_on
                    adaptive += adaptive_rows(run, detector, engine, held_out, show=show)
                if race is not None and hasattr(detector, "retrain"):  # last: it retrains the detector
                    race += arms_race(run, detector, engine, held_out, run.options.arms_race, show=show)
                if bar is not None:
                    bar.update(1)
        finally:
            detector.close()
    return out, adaptive, race


def _detect_on(detector, engine, held_out, run) -> list[dict]:
    predict = lambda z: engine.predict(z, run.options.batch_size)  # noqa: E731
    correct = run.clean[engine.label] == run.y
    detector.prepare(engine, run, held_out)
    detector.fit(predict, held_out)
    fpr = float(detector.detect(predict, run.x[correct]).mean()) if correct.any() else None
    rows = []
    for key, x_adv in run.adv.items():
        if key.engine not in (None, engine.label):  # examples found on another engine
            continue
        route = key.route
        success = correct & (predict(x_adv).argmax(1) != run.y)
        if not success.any():
            continue
        flagged = detector.detect(predict, x_adv[success])
        rows.append({"detector": detector.name, "settings": dict(getattr(detector, "settings", {})),
                     "engine": engine.label, "attack": key.attack, "route": route,
                     "eps": float(key.eps), "tuned_on": detector.tuned_on,
                     "seen": detector.tuned_on is not None and key.attack.split(":")[0] == detector.tuned_on
                     and float(key.eps) == detector.tuned_eps,
                     "successful_examples": int(success.sum()), "detection_rate": float(flagged.mean()),
                     "false_positive_rate": fpr, "threshold": detector.threshold})
    return rows


def class_name(labels, i) -> str:
    """Class ``i``'s label, or its index where the dataset names fewer classes."""
    return labels[int(i)] if int(i) < len(labels) else str(int(i))


def gallery(run, labels, count: int | None = None) -> list[dict]:
    """A few clean/adversarial pairs at the largest eps, with the first engine's predictions."""
    count = run.options.gallery if count is None else count
    if not run.adv or count <= 0:
        return []
    engine, x, y = run.engines[0], run.x, run.y
    # examples crafted on the source, else those found on the first engine itself
    key = max((k for k in run.adv if k.transferable), key=lambda k: k.eps, default=None)
    key = key or max((k for k in run.adv if k.engine == engine.label), key=lambda k: k.eps, default=None)
    if key is None:
        return []
    x_adv = run.adv[key]
    clean = run.clean[engine.label]
    pred = engine.predict(x_adv, run.options.batch_size).argmax(1)
    idx = np.flatnonzero((clean == y) & (pred != y))[:count]
    name = (lambda i: class_name(labels, i))  # noqa: E731
    return [{"index": int(i), "attack": key.attack, "eps": float(key.eps), "label": name(y[i]),
             "clean_prediction": name(clean[i]), "adversarial_prediction": name(pred[i]),
             "clean": x[i].tolist(), "adversarial": x_adv[i].tolist()} for i in idx]
