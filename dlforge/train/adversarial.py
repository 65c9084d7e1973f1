"""Adversarial training objectives (torch only): the loss of one batch under FGSM or PGD training.

These are training steps, not audits. PGD training crafts its examples with the attack the audit
runs (:class:`dlforge.adversarial.attacks.pgd.PGD`, L-inf, random start, Madry et al.'s step rule
2.5 * eps / steps): the attacks sit in a layer below the stages, so training imports them directly.

An objective may ramp its eps up linearly over its first ``warmup_steps`` calls (each call is one
training step), from 0 to the full budget: training at a large eps from random weights can stall at
chance for a long time (the ramp of Gowal et al., "On the Effectiveness of Interval Bound
Propagation for Training Verifiably Robust Models", 2018, https://arxiv.org/abs/1810.12715).
"""

from __future__ import annotations

import itertools
from typing import Callable, Iterator

import torch

from dlforge.adversarial.attacks.pgd import PGD

Objective = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def ramped_eps(eps: float, step: int, warmup_steps: int) -> float:
    """The eps of training step ``step`` (from 0): ``eps * step / warmup_steps``, then ``eps`` from
    step ``warmup_steps`` on; ``eps`` throughout without a warm-up."""
    return eps * min(1.0, step / warmup_steps) if warmup_steps > 0 else eps


def _eps_per_step(eps: float, warmup_steps: int) -> Iterator[float]:
    return (ramped_eps(eps, step, warmup_steps) for step in itertools.count())


def fgsm_objective(eps: float, value_range: tuple[float, float] = (0.0, 1.0), *,
                   warmup_steps: int = 0) -> Objective:
    """Goodfellow et al.'s mixed objective: 0.5 * J(x) + 0.5 * J(x + eps * sign(grad_x J)).

    Goodfellow, Shlens, Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015,
    https://arxiv.org/abs/1412.6572. The example is made from the same forward pass as J(x).
    """
    lo, hi = value_range
    eps_now = _eps_per_step(eps, warmup_steps)

    def loss(model, x, y):
        step_eps = next(eps_now)
        x = x.detach().requires_grad_(True)
        clean = torch.nn.functional.cross_entropy(model(x), y)
        (grad,) = torch.autograd.grad(clean, x, retain_graph=True)
        x_adv = (x + step_eps * grad.sign()).clamp(lo, hi).detach()
        return 0.5 * clean + 0.5 * torch.nn.functional.cross_entropy(model(x_adv), y)

    return loss


def pgd_objective(eps: float, steps: int, value_range: tuple[float, float] = (0.0, 1.0), *,
                  warmup_steps: int = 0) -> Objective:
    """Madry et al.'s objective: the loss on L-inf PGD examples only (random start, ``steps`` steps).

    Madry, Makelov, Schmidt, Tsipras, Vladu, "Towards Deep Learning Models Resistant to Adversarial
    Attacks", ICLR 2018, https://arxiv.org/abs/1706.06083. The examples are crafted in eval mode
    (no dropout noise in the attacker's gradient); the seed of each random start is drawn from
    torch's global generator, so a seeded training run is reproducible. At eps 0 (the first step of
    a warm-up) the loss is the clean loss, and no attack runs.
    """
    eps_now = _eps_per_step(eps, warmup_steps)

    def loss(model, x, y):
        step_eps = next(eps_now)
        seed = int(torch.randint(0, 2**31 - 1, ()))
        if step_eps > 0:
            model.eval()
            x = linf_pgd(model, x, y, eps=step_eps, steps=steps, value_range=value_range, seed=seed)
            model.train()
        return torch.nn.functional.cross_entropy(model(x), y)

    return loss


def linf_pgd(model, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int,
             value_range: tuple[float, float] = (0.0, 1.0), seed: int = 0) -> torch.Tensor:
    """L-inf PGD examples for ``x`` (detached): the audit's own PGD (random start, Madry et al.'s step rule)."""
    return PGD(norm="linf", steps=steps, seed=seed).run(model, x, y, eps=eps, value_range=value_range).detach()


def adversarial_objective(method: str, eps: float, steps: int, value_range: tuple[float, float] = (0.0, 1.0), *,
                          warmup_steps: int = 0) -> Objective:
    """The objective of ``method`` (``"fgsm"`` or ``"pgd"``), its eps ramped over ``warmup_steps`` steps."""
    if method == "fgsm":
        return fgsm_objective(eps, value_range, warmup_steps=warmup_steps)
    if method == "pgd":
        return pgd_objective(eps, steps, value_range, warmup_steps=warmup_steps)
    raise ValueError(f"unknown adversarial training method {method!r}")


def objective_from_options(options, steps_per_epoch: int) -> Objective | None:
    """The objective :class:`~dlforge.train.options.TrainOptions` ask for (``--adv-train``, ``--adv-eps``,
    ``--adv-steps``, ``--adv-warmup`` in epochs of ``steps_per_epoch`` steps); None for plain training."""
    if not options.adv_train:
        return None
    return adversarial_objective(options.adv_train, options.adv_eps, options.adv_steps,
                                 warmup_steps=options.adv_warmup * steps_per_epoch)
