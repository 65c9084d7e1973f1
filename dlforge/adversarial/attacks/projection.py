"""Projection onto the eps-ball and the valid value range: the one place it is written.

Works on numpy arrays and torch tensors alike (it uses only operations both provide), so the
attacks apply it inside their loops and the audit applies it again, independently, to whatever an
attack returns before judging it: an attack cannot over-report by leaving the ball.
"""

from __future__ import annotations

import numpy as np

NORMS = ("linf", "l2")


def project(x_adv, x, eps: float, norm: str, value_range: tuple[float, float]):
    """Closest point to ``x_adv`` within ``eps`` of ``x`` (per sample, in ``norm``) and within range."""
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clip(-eps, eps)
    elif norm == "l2":
        flat = delta.reshape(len(delta), -1)
        length = ((flat * flat).sum(1) ** 0.5).clip(min=1e-12)
        factor = (eps / length).clip(max=1.0)
        delta = delta * factor.reshape(-1, *([1] * (delta.ndim - 1)))
    else:
        raise ValueError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}")
    lo, hi = value_range
    return (x + delta).clip(lo, hi)


def linf_box(x, eps: float, value_range: tuple[float, float]):
    """Per-element bounds of the L-inf ball intersected with the value range (torch tensors).

    ``min(max(x_adv, lower), upper)`` then equals ``project(x_adv, x, eps, "linf", value_range)``;
    computing the bounds once lets an iterative attack project with two operations per step.
    """
    lo, hi = value_range
    return (x - eps).clamp(min=lo), (x + eps).clamp(max=hi)


def distance(x_adv, x, norm: str):
    """Per-sample distance between ``x_adv`` and ``x`` in ``norm`` (numpy or torch)."""
    flat = (x_adv - x).reshape(len(x), -1)
    if norm == "linf":
        return np.abs(flat).max(1) if isinstance(flat, np.ndarray) else flat.abs().amax(1)
    return (flat * flat).sum(1) ** 0.5
