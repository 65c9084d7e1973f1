"""Projected Gradient Descent (and BIM, its variant without random start)."""

from __future__ import annotations

import torch

from dlforge.adversarial.attacks import ATTACKS
from dlforge.adversarial.attacks.base import GradientAttack
from dlforge.adversarial.attacks.fgsm import input_gradient
from dlforge.adversarial.attacks.projection import NORMS, linf_box, project


@ATTACKS.register("pgd")
class PGD(GradientAttack):
    """PGD: iterated gradient steps, each projected back onto the eps-ball and the valid range.

    Madry, Makelov, Schmidt, Tsipras, Vladu, "Towards Deep Learning Models Resistant to Adversarial
    Attacks", ICLR 2018, https://arxiv.org/abs/1706.06083. With ``random_start=False`` it is BIM
    (Kurakin et al. 2017). Norms: L-inf (signed steps) and L2 (normalized gradient steps).

    Args:
        norm: ``"linf"`` (default) or ``"l2"``.
        steps: gradient steps (default 40).
        rel_stepsize: step size as a fraction of eps; default ``2.5 / steps``, so the steps can
            cross the ball whatever their number (Madry et al.'s rule).
        random_start: start from a uniform point in the ball (default True).
        seed: seed of the random start, for reproducible results.

    Shapes: x (N, C, H, W) float in the value range; y (N,) int64. Returns x_adv like x.

    Example::

        x_adv = PGD(steps=40).run(model, x, y, eps=0.3)
    """

    name = "pgd"
    budget_options = ("steps",)  # the audit's --pgd-steps

    def __init__(self, *, norm: str = "linf", steps: int = 40, rel_stepsize: float | None = None,
                 random_start: bool = True, seed: int = 0):
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.norm, self.steps, self.random_start, self.seed = norm, steps, random_start, seed
        self.rel_stepsize = rel_stepsize if rel_stepsize is not None else 2.5 / steps

    def run(self, model, x, y, *, eps, value_range=(0.0, 1.0), target=None):
        if eps == 0:
            return x.clone()
        step = self.rel_stepsize * eps
        x_adv = x.clone()
        if self.random_start:
            generator = torch.Generator(device=x.device).manual_seed(self.seed)
            noise = torch.empty_like(x).uniform_(-1.0, 1.0, generator=generator)
            if self.norm == "l2":
                noise = noise / noise.reshape(len(x), -1).norm(dim=1).clamp_min(1e-12).reshape(-1, *[1] * (x.dim() - 1))
            x_adv = project(x + eps * noise, x, eps, self.norm, value_range)
        step = step if target is None else -step
        labels = target if target is not None else y
        if self.norm == "linf":
            lower, upper = linf_box(x, eps, value_range)
            for _ in range(self.steps):
                x_adv = torch.minimum(torch.maximum(x_adv + step * input_gradient(model, x_adv, labels).sign(), lower),
                                      upper)
            return x_adv
        for _ in range(self.steps):
            grad = input_gradient(model, x_adv, labels)
            direction = grad / grad.reshape(len(x), -1).norm(dim=1).clamp_min(1e-12).reshape(-1, *[1] * (x.ndim - 1))
            x_adv = project(x_adv + step * direction, x, eps, self.norm, value_range)
        return x_adv


@ATTACKS.register("pgd-l2")
class PGDL2(PGD):
    """PGD in the L2 norm: normalized gradient steps, projection onto the L2 ball (Madry et al. 2018)."""

    name = "pgd-l2"
    norm = "l2"

    def __init__(self, *, steps: int = 40, rel_stepsize: float | None = None, random_start: bool = True,
                 seed: int = 0):
        super().__init__(norm="l2", steps=steps, rel_stepsize=rel_stepsize, random_start=random_start, seed=seed)
