"""AutoAttack: the standard ensemble, run as a cascade, with the pointwise worst case reported.

Croce, Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, https://arxiv.org/abs/2003.01690, §5 ("standard" version:
APGD-CE, APGD-T, FAB-T, Square; the reference is ``autoattack.py`` in github.com/fra31/auto-attack).

Each attack runs only on the points every earlier attack failed on, and a point counts as robust
only if all of them fail: the reported robust accuracy is the pointwise worst case over the four.
The cascade takes two views of the model: a differentiable one for the gradient attacks, and a
judge (inputs -> logits) that decides which points are still robust and that Square queries.
Auditing an engine, the judge is the engine itself and the gradients come from its own graph, so
Square attacks the deployed engine by queries, as a black-box attacker would.
"""

from __future__ import annotations

import numpy as np

from dlforge.adversarial.attacks import ATTACKS, make_attack
from dlforge.adversarial.attacks.base import GRADIENTS, QUERIES, Attack, AttackResult, Target
from dlforge.adversarial.attacks.projection import NORMS, project


@ATTACKS.register("autoattack")
class AutoAttack(Attack):
    """AutoAttack (standard): APGD-CE, APGD-T, FAB-T and Square in a cascade; pointwise worst case.

    Croce, Hein, ICML 2020, https://arxiv.org/abs/2003.01690. Settings are the standard version's:
    100 iterations and one restart for APGD-CE, nine target classes for APGD-T and FAB-T, 5,000
    queries with ``p_init`` 0.8 for Square. Norms: L-inf (all four), L2 (without Square: dlforge's
    Square is the L-inf attack, so ``norm=l2`` is weaker than AutoAttack's L2 version and says so).

    Args:
        norm: ``"linf"`` (default) or ``"l2"``.
        iterations: iterations of each APGD and FAB run (default 100).
        targets: target classes of APGD-T and FAB-T (default 9).
        square_queries: Square's query budget per point (default 5000).
        seed: seed of every attack in the cascade.

    Example::

        result = AutoAttack().craft(Target(engine.predict, torch_model), x, y, eps=0.3)
    """

    name = "autoattack"
    requires = frozenset({GRADIENTS, QUERIES})

    def __init__(self, *, norm: str = "linf", iterations: int = 100, targets: int = 9, square_queries: int = 5000,
                 seed: int = 0):
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}")
        self.norm, self.seed = norm, seed
        specs = [f"apgd-ce:norm={norm}:iterations={iterations}", f"apgd-t:norm={norm}:iterations={iterations}"
                 f":targets={targets}", f"fab-t:norm={norm}:steps={iterations}:target_classes={targets}"]
        if norm == "linf":
            specs.append(f"square:queries={square_queries}:p_init=0.8:rescale=false")
        self.components = [make_attack(s, seed=seed) for s in specs]

    def craft(self, target: Target, x: np.ndarray, y: np.ndarray, *, eps: float,
              value_range: tuple[float, float] = (0.0, 1.0)) -> AttackResult:
        """The cascade on ``x``. ``target.model`` crafts the gradient attacks (None: they are skipped, and the
        stages say so); ``target.predict`` is the judge, and what Square queries. ``stages``: per attack, the
        robust accuracy after it, the points it fooled and, where it did not run, why; ``queries``: forward
        passes Square used per point (0 where it did not run)."""
        robust = target.predict(x).argmax(1) == y
        x_adv, queries = x.copy(), np.zeros(len(x), dtype=np.int64)
        stages = []
        for attack in self.components:
            idx = np.flatnonzero(robust)
            if eps == 0 or len(idx) == 0:
                stages.append({"attack": attack.name, "robust_accuracy": float(robust.mean()), "fooled": 0})
                continue
            if not attack.usable_on(target):
                stages.append({"attack": attack.name, "robust_accuracy": float(robust.mean()), "fooled": 0,
                               "skipped": "no differentiable model"})
                continue
            if target.on_stage is not None:
                target.on_stage(attack.name)
            result = attack.craft(target, x[idx], y[idx], eps=eps, value_range=value_range)
            if result.queries is not None:
                queries[idx] = result.queries
            candidates = project(result.x_adv, x[idx], eps, self.norm, value_range)
            fooled = target.predict(candidates).argmax(1) != y[idx]
            x_adv[idx[fooled]], robust[idx[fooled]] = candidates[fooled], False
            stages.append({"attack": attack.name, "robust_accuracy": float(robust.mean()), "fooled": int(fooled.sum())})
        return AttackResult(x_adv, queries, stages)
