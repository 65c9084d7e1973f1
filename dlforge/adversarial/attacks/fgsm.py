"""Fast Gradient Sign Method."""

from __future__ import annotations

import torch

from dlforge.adversarial.attacks import ATTACKS
from dlforge.adversarial.attacks.base import GradientAttack
from dlforge.adversarial.attacks.projection import project


@ATTACKS.register("fgsm")
class FGSM(GradientAttack):
    """FGSM: one step of size eps along the sign of the loss gradient.

    Goodfellow, Shlens, Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015,
    https://arxiv.org/abs/1412.6572. Norm: L-inf.

    Untargeted: ``x + eps * sign(grad_x CE(f(x), y))``; targeted: ``x - eps * sign(grad_x CE(f(x), t))``,
    then clipped to the valid range.

    Args:
        targeted: step towards ``target`` labels instead of away from the true ones (default False).

    Shapes: x (N, C, H, W) float in the value range; y (N,) int64. Returns x_adv like x.

    Example::

        x_adv = FGSM().run(model, x, y, eps=0.25)
    """

    name = "fgsm"
    norm = "linf"

    def __init__(self, *, targeted: bool = False):
        self.targeted = targeted

    def run(self, model, x, y, *, eps, value_range=(0.0, 1.0), target=None):
        labels = target if self.targeted else y
        if self.targeted and target is None:
            raise ValueError("a targeted FGSM needs target labels")
        grad = input_gradient(model, x, labels)
        step = -eps if self.targeted else eps
        return project(x + step * grad.sign(), x, eps, "linf", value_range)


def input_gradient(model, x, labels) -> torch.Tensor:
    """Gradient of the cross-entropy loss with respect to the input only (no parameter gradients)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = torch.nn.functional.cross_entropy(model(x), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad
