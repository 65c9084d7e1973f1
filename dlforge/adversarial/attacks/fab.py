"""Fast Adaptive Boundary attack (FAB): minimal perturbations by projecting onto linearized boundaries."""

from __future__ import annotations

import math

import torch

from dlforge.adversarial.attacks import ATTACKS
from dlforge.adversarial.attacks.base import GradientAttack
from dlforge.adversarial.attacks.projection import NORMS, distance


@ATTACKS.register("fab")
class FAB(GradientAttack):
    """FAB (untargeted): steps onto the linearized nearest decision boundary, biased towards the input.

    Croce, Hein, "Minimally distorted Adversarial Examples with a Fast Adaptive Boundary Attack",
    ICML 2020, https://arxiv.org/abs/1907.02044. Norms: L-inf (default) and L2.

    Each step linearizes the classifier at the current iterate, takes the boundary of the class
    closest under that linearization, and projects both the iterate and the input onto it within
    the valid range (exactly: a sort and a cumulative sum per point). The next iterate is a convex
    combination of the two projections, extrapolated by ``eta`` and pulled towards the input by
    ``alpha <= alpha_max``; once it is adversarial it is kept if it is the closest so far and
    moved back towards the input by ``beta``. FAB minimizes the distance, so the eps of ``run``
    only decides which points count: as in AutoAttack, a point keeps its example when that is
    within eps of the input and gets the input back otherwise (``eps=float("inf")``: every example
    found, at its minimal distance). The untargeted version needs one backward pass per class and
    step; ``fab-t`` needs one.

    Args:
        norm: ``"linf"`` (default) or ``"l2"``.
        steps: iterations per run (default 100, AutoAttack's).
        restarts: runs per point (per target for ``fab-t``); all but the first start from a random
            point at half of eps from the input (default 1).
        alpha_max: the largest weight of the step from the input (default 0.1).
        eta: overshoot beyond the linearized boundary (default 1.05).
        beta: factor of the step back towards the input after a success (default 0.9).
        seed: seed of the random restarts.

    Shapes: x (N, C, H, W) float in the value range; y (N,) int64. Returns x_adv like x.

    Example::

        x_adv = FAB(steps=100).run(model, x, y, eps=0.3)
    """

    name = "fab"
    option_ranges = {"beta": (0, 1, False)}
    targeted = False  # fab-t: towards each of the top-k classes in turn
    target_classes = 0

    def __init__(self, *, norm: str = "linf", steps: int = 100, restarts: int = 1, alpha_max: float = 0.1,
                 eta: float = 1.05, beta: float = 0.9, seed: int = 0):
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if restarts < 1:
            raise ValueError(f"restarts must be >= 1, got {restarts}")
        if not 0 <= alpha_max <= 1:
            raise ValueError(f"alpha_max must be in [0, 1], got {alpha_max}")
        if eta < 1:
            raise ValueError(f"eta must be >= 1 (an overshoot), got {eta}")
        if not 0 < beta <= 1:
            raise ValueError(f"beta must be in (0, 1], got {beta}")
        self.norm, self.steps, self.restarts, self.seed = norm, steps, restarts, seed
        self.alpha_max, self.eta, self.beta = alpha_max, eta, beta

    def run(self, model, x, y, *, eps, value_range=(0.0, 1.0), target=None):
        if eps == 0:
            return x.clone()
        x_adv = x.clone()
        with torch.no_grad():
            logits = model(x)
        robust = logits.argmax(1) == y
        if target is not None:
            runs = [target]
        elif self.targeted:
            ranked = logits.argsort(1, descending=True)
            runs = [ranked[:, rank] for rank in range(1, min(self.target_classes, logits.shape[1] - 1) + 1)]
        else:
            runs = [None]
        generator = torch.Generator(device=x.device).manual_seed(self.seed)
        for labels in runs:
            for restart in range(self.restarts):
                todo = robust.nonzero().flatten()
                if len(todo) == 0:
                    return x_adv
                found, dist = self._minimize(model, x[todo], y[todo], None if labels is None else labels[todo],
                                             target is not None, value_range, eps if restart else None, generator)
                hit = torch.isfinite(dist) & (dist <= eps)
                x_adv[todo[hit]] = found[hit]
                robust[todo[hit]] = False
        return x_adv

    def _minimize(self, model, x0, y, towards, exact_target, value_range, start_radius, generator):
        """One run of Algorithm 1: the closest adversarial example found per point and its distance
        (inf where none was found). ``towards``: the class whose boundary with ``y`` is crossed
        (None: the closest boundary). ``exact_target``: success means predicting ``towards``, not
        only leaving ``y``. ``start_radius``: None starts at the input, else at a random point."""
        lo, hi = value_range
        n = len(x0)
        x1 = x0.clone()
        if start_radius is not None:
            x1 = (x0 + _random_direction(x0, self.norm, generator) * 0.5 * _finite_radius(
                start_radius, self.norm, x0, value_range)).clamp(lo, hi)
        best, best_dist = x0.clone(), torch.full((n,), math.inf, device=x0.device)
        flat0 = x0.reshape(n, -1)
        for _ in range(self.steps):
            w, b = self._hyperplane(model, x1, y, towards)
            both = boundary_projection(torch.cat([x1.reshape(n, -1), flat0]), torch.cat([w, w]), torch.cat([b, b]),
                                       value_range, self.norm)
            d1, d2 = both[:n].reshape(x0.shape), both[n:].reshape(x0.shape)
            n1, n2 = (distance(d, torch.zeros_like(d), self.norm).clamp_min(1e-8) for d in (d1, d2))
            alpha = (n1 / (n1 + n2)).clamp(0.0, self.alpha_max).reshape(-1, *[1] * (x0.ndim - 1))
            x1 = ((1 - alpha) * (x1 + self.eta * d1) + alpha * (x0 + self.eta * d2)).clamp(lo, hi)
            with torch.no_grad():
                pred = model(x1).argmax(1)
            adv = pred == towards if exact_target else pred != y
            dist = distance(x1, x0, self.norm)
            closer = adv & (dist < best_dist)
            best[closer], best_dist[closer] = x1[closer], dist[closer]
            x1[adv] = x0[adv] + self.beta * (x1[adv] - x0[adv])
        return best, best_dist

    def _hyperplane(self, model, x1, y, towards):
        """``(w, b)``: the boundary ``<w, z> = b`` between ``y`` and ``towards`` (None: the class
        nearest in this attack's norm) of the classifier linearized at ``x1``."""
        n = len(x1)
        rows = torch.arange(n, device=x1.device)
        xg = x1.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(xg)
            if towards is not None:
                diff = logits[rows, towards] - logits[rows, y]
                (grad,) = torch.autograd.grad(diff.sum(), xg)
                f, g = diff.detach(), grad.reshape(n, -1)
            else:
                k = logits.shape[1]
                jac = torch.stack([torch.autograd.grad(logits[:, j].sum(), xg, retain_graph=j < k - 1)[0].reshape(n, -1)
                                   for j in range(k)], 1)
                diffs = logits.detach() - logits.detach()[rows, y, None]
                grads = jac - jac[rows, y, None]
                dual = grads.abs().sum(2) if self.norm == "linf" else grads.norm(dim=2)
                reach = diffs.abs() / (dual + 1e-12)
                reach[rows, y] = math.inf
                nearest = reach.argmin(1)
                f, g = diffs[rows, nearest], grads[rows, nearest]
        return g, (g * x1.reshape(n, -1)).sum(1) - f


