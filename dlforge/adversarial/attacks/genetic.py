"""GenAttack: a query-only genetic search, with an oracle that the input must still convince."""

from __future__ import annotations

from typing import Callable

import numpy as np

from dlforge.adversarial.attacks import ATTACKS
from dlforge.adversarial.attacks.base import AttackResult, QueryAttack
from dlforge.adversarial.attacks.square import margin
from dlforge.errors import InputError

CONSTRAINTS = ("linf", "add")

# Fitness of a population: (candidates (n, P, ...), rows (n,)) -> (fitness (n, P), goal reached (n, P))
Fitness = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def margin_fitness(predict, y: np.ndarray) -> Fitness:
    """The untargeted goal on the engine alone: fitness is the best other logit minus the true one (>= 0 when
    misclassified; Alzantot et al.'s fitness is the targeted log-probability form)."""
    def fitness(cands: np.ndarray, rows: np.ndarray):
        n, p = cands.shape[:2]
        logits = predict(cands.reshape(n * p, *cands.shape[2:]))
        gap = -population_margin(logits, y[rows], p)
        return np.minimum(gap, 0.0), gap > 0
    return fitness


def population_margin(logits: np.ndarray, y: np.ndarray, population: int) -> np.ndarray:
    """Square's margin (true logit minus the best other) of a population's flat ``(n * population, classes)``
    logits, as ``(n, population)``; ``y``: the ``n`` labels."""
    return margin(logits, np.repeat(y, population)).reshape(-1, population)


