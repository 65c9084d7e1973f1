"""Auto-PGD (APGD): PGD with momentum and a step size that adapts at checkpoints, on the
cross-entropy or the DLR loss; APGD-T, its targeted version on the top-k classes.

Croce, Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, https://arxiv.org/abs/2003.01690, Algorithm 1 and §3-4.
The settings are AutoAttack's "standard" ones (100 iterations, rho 0.75, checkpoints at
p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), initial step 2 eps,
momentum 0.75, one restart, nine target classes) and follow the authors' reference code
(github.com/fra31/auto-attack, ``autopgd_base.py``) where the paper leaves a detail open:

- condition 1 reduces the step when the loss rose in at most ``rho`` of the steps since the last
  checkpoint (the reference's ``<=``; the paper writes ``<``);
- the first checkpoint counts its first step against the starting point's loss (the paper's rule;
  the reference compares that step with a zero it has not written yet);
- the attack keeps the *last* misclassified iterate it met, not the one with the highest loss.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from dlforge.adversarial.attacks import ATTACKS
from dlforge.adversarial.attacks.base import GradientAttack

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, labels) -> per-sample loss to maximise


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of Logits Ratio: ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` (Croce & Hein, eq. 5).

    Invariant to shifting and rescaling the logits, so a model cannot hide behind large or tiny
    logits the way it can from cross-entropy. Needs at least three classes.
    """
    top, _ = logits.sort(dim=1, descending=True)
    true = logits.gather(1, y[:, None])[:, 0]
    best_other = torch.where(logits.argmax(1) == y, top[:, 1], top[:, 0])
    return -(true - best_other) / (top[:, 0] - top[:, 2] + 1e-12)