@ATTACKS.register("fab-t")
class FABTargeted(FAB):
    """FAB-T: FAB towards each of the top-k classes in turn, AutoAttack's targeted FAB (L-inf by default).

    Croce, Hein, "Minimally distorted Adversarial Examples with a Fast Adaptive Boundary Attack",
    ICML 2020, https://arxiv.org/abs/1907.02044; the targeted version as AutoAttack runs it
    (Croce, Hein, ICML 2020, https://arxiv.org/abs/2003.01690). Norms: L-inf (default) and L2.

    For the classes ranked 2nd to (k+1)th by the clean logits, one after the other, FAB runs on the
    points not yet adversarial within eps, using only the boundary between the true class and that
    target (one backward pass per step instead of one per class). Success means leaving the true
    class, as in AutoAttack; with ``target`` labels given to ``run`` it means reaching them.

    Args:
        target_classes: the k of the top-k targets (default 9).
        norm, steps, restarts, alpha_max, eta, beta, seed: as for ``fab``.

    Shapes: x (N, C, H, W) float in the value range; y (N,) int64. Returns x_adv like x.

    Example::

        x_adv = FABTargeted(target_classes=9).run(model, x, y, eps=0.3)
    """

    name = "fab-t"
    targeted = True

    def __init__(self, *, norm: str = "linf", steps: int = 100, target_classes: int = 9, restarts: int = 1,
                 alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9, seed: int = 0):
        super().__init__(norm=norm, steps=steps, restarts=restarts, alpha_max=alpha_max, eta=eta, beta=beta, seed=seed)
        if target_classes < 1:
            raise ValueError(f"target_classes must be >= 1, got {target_classes}")
        self.target_classes = target_classes


