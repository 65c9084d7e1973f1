"""Robust accuracy: the one rule the audit, drift and the per-layer precision search judge an attack by.

A point is robust only if the model is right on it before *and* after the attack (RobustBench's rule),
and every adversarial candidate is projected onto the eps-ball and the value range before it is judged
(:func:`~dlforge.adversarial.attacks.projection.project`), so an attack that strays is judged on what it
was allowed to do.
"""

from __future__ import annotations

import numpy as np

from dlforge.adversarial.attacks.base import Attack, Target
from dlforge.adversarial.attacks.projection import project


def outcome_rates(pred: np.ndarray, y: np.ndarray, clean_pred: np.ndarray) -> dict:
    """Robust accuracy, attack success rate and clean accuracy from predictions after and before the attack.

    A point is robust only if right before *and* after the attack (RobustBench's rule); the success rate
    is over the points that were right before it.
    """
    correct = clean_pred == y
    robust = correct & (pred == y)
    return {"robust_accuracy": float(robust.mean()),
            "attack_success_rate": float((~robust[correct]).mean()) if correct.any() else 0.0,
            "clean_accuracy": float(correct.mean())}


def robust_accuracy(model, attack: Attack, x: np.ndarray, y: np.ndarray, *, eps: float, value_range,
                    predict, clean_pred: np.ndarray | None = None, batch_size: int = 256) -> float:
    """``attack`` crafted on ``model``'s gradients (where it requires them) and ``predict``'s answers, projected as
    the audit projects every candidate, and judged by ``predict`` with the audit's rule (:func:`outcome_rates`):
    the one robust accuracy that drift and the per-layer precision search report."""
    target = Target(predict, model, batch_size)
    x_adv = attack.craft(target, x, y.astype(np.int64), eps=eps, value_range=value_range).x_adv
    x_adv = project(x_adv, x, eps, attack.norm, value_range)
    clean = predict(x).argmax(1) if clean_pred is None else clean_pred
    return outcome_rates(predict(x_adv).argmax(1), y, clean)["robust_accuracy"]


__all__ = ["outcome_rates", "robust_accuracy"]
