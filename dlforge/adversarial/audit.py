"""``run_audit``: attack what is deployed, judge every result the same way, and check the evaluation.

Routes, as the report names them:

- *white-box*: crafted with the PyTorch source's gradients, measured on the source;
- *transfer*: the same examples (or a surrogate's), measured on each engine;
- *query*: query-only attacks run against each engine itself, no gradients needed.

The audit, not the attack, projects every candidate onto the eps-ball and the valid range before
judging it, and measures clean accuracy on exactly the same inputs. Checks flag evaluations that
cannot be trusted (gradient masking, non-monotone curves, probabilities instead of logits).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from dlforge.adversarial.attacks import GradientAttack, make_attack
from dlforge.adversarial.projection import project
from dlforge.artifact import Artifact, is_artifact, open_artifact, source_checkpoint
from dlforge.env import environment
from dlforge.errors import InputError

SCHEMA_VERSION = 1
DEFAULT_EPS = (0.0, 0.05, 0.1, 0.2, 0.3)
DEFAULT_EPS_L2 = (0.0, 0.5, 1.0, 2.0, 3.0)


@dataclass
class Engine:
    """A deployed model under audit: logits from numpy inputs, nothing else."""

    path: str
    label: str
    precision: str
    predict: Callable[[np.ndarray], np.ndarray]
    value_range: tuple[float, float]
    card: object | None = None
    extra: dict = field(default_factory=dict)


def _open_engine(path: str | os.PathLike, batch_size: int) -> Engine:
    from dlforge.runtime import open_session

    path = Path(path)
    if path.is_dir() and is_artifact(path):
        artifact = open_artifact(path, ["engine", "onnx"])
        session = open_session(artifact)
        card = artifact.card
        if card.model and card.model.task != "classification":
            raise InputError(f"{path} is a {card.model.task} model; dlforge audit measures classifiers "
                             "(robust accuracy needs class labels)")
        precision = card.sections.get("precision", "fp32")
        value_range = tuple(card.model.value_range) if card.model else (0.0, 1.0)
    elif path.is_file() and path.suffix == ".onnx":
        session, card, precision, value_range = open_session(path), None, "as-is", (0.0, 1.0)
    else:
        raise InputError(f"{path} is neither an engine/onnx artifact directory nor an .onnx file")
    if len(session.inputs) != 1:
        raise InputError(f"{path} has {len(session.inputs)} inputs; the audit attacks single-input classifiers")
    step = session.inputs[0].shape[0] if isinstance(session.inputs[0].shape[0], int) else batch_size

    def predict(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        return np.concatenate([session.predict(x[i:i + step]) for i in range(0, len(x), step)])

    label = path.name if path.is_dir() else path.stem
    return Engine(str(path), label, precision, predict, value_range, card)


def _check_source(source: Artifact, engine: Engine) -> None:
    """``--source`` must be the checkpoint the engine was built from (a different model is a surrogate)."""
    if engine.card is None:
        return
    own = source_checkpoint(Artifact(Path(engine.path), engine.card))
    if own is not None:
        if own.card.sha256 != source.card.sha256:
            raise InputError(f"--source {source.path} is not the checkpoint {engine.path} was built from "
                             f"({own.path}); pass that one, or use --surrogate for a transfer attack from "
                             "another model")
        return
    a, b = source.card.model, engine.card.model
    if a and b and (a.name, a.inputs[0].shape[1:], a.labels) != (b.name, b.inputs[0].shape[1:], b.labels):
        raise InputError(f"--source {source.path} is {a.name} {list(a.inputs[0].shape[1:])}, but {engine.path} is "
                         f"{b.name} {list(b.inputs[0].shape[1:])}; pass the engine's own checkpoint or use --surrogate")


def run_audit(
    targets: list[str | os.PathLike],
    *,
    source: str | os.PathLike | None = None,
    surrogate: str | os.PathLike | None = None,
    attacks: tuple[str, ...] = ("fgsm", "pgd", "square"),
    eps: tuple[float, ...] = DEFAULT_EPS,
    eps_l2: tuple[float, ...] = DEFAULT_EPS_L2,
    data: str | None = None,
    data_dir: str | os.PathLike | None = None,
    samples: int = 500,
    batch_size: int = 256,
    device: str = "cpu",
    pgd_steps: int = 40,
    square_queries: int = 1000,
    seed: int = 0,
    gallery: int = 6,
    detectors: tuple[str, ...] = (),
    progress: bool | None = None,
) -> dict:
    """Audit the robustness of one or more engines of one model; returns the JSON report.

    ``detectors`` (``"feature-squeezing"``, ``"autoencoder=ENGINE_DIR"``) are input-filter defences
    evaluated on each engine:
    their threshold is set on held-out clean images, and the report gives the share of
    *successful* adversarial examples each detects, per attack and eps.
    """
    from dlforge.adversarial.attacks import ATTACK_NAMES

    if not targets:
        raise InputError("give at least one engine to audit")
    unknown = [a for a in attacks if a not in ATTACK_NAMES]
    if unknown:
        raise InputError(f"unknown attack {unknown[0]!r}; expected some of {', '.join(ATTACK_NAMES)}")
    for e in (*eps, *eps_l2):
        if e < 0:
            raise InputError(f"eps must be >= 0, got {e}")
    from dlforge.adversarial.squeezing import make_detector

    detector_objects = [make_detector(d) for d in detectors]
    if samples < 1 or batch_size < 1 or pgd_steps < 1 or square_queries < 1:
        raise InputError("--samples, --batch-size, --pgd-steps and --square-queries must be positive")
    engines = [_open_engine(t, batch_size) for t in targets]
    if len({e.label for e in engines}) < len(engines):  # runs/a/engine and runs/b/engine: add the parent
        for e in engines:
            e.label = "/".join(Path(e.path).parts[-2:])
    value_range = engines[0].value_range
    if any(e.value_range != value_range for e in engines):
        raise InputError("the engines declare different input value ranges; audit them separately")

    crafter, crafted_on = None, None
    if source and surrogate:
        raise InputError("give --source or --surrogate, not both")
    gradient_attacks = [a for a in attacks if a != "square"]
    if source or surrogate:
        ckpt = open_artifact(source or surrogate, ["checkpoint"])
        if source:
            for e in engines:
                _check_source(ckpt, e)
        crafter, crafted_on = ckpt, "source" if source else "surrogate"
    elif gradient_attacks and engines[0].card is not None:
        crafter = source_checkpoint(Artifact(Path(engines[0].path), engines[0].card))
        crafted_on = "source" if crafter else None
        if crafter is not None:
            for e in engines[1:]:
                _check_source(crafter, e)
    if gradient_attacks and crafter is None:
        raise InputError(f"attacks {', '.join(gradient_attacks)} need gradients from a PyTorch model: pass --source "
                         "CHECKPOINT (or --surrogate), or audit with --attacks square (query-only)")

    dataset = _audit_dataset(data, data_dir, engines, crafter)
    x, y = dataset.x_test[:samples].astype(np.float32), dataset.y_test[:samples]
    if x.shape[1:] != tuple(_input_shape(engines[0])):
        raise InputError(f"dataset {dataset.name} images are {x.shape[1:]}, the engine expects "
                         f"{tuple(_input_shape(engines[0]))}; pass the right --data")

    from tqdm.auto import tqdm

    bar = tqdm(total=_work(attacks, eps, eps_l2, engines), desc="audit", unit="run",
               disable=None if progress is None else not progress)
    rows: list[dict] = []
    clean = {e.label: e.predict(x).argmax(1) for e in engines}
    checks: list[dict] = [_logits_check(engines[0], x[:64])]
    adv_examples: dict = {}
    model = None
    if crafter is not None:
        from dlforge.adversarial.torch_model import TorchModel

        model = TorchModel(crafter, device)
        clean["source"] = model.predict(x).argmax(1)
        checks.append(model.gradient_check(x[:256], y[:256]))
    for name in attacks:
        attack = make_attack(name, pgd_steps=pgd_steps, square_queries=square_queries, seed=seed)
        eps_list = eps_l2 if attack.norm == "l2" else eps
        for e in eps_list:
            if isinstance(attack, GradientAttack):
                x_adv = project(model.attack(attack, x, y, eps=e, value_range=value_range, batch_size=batch_size),
                                x, e, attack.norm, value_range)
                adv_examples[(name, e)] = x_adv
                if crafted_on == "source":
                    rows.append(_row(name, attack.norm, e, "white-box", "source", "source", model.predict(x_adv), y,
                                     clean["source"]))
                for eng in engines:
                    rows.append(_row(name, attack.norm, e, "transfer", eng.label, eng.path, eng.predict(x_adv), y,
                                     clean[eng.label], crafted_on=crafted_on))
                bar.update(1)
            else:
                for eng in engines:
                    result = attack.run(eng.predict, x, y, eps=e, value_range=value_range)
                    x_adv = project(result.x_adv, x, e, attack.norm, value_range)
                    row = _row(name, attack.norm, e, "query", eng.label, eng.path, eng.predict(x_adv), y, clean[eng.label])
                    row["queries_per_sample"] = float(result.queries.mean())
                    row["queries_median"] = float(np.median(result.queries))
                    rows.append(row)
                    adv_examples[(name, e, eng.label)] = x_adv
                    bar.update(1)
    if model is not None and gradient_attacks:
        strongest = "pgd" if "pgd" in gradient_attacks else gradient_attacks[0]
        attack = make_attack(strongest, pgd_steps=pgd_steps, seed=seed)
        full = value_range[1] - value_range[0]
        full_eps = full * (float(np.prod(x.shape[1:])) ** 0.5 if attack.norm == "l2" else 1.0)
        x_full = project(model.attack(attack, x, y, eps=full_eps, value_range=value_range, batch_size=batch_size),
                         x, full_eps, attack.norm, value_range)
        acc_full = float((model.predict(x_full).argmax(1) == y).mean())
        checks.append({"name": "white-box accuracy at eps = full range is near 0", "passed": acc_full <= 0.1,
                       "detail": f"{strongest} at eps {full_eps:g}: robust accuracy {acc_full:.4f} (bar: <= 0.10)"})
        bar.update(1)
    bar.close()
    checks.append(_monotone_check(rows))
    checks.extend(_masking_checks(rows))
    report = {
        "schema_version": SCHEMA_VERSION,
        "env": environment(),
        "target": [e.path for e in engines],
        "engines": [{"label": e.label, "path": e.path, "precision": e.precision,
                     "clean_accuracy": float((clean[e.label] == y).mean())} for e in engines],
        "source": str(crafter.path) if crafter is not None else None,
        "crafted_on": crafted_on,
        "data": dataset.name,
        "samples": int(len(y)),
        "value_range": list(value_range),
        "clean_accuracy": float((clean[engines[0].label] == y).mean()),
        "settings": {"attacks": list(attacks), "eps": list(eps), "eps_l2": list(eps_l2), "pgd_steps": pgd_steps,
                     "square_queries": square_queries, "seed": seed, "device": device},
        "rows": rows,
        "comparisons": _comparisons(engines, adv_examples, x, y, clean),
        "checks": checks,
    }
    if detector_objects:
        report["detections"] = _detections(detector_objects, engines, adv_examples, x, y, clean, dataset, samples)
    report["gallery"] = _gallery(adv_examples, engines[0], x, y, clean, dataset.labels, gallery)
    return report


def _detections(detectors, engines, adv_examples, x, y, clean, dataset, samples) -> list[dict]:
    """Each detector on each engine: threshold at its FPR (5%) on held-out clean images, then the share
    of successful adversarial examples it flags (and its false-positive rate on the audited images)."""
    held_out = dataset.x_test[samples:samples + 1000].astype(np.float32)
    if len(held_out) < 100:
        raise InputError(f"feature squeezing needs >= 100 held-out clean test images beyond --samples {samples}; "
                         f"{dataset.name} has {len(dataset.x_test)} test images: lower --samples")
    out = []
    for eng, detector in ((e, d) for e in engines for d in detectors):
        detector.fit(eng.predict, held_out)
        fpr = float(detector.detect(eng.predict, x[clean[eng.label] == y]).mean())
        for key, x_adv in adv_examples.items():
            if len(key) == 3 and key[2] != eng.label:
                continue
            success = (clean[eng.label] == y) & (eng.predict(x_adv).argmax(1) != y)
            if not success.any():
                continue
            flagged = detector.detect(eng.predict, x_adv[success])
            out.append({"detector": detector.name, "engine": eng.label, "attack": key[0], "eps": float(key[1]),
                        "successful_examples": int(success.sum()), "detection_rate": float(flagged.mean()),
                        "false_positive_rate": fpr, "threshold": detector.threshold})
    return out


def _input_shape(engine: Engine):
    if engine.card is not None and engine.card.model:
        return engine.card.model.inputs[0].shape[1:]
    from dlforge.runtime import open_session

    with open_session(engine.path) as s:
        return s.inputs[0].shape[1:]


def _audit_dataset(data, data_dir, engines, crafter):
    from dlforge.data import load_dataset

    if data:
        return load_dataset(data, data_dir)
    for art in [crafter] + [Artifact(Path(e.path), e.card) for e in engines if e.card is not None]:
        if art is None:
            continue
        ckpt = source_checkpoint(art)
        if ckpt is not None:
            return load_dataset(ckpt.card.params["data"], data_dir or ckpt.card.params.get("data_dir"))
    raise InputError("cannot tell which dataset to attack on: pass --data (and --data-dir), e.g. --data mnist "
                     "--data-dir ../shared/data/mnist")


def _work(attacks, eps, eps_l2, engines) -> int:
    total = 0
    for a in attacks:
        n = len(eps_l2) if a == "pgd-l2" else len(eps)
        total += n * (len(engines) if a == "square" else 1)
    return total + (1 if any(a != "square" for a in attacks) else 0)


def _row(attack, norm, eps, route, target, path, logits, y, clean_pred, crafted_on=None) -> dict:
    pred = logits.argmax(1)
    correct = clean_pred == y
    robust = correct & (pred == y)  # robust only if right before *and* after the attack (RobustBench's rule)
    row = {"attack": attack, "norm": norm, "eps": float(eps), "route": route, "target": target, "path": path,
           "robust_accuracy": float(robust.mean()),
           "attack_success_rate": float((~robust[correct]).mean()) if correct.any() else 0.0,
           "clean_accuracy": float(correct.mean())}
    if crafted_on:
        row["crafted_on"] = crafted_on
    return row


def _logits_check(engine: Engine, x: np.ndarray) -> dict:
    out = engine.predict(x)
    probs = bool((out >= 0).all() and (out <= 1).all() and np.allclose(out.sum(1), 1.0, atol=1e-3))
    return {"name": "model outputs logits, not probabilities", "passed": not probs,
            "detail": ("outputs are non-negative and sum to 1: a softmax output saturates and masks gradients; "
                       "export the logits" if probs else f"output range [{out.min():.3g}, {out.max():.3g}], "
                       f"row sums {out.sum(1).min():.3g}..{out.sum(1).max():.3g}")}


def _monotone_check(rows: list[dict], tolerance: float = 0.005) -> dict:
    bad = []
    curves: dict = {}
    for r in rows:
        curves.setdefault((r["attack"], r["route"], r["target"]), []).append((r["eps"], r["robust_accuracy"]))
    for key, points in curves.items():
        points.sort()
        for (e0, a0), (e1, a1) in zip(points, points[1:]):
            if a1 > a0 + tolerance:
                bad.append(f"{'/'.join(key)}: {a0:.4f} at eps {e0:g} -> {a1:.4f} at eps {e1:g}")
    return {"name": "robust accuracy does not increase with eps", "passed": not bad,
            "detail": "; ".join(bad) if bad else f"{len(curves)} curves non-increasing (tolerance {tolerance})"}


def _masking_checks(rows: list[dict], tolerance: float = 0.02) -> list[dict]:
    """A query-only attack beating every gradient attack on the same engine signals gradient masking."""
    found = []
    query = [r for r in rows if r["route"] == "query"]
    if not query:
        return []
    for q in query:
        grads = [r for r in rows if r["route"] == "transfer" and r["target"] == q["target"] and r["eps"] == q["eps"]
                 and r["norm"] == q["norm"]]
        if grads and q["robust_accuracy"] < min(g["robust_accuracy"] for g in grads) - tolerance:
            best = min(grads, key=lambda g: g["robust_accuracy"])
            found.append(f"{q['target']} eps {q['eps']:g}: {q['attack']} {q['robust_accuracy']:.4f} < "
                         f"{best['attack']} {best['robust_accuracy']:.4f}")
    compared = any(r["route"] == "transfer" for r in rows)
    return [{"name": "query attack is not stronger than the white-box ones (no gradient masking)",
             "passed": not found,
             "detail": "; ".join(found) if found else ("query robust accuracy >= gradient-attack robust accuracy "
                                                       f"- {tolerance} at every eps" if compared else
                                                       "no gradient attack to compare with")}]


def _comparisons(engines, adv_examples, x, y, clean) -> list[dict]:
    """Between the first engine and each other: robust-accuracy difference and top-1 disagreement
    on the *same* adversarial inputs (quantization shifts robustness; report it per eps)."""
    if len(engines) < 2:
        return []
    base = engines[0]
    out = []
    for other in engines[1:]:
        out.append({"a": base.label, "b": other.label, "attack": "clean", "eps": 0.0,
                    "robust_accuracy_diff": float((clean[other.label] == y).mean() - (clean[base.label] == y).mean()),
                    "disagreement": float((clean[other.label] != clean[base.label]).mean())})
        for key, x_adv in adv_examples.items():
            if len(key) != 2:
                continue
            pa, pb = base.predict(x_adv).argmax(1), other.predict(x_adv).argmax(1)
            out.append({"a": base.label, "b": other.label, "attack": key[0], "eps": float(key[1]),
                        "robust_accuracy_diff": float((pb == y).mean() - (pa == y).mean()),
                        "disagreement": float((pa != pb).mean())})
    return out


def _gallery(adv_examples, engine, x, y, clean, labels, count) -> list[dict]:
    """A few clean/adversarial pairs at the largest eps, with the engine's predictions."""
    if not adv_examples or count <= 0:
        return []
    key = max((k for k in adv_examples if len(k) == 2), key=lambda k: k[1], default=None)
    key = key or max(adv_examples, key=lambda k: k[1])
    x_adv = adv_examples[key]
    pred = engine.predict(x_adv).argmax(1)
    idx = np.flatnonzero((clean[engine.label] == y) & (pred != y))[:count]
    return [{"index": int(i), "attack": key[0], "eps": float(key[1]), "label": labels[int(y[i])],
             "clean_prediction": labels[int(clean[engine.label][i])], "adversarial_prediction": labels[int(pred[i])],
             "clean": x[i].tolist(), "adversarial": x_adv[i].tolist()} for i in idx]