def boundary_projection(t, w, b, value_range: tuple[float, float], norm: str):
    """Smallest step ``d`` (per row, in ``norm``) with ``<w, t + d> = b`` and ``t + d`` in the range.

    Where the range does not reach the hyperplane, the step that gets as close as the range allows.
    Both norms reduce to one search: moving coordinate i by ``s`` (linf) or ``s * |w_i|`` (l2) in
    the direction that closes the gap, capped by the room the range leaves, closes
    ``sum_i a_i * min(s, cap_i)`` of it; the smallest ``s`` that closes all of it lies between two
    sorted caps, where that sum is linear.

    Shapes: t, w (N, D); b (N,). Returns d (N, D).
    """
    lo, hi = value_range
    gap = (w * t).sum(1) - b
    w = torch.where(gap[:, None] < 0, -w, w)  # now <w, t + d> must fall by |gap|
    room = torch.where(w > 0, t - lo, hi - t).clamp_min(0.0)
    size = w.abs()
    if norm == "linf":
        weight, cap = size, room
    else:
        weight, cap = size * size, torch.where(size > 0, room / size.clamp_min(1e-30), torch.zeros_like(room))
    cap_sorted, order = cap.sort(1)
    weight_sorted = weight.gather(1, order)
    closed_before = torch.cumsum(weight_sorted * cap_sorted, 1) - weight_sorted * cap_sorted
    weight_after = weight_sorted.flip(1).cumsum(1).flip(1)
    closed_at_cap = closed_before + cap_sorted * weight_after
    need = gap.abs()[:, None]
    enough = closed_at_cap >= need
    k = enough.to(torch.uint8).argmax(1, keepdim=True)
    s = ((need - closed_before.gather(1, k)) / weight_after.gather(1, k).clamp_min(1e-30)).clamp_min(0.0)
    s = torch.where(enough.any(1, keepdim=True), s, torch.full_like(s, math.inf))
    step = torch.minimum(cap, s) if norm == "linf" else size * torch.minimum(cap, s)
    return -torch.sign(w) * step


def _random_direction(x, norm: str, generator):
    """Random per-sample directions of unit norm (uniform in the cube for linf, Gaussian for l2)."""
    if norm == "linf":
        t = torch.empty_like(x).uniform_(-1.0, 1.0, generator=generator)
    else:
        t = torch.empty_like(x).normal_(generator=generator)
    return t / distance(t, torch.zeros_like(t), norm).clamp_min(1e-12).reshape(-1, *[1] * (x.ndim - 1))


def _finite_radius(eps: float, norm: str, x, value_range) -> float:
    """eps, or where it is infinite, the diameter of the valid range in ``norm``."""
    width = value_range[1] - value_range[0]
    return min(eps, width if norm == "linf" else width * x[0].numel() ** 0.5)
