"""Adversarial training objectives (torch only): the loss of one batch under FGSM or PGD training.

These are training steps, not audits: :mod:`dlforge.adversarial` measures robustness and imports
the training stage, so the training stage must not import it back. The PGD here is the L-inf,
random-start variant of Madry et al. with their step rule (2.5 * eps / steps).
"""

from __future__ import annotations

from typing import Callable

import torch

Objective = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def fgsm_objective(eps: float, value_range: tuple[float, float] = (0.0, 1.0)) -> Objective:
    """Goodfellow et al.'s mixed objective: 0.5 * J(x) + 0.5 * J(x + eps * sign(grad_x J)).

    Goodfellow, Shlens, Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015,
    https://arxiv.org/abs/1412.6572. The example is made from the same forward pass as J(x).
    """
    lo, hi = value_range

    def loss(model, x, y):
        x = x.detach().requires_grad_(True)
        clean = torch.nn.functional.cross_entropy(model(x), y)
        (grad,) = torch.autograd.grad(clean, x, retain_graph=True)
        x_adv = (x + eps * grad.sign()).clamp(lo, hi).detach()
        return 0.5 * clean + 0.5 * torch.nn.functional.cross_entropy(model(x_adv), y)

    return loss


def pgd_objective(eps: float, steps: int, value_range: tuple[float, float] = (0.0, 1.0)) -> Objective:
    """Madry et al.'s objective: the loss on L-inf PGD examples only (random start, ``steps`` steps).

    Madry, Makelov, Schmidt, Tsipras, Vladu, "Towards Deep Learning Models Resistant to Adversarial
    Attacks", ICLR 2018, https://arxiv.org/abs/1706.06083. The examples are crafted in eval mode
    (no dropout noise in the attacker's gradient); the seed of each random start is drawn from
    torch's global generator, so a seeded training run is reproducible.
    """

    def loss(model, x, y):
        model.eval()
        x_adv = linf_pgd(model, x, y, eps=eps, steps=steps, value_range=value_range,
                         seed=int(torch.randint(0, 2**31 - 1, ())))
        model.train()
        return torch.nn.functional.cross_entropy(model(x_adv), y)

    return loss


def linf_pgd(model, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int,
             value_range: tuple[float, float] = (0.0, 1.0), seed: int = 0) -> torch.Tensor:
    """L-inf PGD examples for ``x`` (detached), each step projected onto the eps-box and the range."""
    lo, hi = value_range
    lower, upper = (x - eps).clamp_min(lo), (x + eps).clamp_max(hi)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    noise = torch.empty_like(x).uniform_(-1.0, 1.0, generator=generator)
    x_adv = torch.minimum(torch.maximum(x + eps * noise, lower), upper)
    step = 2.5 * eps / steps
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = torch.nn.functional.cross_entropy(model(x_adv), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = torch.minimum(torch.maximum(x_adv + step * grad.sign(), lower), upper)
    return x_adv.detach()


def adversarial_objective(method: str, eps: float, steps: int,
                          value_range: tuple[float, float] = (0.0, 1.0)) -> Objective:
    """The objective of ``method`` (``"fgsm"`` or ``"pgd"``)."""
    if method == "fgsm":
        return fgsm_objective(eps, value_range)
    if method == "pgd":
        return pgd_objective(eps, steps, value_range)
    raise ValueError(f"unknown adversarial training method {method!r}")