def genetic_search(fitness: Fitness, x: np.ndarray, *, eps: float, value_range, queries: int, population: int = 6,
                   temperature: float = 0.1, constraint: str = "linf", oracle=None, y=None,
                   rho: tuple[float, float] = (0.5, 0.1), alpha: tuple[float, float] = (0.4, 0.15), decay: float = 0.9,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Alzantot et al.'s GenAttack on every input at once: ``(x_adv, queries used, goal reached, oracle rejections)``;
    ``x_adv`` is the first candidate that reached the goal, else the fittest one found (the clean input when none
    was finite).

    A candidate that reaches the goal is accepted only if ``oracle`` (inputs -> logits; None: no oracle) still
    classifies it as ``y``: a rejected one gets the worst fitness and the search goes on (Xu et al.'s EvadeML
    keeps its sandbox in the loop the same way). ``constraint``: ``linf`` (the eps-ball) or ``add`` (only
    increases, up to eps: strokes added, nothing erased)."""
    rng = np.random.default_rng(seed)
    lo, hi = value_range
    n = len(x)
    low = np.zeros_like(x) if constraint == "add" else np.maximum(x - eps, lo) - x
    high = np.minimum(x + eps, hi) - x
    rows = np.arange(n)

    def clip(delta, idx=rows):
        return np.clip(delta, low[idx][:, None], high[idx][:, None])

    pop = clip(rng.uniform(-eps, eps, size=(n, population, *x.shape[1:])).astype(np.float32))
    best = x.copy()
    done = np.zeros(n, dtype=bool)
    used = np.zeros(n, dtype=np.int64)
    rejected = np.zeros(n, dtype=np.int64)
    best_fit = np.full(n, -np.inf)
    plateaus = np.zeros(n)
    while True:
        active = np.flatnonzero(~done & (used + population <= queries))
        if len(active) == 0:
            break
        cands = (x[active][:, None] + pop[active]).astype(np.float32)
        fit, goal = fitness(cands, active)
        fit = np.where(np.isnan(fit), -np.inf, fit)  # a refused query (NaN logits) teaches nothing
        used[active] += population
        if oracle is not None and goal.any():
            i, j = np.nonzero(goal)
            agrees = oracle(cands[i, j]).argmax(1) == y[active[i]]
            np.add.at(rejected, active[i[~agrees]], 1)  # one per rejected candidate
            goal[i[~agrees], j[~agrees]] = False
            fit[i[~agrees], j[~agrees]] = -np.inf
        hit = goal.any(1)
        if hit.any():
            k = np.flatnonzero(hit)
            best[active[k]] = cands[k, goal[k].argmax(1)]
            done[active[k]] = True
        elite = fit.argmax(1)
        top = fit[np.arange(len(active)), elite]
        improved = top > best_fit[active]
        # where no candidate reached the goal yet, the fittest so far is the answer (judged as it is)
        fitter = ~hit & improved & np.isfinite(top)
        best[active[fitter]] = cands[np.flatnonzero(fitter), elite[fitter]]
        plateaus[active] = np.where(improved, plateaus[active], plateaus[active] + 1)
        best_fit[active] = np.maximum(best_fit[active], top)
        # Alzantot et al. Sec. 3.3: mutation probability and range shrink as the search plateaus
        rate = np.maximum(rho[1], rho[0] * decay ** plateaus[active])
        scale = np.maximum(alpha[1], alpha[0] * decay ** plateaus[active])
        finite = np.where(np.isfinite(fit), fit, -1e9)
        probs = np.exp((finite - finite.max(1, keepdims=True)) / temperature)
        probs /= probs.sum(1, keepdims=True)
        children = np.empty_like(pop[active])
        members = pop[active]
        a_idx = np.arange(len(active))
        children[:, 0] = members[a_idx, elite]  # elitism
        for c in range(1, population):
            p1 = _sample(rng, probs)
            p2 = _sample(rng, probs)
            w1, w2 = probs[a_idx, p1], probs[a_idx, p2]
            share = (w1 / (w1 + w2 + 1e-30)).reshape(-1, *[1] * (x.ndim - 1))
            take = rng.random(members[:, 0].shape) < share
            child = np.where(take, members[a_idx, p1], members[a_idx, p2])
            flat = child.reshape(len(active), -1)
            mutate = rng.random(flat.shape) < rate.reshape(-1, 1)
            noise = rng.uniform(-1, 1, flat.shape) * scale.reshape(-1, 1) * eps
            children[:, c] = (flat + mutate * noise).reshape(child.shape)
        pop[active] = clip(children, active).astype(np.float32)
    return best, used, done, rejected


def _sample(rng, probs: np.ndarray) -> np.ndarray:
    """One index per row of ``probs`` (rows sum to 1)."""
    cum = probs.cumsum(1)
    return np.minimum((rng.random((len(probs), 1)) > cum).sum(1), probs.shape[1] - 1)


@ATTACKS.register("genetic")
class GenAttack(QueryAttack):
    """GenAttack (Alzantot, Sharma, Chakraborty, Zhang, Hsieh, Srivastava, "GenAttack: Practical Black-box Attacks
    with Gradient-Free Optimization", GECCO 2019, https://arxiv.org/abs/1805.11090), untargeted.

    A population of perturbations per image; each generation keeps the fittest (elitism), draws parents with
    probability softmax(fitness / temperature), crosses them coordinate by coordinate (each parent in proportion
    to its probability), and mutates each coordinate with probability rho by up to alpha * eps; rho and alpha
    shrink as the search plateaus with ``adaptive=true`` (rho = max(0.1, 0.5 * 0.9^plateaus), alpha = max(0.15,
    0.4 * 0.9^plateaus), their Sec. 3.3, written for ImageNet's dimensions). The default is a fixed rho of 0.05 and
    alpha of 1 (mutations up to eps): on the MNIST LeNet INT8 engine at eps 0.3 and 1,000 queries it succeeded on
    77 of 100 test images against 28 with the adaptive schedule. Fitness here is the logit margin (best other minus
    true), capped at 0 once misclassified: the paper's is the targeted log-probability ratio. Only top-level outputs are read, so it attacks INT8 and TensorRT engines
    as they are.

    The *functionality constraint*: with ``oracle=DIR`` (an engine or onnx artifact of an independent model, or the
    fp32 source's engine) a candidate counts only if that model still classifies it correctly, so an input that
    merely destroys the digit is not an evasion; rejected candidates are counted and the search goes on.
    ``constraint=add`` allows only increases (strokes added, nothing erased).

    Args:
        queries: engine queries per image (default 1000, the audit's --square-queries); the population is queried
            whole each generation.
        population: members per image (Alzantot et al.: 6).
        temperature: softmax temperature of parent selection.
        mutation: probability that a coordinate mutates (default 0.05).
        alpha: mutation range as a share of eps (default 1).
        adaptive: shrink mutation and range as the search plateaus (their Sec. 3.3 schedule) instead.
        constraint: ``linf`` (the eps-ball) or ``add``.
        oracle: the independent model's engine or onnx artifact (default: none).
        seed: seed of the search.
    """

    name = "genetic"
    budget_options = ("queries",)
    norm = "linf"
    option_ranges = {"population": (2, None, True), "temperature": (0, None, False), "mutation": (0, 1, False)}

    def __init__(self, *, queries: int = 1000, population: int = 6, temperature: float = 0.1, mutation: float = 0.05,
                 alpha: float = 1.0, adaptive: bool = False, constraint: str = "linf", oracle: str | None = None,
                 seed: int = 0):
        if constraint not in CONSTRAINTS:
            raise InputError(f"genetic:constraint= takes {' or '.join(CONSTRAINTS)}, got {constraint!r}")
        if queries < population:
            raise InputError(f"genetic: queries ({queries}) must cover one population ({population})")
        if oracle is not None:
            from pathlib import Path

            if not Path(oracle).exists():
                raise InputError(f"genetic:oracle={oracle} does not exist; give an engine or onnx artifact directory, "
                                 "or an .onnx file, of the independent model")
        self.queries, self.population, self.temperature = queries, population, temperature
        self.constraint, self.oracle, self.seed = constraint, oracle, seed
        self.mutation, self.alpha, self.adaptive = mutation, alpha, adaptive
        self._oracle = None
        self.last_rejections = None

    def oracle_predict(self):
        """The oracle's predict (opened once), or None."""
        if self.oracle is None:
            return None
        if self._oracle is None:
            from dlforge.runtime import open_deployed

            self._oracle = open_deployed(self.oracle)
        return self._oracle.predict

    def run(self, predict, x, y, *, eps, value_range=(0.0, 1.0)):
        return self.search(margin_fitness(predict, y), x, y, eps=eps, value_range=value_range)

    def search(self, fitness: Fitness, x, y, *, eps, value_range=(0.0, 1.0)) -> AttackResult:
        """The search on any fitness (the adaptive audit's adds a detector's score); oracle rejections per image in
        ``last_rejections``."""
        oracle = self.oracle_predict()
        self.last_rejections = None
        if eps == 0:
            return AttackResult(x.copy(), np.zeros(len(x), dtype=np.int64))
        x_adv, used, _, rejected = genetic_search(fitness, x, eps=eps, value_range=value_range, queries=self.queries,
                                                  population=self.population, temperature=self.temperature,
                                                  constraint=self.constraint, oracle=oracle, y=y, seed=self.seed,
                                                  **({} if self.adaptive else {"rho": (self.mutation,) * 2,
                                                                               "alpha": (self.alpha,) * 2}))
        self.last_rejections = rejected if oracle is not None else None
        return AttackResult(x_adv, used)
