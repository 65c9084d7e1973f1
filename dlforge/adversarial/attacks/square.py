"""Square Attack: a query-only L-inf attack that needs nothing but forward passes."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from dlforge.adversarial.attacks import ATTACKS
from dlforge.adversarial.attacks.base import QueryAttack, AttackResult

# Andriushchenko et al.'s schedule: the square's area halves at these fractions (out of 10,000)
# of the query budget.
_SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(p_init: float, iteration: int, budget: int, rescale: bool = True) -> float:
    """Fraction of the image the square covers at ``iteration`` (counted from 0) of ``budget`` queries.

    ``rescale``: stretch the schedule (written for 10,000 queries) over the budget, as the Square
    paper does for other budgets; AutoAttack runs Square without it (``resc_schedule=False``).
    """
    it = int(iteration / budget * 10000) if rescale else iteration
    halvings = sum(it > t for t in _SCHEDULE)
    return p_init / 2**halvings


def margin(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """True-class logit minus the best other logit: negative once the input is misclassified."""
    true = logits[np.arange(len(y)), y]
    other = logits.copy()
    other[np.arange(len(y)), y] = -np.inf
    return true - other.max(1)


@ATTACKS.register("square")
class Square(QueryAttack):
    """Square Attack (L-inf): random search over square patches at the corners of the eps-ball.

    Andriushchenko, Croce, Flammarion, Hein, "Square Attack: a query-efficient black-box adversarial
    attack via random search", ECCV 2020, https://arxiv.org/abs/1912.00049. Norm: L-inf.

    Starts from vertical stripes of +-eps, then repeatedly proposes a square window with a new +-eps
    value per channel and keeps it when the margin loss falls. The window shrinks on a fixed
    schedule. Each image draws its own window, as in the paper's Algorithm 1 (AutoAttack's port
    draws one window per iteration for the whole batch), and the budget counts the initial query
    (AutoAttack's ``n_queries`` counts the iterations after it). Only forward passes are used, so it
    attacks compiled engines and third-party models directly, and it is immune to gradient masking.

    Args:
        queries: forward passes allowed per image, the first (initialisation) included (default 1000).
        p_init: initial fraction of the image a square covers (default 0.8, the authors' MNIST choice).
        rescale: stretch the square-size schedule over ``queries`` (default True); AutoAttack's
            standard version uses the schedule as written for 10,000 queries (False).
        seed: seed for the random proposals.

    Shapes: x (N, C, H, W) float32 in the value range; y (N,) int. Returns x_adv and queries per image.

    Example::

        result = Square(queries=1000).run(session.predict, x, y, eps=0.3)
    """

    name = "square"
    modalities = ("image",)  # squares of pixels
    budget_options = ("queries",)  # the audit's --square-queries
    option_ranges = {"p_init": (0, 1, False)}
    norm = "linf"

    def __init__(self, *, queries: int = 1000, p_init: float = 0.8, rescale: bool = True, seed: int = 0):
        if queries < 1:
            raise ValueError(f"queries must be >= 1, got {queries}")
        if not 0 < p_init <= 1:
            raise ValueError(f"p_init must be in (0, 1], got {p_init}")
        self.queries, self.p_init, self.rescale, self.seed = queries, p_init, rescale, seed

    def run(self, predict: Callable[[np.ndarray], np.ndarray], x, y, *, eps, value_range=(0.0, 1.0)):
        rng = np.random.default_rng(self.seed)
        lo, hi = value_range
        n, c, h, w = x.shape
        used = np.ones(n, dtype=np.int64)
        if eps == 0:
            return AttackResult(x.copy(), used)
        x_adv = np.clip(x + eps * rng.choice([-1.0, 1.0], size=(n, c, 1, w)), lo, hi).astype(x.dtype)
        loss = margin(predict(x_adv), y)
        rows, cols = np.arange(h), np.arange(w)
        for i in range(1, self.queries):
            active = np.flatnonzero(loss > 0)
            if len(active) == 0:
                break
            side = min(max(int(round(math.sqrt(square_fraction(self.p_init, i - 1, self.queries, self.rescale) * h * w))), 1), h - 1, w - 1)
            top = rng.integers(0, h - side + 1, len(active))
            left = rng.integers(0, w - side + 1, len(active))
            inside = (((rows >= top[:, None]) & (rows < top[:, None] + side))[:, None, :, None]
                      & ((cols >= left[:, None]) & (cols < left[:, None] + side))[:, None, None, :])
            values = eps * rng.choice([-1.0, 1.0], size=(len(active), c, 1, 1))
            delta = np.where(inside, values, x_adv[active] - x[active])
            proposal = np.clip(x[active] + delta, lo, hi).astype(x.dtype)
            new_loss = margin(predict(proposal), y[active])
            used[active] += 1
            better = new_loss < loss[active]
            x_adv[active[better]] = proposal[better]
            loss[active[better]] = new_loss[better]
        return AttackResult(x_adv, used)