def targeted_dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR: ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` (Croce & Hein, eq. 6). Needs four classes."""
    top, _ = logits.sort(dim=1, descending=True)
    true, wanted = logits.gather(1, y[:, None])[:, 0], logits.gather(1, target[:, None])[:, 0]
    return -(true - wanted) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def checkpoints(iterations: int) -> list[int]:
    """The iterations after which APGD may halve its step (Croce & Hein, §3.2)."""
    out, k, at = [], max(int(0.22 * iterations), 1), 0
    while at + k <= iterations:
        at += k
        out.append(at)
        k = max(k - max(int(0.03 * iterations), 1), max(int(0.06 * iterations), 1))
    return out


def _unit(t: torch.Tensor, norm: str) -> torch.Tensor:
    """``t`` scaled per sample to norm 1 (L-inf: largest entry 1; L2: Euclidean length 1)."""
    flat = t.reshape(len(t), -1)
    size = flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)
    return t / (size.reshape(-1, *[1] * (t.ndim - 1)) + 1e-12)


def _project(z: torch.Tensor, x: torch.Tensor, eps: float, norm: str, lo: float, hi: float) -> torch.Tensor:
    """Onto the eps-ball around ``x``, then into the valid range (the order the reference uses)."""
    if norm == "linf":
        return torch.minimum(torch.maximum(z, x - eps), x + eps).clamp(lo, hi)
    delta = z - x
    size = delta.reshape(len(x), -1).norm(dim=1).reshape(-1, *[1] * (x.ndim - 1))
    return (x + _unit(delta, "l2") * size.clamp_max(eps)).clamp(lo, hi)


def _loss_and_grad(model, x: torch.Tensor, y: torch.Tensor, loss: Loss):
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        values = loss(logits, y)
        (grad,) = torch.autograd.grad(values.sum(), x)
    return values.detach(), logits.detach(), grad.detach()


def apgd(model, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str, iterations: int, loss: Loss,
         value_range: tuple[float, float], rho: float = 0.75, generator: torch.Generator | None = None):
    """One APGD run (Croce & Hein, Algorithm 1). Returns ``(x_adv, fooled)``: for each input the last
    misclassified iterate (the start where none was), and whether one was found."""
    lo, hi = value_range
    shape = (-1, *[1] * (x.ndim - 1))
    if norm == "linf":
        start = torch.rand(x.shape, generator=generator, device=x.device) * 2 - 1
    else:
        start = torch.randn(x.shape, generator=generator, device=x.device)
    x_adv = (x + eps * _unit(start, norm)).clamp(lo, hi)
    values, logits, grad = _loss_and_grad(model, x_adv, y, loss)
    fooled = logits.argmax(1) != y
    x_found = x_adv.clone()
    x_best, grad_best, best = x_adv.clone(), grad.clone(), values.clone()
    step = torch.full((len(x), *[1] * (x.ndim - 1)), 2.0 * eps, device=x.device)
    history = [values]  # loss at x^(0), x^(1), ...
    marks, last = set(checkpoints(iterations)), 0
    best_at_mark, reduced_at_mark = best.clone(), torch.ones_like(fooled)
    x_prev = x_adv
    for i in range(1, iterations + 1):
        momentum = 0.75 if i > 1 else 1.0
        direction = grad.sign() if norm == "linf" else _unit(grad, "l2")
        z = _project(x_adv + step * direction, x, eps, norm, lo, hi)
        z = _project(x_adv + momentum * (z - x_adv) + (1 - momentum) * (x_adv - x_prev), x, eps, norm, lo, hi)
        x_prev, x_adv = x_adv, z
        values, logits, grad = _loss_and_grad(model, x_adv, y, loss)
        wrong = logits.argmax(1) != y
        x_found[wrong], fooled = x_adv[wrong], fooled | wrong
        better = values > best
        x_best[better], grad_best[better], best[better] = x_adv[better], grad[better], values[better]
        history.append(values)
        if i in marks:
            window = torch.stack(history[last:i + 1])  # the losses since the previous checkpoint, its own included
            rises = (window[1:] > window[:-1]).sum(0)
            oscillating = rises <= rho * (i - last)  # condition 1
            stalled = ~reduced_at_mark & (best_at_mark >= best)  # condition 2: same step, no better loss
            halve = oscillating | stalled
            step[halve] /= 2
            x_adv, grad = torch.where(halve.reshape(shape), x_best, x_adv), torch.where(halve.reshape(shape), grad_best, grad)
            best_at_mark, reduced_at_mark, last = best.clone(), halve, i
    return torch.where(fooled.reshape(shape), x_found, x), fooled


def _check(norm: str, iterations: int, restarts: int, rho: float) -> None:
    if norm not in ("linf", "l2"):
        raise ValueError(f"unknown norm {norm!r}; expected linf or l2")
    if iterations < 1 or restarts < 1:
        raise ValueError(f"iterations and restarts must be >= 1, got {iterations} and {restarts}")
    if not 0 < rho < 1:
        raise ValueError(f"rho must be in (0, 1), got {rho}")


@ATTACKS.register("apgd-ce")
class APGD(GradientAttack):
    """APGD-CE: Auto-PGD on the cross-entropy loss (or ``loss=dlr``), with adaptive step size and momentum.

    Croce, Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks", ICML 2020, https://arxiv.org/abs/2003.01690. Norms: L-inf, L2.
    The first stage of AutoAttack; see :mod:`dlforge.adversarial.attacks.apgd` for the details.

    Args:
        norm: ``"linf"`` (default) or ``"l2"``.
        loss: ``"ce"`` (default) or ``"dlr"`` (APGD-DLR).
        iterations: gradient steps per restart (default 100, AutoAttack's).
        restarts: random restarts, each on the points still robust (default 1).
        rho: the share of loss increases below which the step halves at a checkpoint (default 0.75).
        seed: seed of the random starts.

    Shapes: x (N, C, H, W) float in the value range; y (N,) int64. Returns x_adv like x.

    Example::

        x_adv = APGD().run(model, x, y, eps=0.3)
    """

    name = "apgd-ce"
    option_ranges = {"rho": (0, 1, False)}

    def __init__(self, *, norm: str = "linf", loss: str = "ce", iterations: int = 100, restarts: int = 1,
                 rho: float = 0.75, seed: int = 0):
        _check(norm, iterations, restarts, rho)
        if loss not in ("ce", "dlr"):
            raise ValueError(f"unknown loss {loss!r}; expected ce or dlr")
        self.norm, self.loss, self.iterations, self.restarts, self.rho, self.seed = \
            norm, loss, iterations, restarts, rho, seed

    def run(self, model, x, y, *, eps, value_range=(0.0, 1.0), target=None):
        if eps == 0:
            return x.clone()
        loss = ce_loss if self.loss == "ce" else dlr_loss
        generator = torch.Generator(device=x.device).manual_seed(self.seed)
        x_adv, robust = x.clone(), torch.ones(len(x), dtype=torch.bool, device=x.device)
        for _ in range(self.restarts):
            idx = robust.nonzero()[:, 0]
            if len(idx) == 0:
                break
            found, fooled = apgd(model, x[idx], y[idx], eps=eps, norm=self.norm, iterations=self.iterations,
                                 loss=loss, value_range=value_range, rho=self.rho, generator=generator)
            x_adv[idx[fooled]], robust[idx[fooled]] = found[fooled], False
        return x_adv


@ATTACKS.register("apgd-dlr")
class APGDDLR(APGD):
    """APGD-DLR: Auto-PGD on the Difference of Logits Ratio loss (Croce & Hein, ICML 2020)."""

    name = "apgd-dlr"

    def __init__(self, *, norm: str = "linf", iterations: int = 100, restarts: int = 1, rho: float = 0.75,
                 seed: int = 0):
        super().__init__(norm=norm, loss="dlr", iterations=iterations, restarts=restarts, rho=rho, seed=seed)


@ATTACKS.register("apgd-t")
class APGDT(GradientAttack):
    """APGD-T: targeted Auto-PGD on the targeted DLR loss, towards each of the top ``targets`` other classes.

    Croce, Hein, ICML 2020, https://arxiv.org/abs/2003.01690, §4. The targets of each input are the
    classes ranked 2nd, 3rd, ... by its clean logits; each target gets a run on the inputs still
    classified correctly (AutoAttack's standard version: nine targets, one restart each). The
    attack succeeds on an input when it is misclassified as *any* class. Norms: L-inf, L2.

    Args:
        norm: ``"linf"`` (default) or ``"l2"``.
        targets: target classes per input (default 9; capped at the number of classes minus one).
        iterations, restarts, rho, seed: as for :class:`APGD`.

    Example::

        x_adv = APGDT(targets=9).run(model, x, y, eps=0.3)
    """

    name = "apgd-t"
    option_ranges = {"rho": (0, 1, False)}

    def __init__(self, *, norm: str = "linf", targets: int = 9, iterations: int = 100, restarts: int = 1,
                 rho: float = 0.75, seed: int = 0):
        _check(norm, iterations, restarts, rho)
        if targets < 1:
            raise ValueError(f"targets must be >= 1, got {targets}")
        self.norm, self.targets, self.iterations, self.restarts, self.rho, self.seed = \
            norm, targets, iterations, restarts, rho, seed

    def run(self, model, x, y, *, eps, value_range=(0.0, 1.0), target=None):
        if eps == 0:
            return x.clone()
        generator = torch.Generator(device=x.device).manual_seed(self.seed)
        x_adv, robust = x.clone(), torch.ones(len(x), dtype=torch.bool, device=x.device)
        with torch.no_grad():
            ranked = model(x).argsort(dim=1, descending=True)
        if ranked.shape[1] < 4:
            raise ValueError(f"apgd-t needs at least 4 classes (the targeted DLR loss), the model has {ranked.shape[1]}")
        for rank in range(1, min(self.targets, ranked.shape[1] - 1) + 1):
            for _ in range(self.restarts):
                idx = robust.nonzero()[:, 0]
                if len(idx) == 0:
                    return x_adv
                goal = ranked[idx, rank]
                loss = lambda logits, labels, goal=goal: targeted_dlr_loss(logits, labels, goal)  # noqa: E731
                found, fooled = apgd(model, x[idx], y[idx], eps=eps, norm=self.norm, iterations=self.iterations,
                                     loss=loss, value_range=value_range, rho=self.rho, generator=generator)
                x_adv[idx[fooled]], robust[idx[fooled]] = found[fooled], False
        return x_adv
