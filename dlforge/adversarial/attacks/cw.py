"""Carlini-Wagner L2 attack: the smallest L2 perturbation found by Adam, with a binary search over c."""

from __future__ import annotations

import math

import torch

from dlforge.adversarial.attacks import ATTACKS
from dlforge.adversarial.attacks.base import GradientAttack
from dlforge.adversarial.attacks.projection import project

_ADAM_BETAS, _ADAM_EPS = (0.9, 0.999), 1e-8
_TANH_LIMIT = 1 - 1e-6  # keeps atanh finite at the ends of the range, as Carlini's 0.999999 factor does


@ATTACKS.register("cw-l2")
class CarliniWagnerL2(GradientAttack):
    """Carlini-Wagner L2: minimize ``||delta||^2 + c * f(x + delta)`` with Adam, binary-searching c.

    Carlini, Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P 2017,
    https://arxiv.org/abs/1608.04644. Norm: L2 (a minimum-norm attack).

    The input is written as ``x + delta = mid + half_width * tanh(w)``, so every iterate stays in
    the valid range without clipping, and Adam descends on ``w`` from the input itself. ``f`` is
    the margin loss ``max(Z_y - max_{j != y} Z_j + kappa, 0)`` on the logits ``Z`` (targeted:
    ``max(max_{j != t} Z_j - Z_t + kappa, 0)``). Per point, c starts at ``initial_const``, is
    multiplied by 10 until an example is found, then bisected between the largest failing and the
    smallest succeeding c; each search step restarts Adam from the input. The attack keeps each
    point's smallest-norm example that beats the margin by ``kappa`` over all steps, and the input
    where none does. A point stops descending when its loss has not fallen by 0.01% over the last
    tenth of ``steps`` (``abort_early``). The result is projected onto the eps-ball as the
    audit projects it; ``eps=float("inf")`` returns the minimum-norm examples themselves.

    Args:
        binary_search_steps: search steps over c (default 9).
        steps: Adam iterations per search step (default 1000).
        learning_rate: Adam's step size on ``w`` (default 0.01).
        initial_const: the first c (default 0.001).
        confidence: the margin kappa an example must reach (default 0).
        abort_early: stop a point's descent once its loss stalls (default True).

    Shapes: x (N, C, H, W) float in the value range; y (N,) int64. Returns x_adv like x.

    Example::

        x_adv = CarliniWagnerL2(binary_search_steps=5).run(model, x, y, eps=float("inf"))
    """

    name = "cw-l2"
    option_ranges = {"confidence": (0, None, True)}
    norm = "l2"

    def __init__(self, *, binary_search_steps: int = 9, steps: int = 1000, learning_rate: float | None = None,
                 initial_const: float = 1e-3, confidence: float = 0.0, abort_early: bool = True):
        if binary_search_steps < 1:
            raise ValueError(f"binary_search_steps must be >= 1, got {binary_search_steps}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if learning_rate is not None and not learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        if not initial_const > 0:
            raise ValueError(f"initial_const must be > 0, got {initial_const}")
        if confidence < 0:
            raise ValueError(f"confidence must be >= 0, got {confidence}")
        self.binary_search_steps, self.steps = binary_search_steps, steps
        self.learning_rate = learning_rate if learning_rate is not None else 10.0 / steps
        self.initial_const = initial_const
        self.confidence, self.abort_early = confidence, abort_early

    def run(self, model, x, y, *, eps, value_range=(0.0, 1.0), target=None):
        if eps == 0:
            return x.clone()
        lo, hi = value_range
        mid, half = (lo + hi) / 2, (hi - lo) / 2
        w0 = torch.atanh(((x - mid) / half).clamp(-_TANH_LIMIT, _TANH_LIMIT))
        labels = y if target is None else target
        n = len(x)
        const = torch.full((n,), float(self.initial_const), device=x.device)
        lower, upper = torch.zeros_like(const), torch.full_like(const, math.inf)
        best, best_l2 = x.clone(), torch.full_like(const, math.inf)
        enough = eps * eps if math.isfinite(eps) else -math.inf  # a finite eps asks for one example within it
        for search in range(self.binary_search_steps):
            todo = (best_l2 > enough).nonzero().flatten()
            if len(todo) == 0:
                break
            if self.binary_search_steps >= 10 and search == self.binary_search_steps - 1:
                const = torch.where(torch.isfinite(upper), upper, const)  # Carlini's last step repeats the best c
            found = self._descend(model, x, w0, labels, target is not None, const, (mid, half), todo, enough, best,
                                  best_l2)
            upper = torch.where(found, torch.minimum(upper, const), upper)
            lower = torch.where(found, lower, torch.maximum(lower, const))
            const = torch.where(torch.isfinite(upper), (lower + upper) / 2, const * 10)
        return project(best, x, eps, "l2", value_range)

    def _descend(self, model, x, w0, labels, targeted, const, tanh_map, idx, enough, best, best_l2):
        """Adam on ``w`` for the points ``idx``, each with its own c, until each aborts, reaches a
        squared distance of ``enough`` or runs out of iterations. Improves ``best`` and ``best_l2``
        in place and returns which points found an example in this search step."""
        mid, half = tanh_map
        found = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        last_loss = torch.full((len(x),), math.inf, device=x.device)
        check_every = max(self.steps // 10, 1)
        w = w0[idx]
        m, v = torch.zeros_like(w), torch.zeros_like(w)
        for i in range(self.steps):
            xs, ls, cs = x[idx], labels[idx], const[idx]
            w.requires_grad_(True)
            with torch.enable_grad():
                x_new = mid + half * torch.tanh(w)
                logits = model(x_new)
                l2sq = (x_new - xs).reshape(len(xs), -1).pow(2).sum(1)
                margin = _margin(logits, ls, targeted)
                loss = l2sq + cs * (margin + self.confidence).clamp_min(0.0)
                (grad,) = torch.autograd.grad(loss.sum(), w)
            w, loss, l2sq, margin = w.detach(), loss.detach(), l2sq.detach(), margin.detach()
            success = margin < -self.confidence
            found[idx[success]] = True
            closer = success & (l2sq < best_l2[idx])
            best[idx[closer]] = x_new.detach()[closer]
            best_l2[idx[closer]] = l2sq[closer]
            going = best_l2[idx] > enough
            if self.abort_early and i % check_every == 0:
                going &= loss <= last_loss[idx] * 0.9999
                last_loss[idx] = loss
            if not going.all():
                idx, w, m, v, grad = idx[going], w[going], m[going], v[going], grad[going]
                if len(idx) == 0:
                    break
            m = _ADAM_BETAS[0] * m + (1 - _ADAM_BETAS[0]) * grad
            v = _ADAM_BETAS[1] * v + (1 - _ADAM_BETAS[1]) * grad * grad
            m_hat, v_hat = m / (1 - _ADAM_BETAS[0] ** (i + 1)), v / (1 - _ADAM_BETAS[1] ** (i + 1))
            w = w - self.learning_rate * m_hat / (v_hat.sqrt() + _ADAM_EPS)
        return found


def _margin(logits, labels, targeted: bool):
    """``Z_y - max_{j != y} Z_j`` (untargeted: negative once misclassified); targeted, the other way
    round (negative once classified as the target)."""
    rows = torch.arange(len(labels), device=logits.device)
    own = logits[rows, labels]
    gap = own - logits.scatter(1, labels[:, None], -math.inf).amax(1)
    return -gap if targeted else gap
