"""One calling convention for every attack: ``attack.craft(target, x, y, eps=, value_range=)``.

An attack states what it *requires* of the model it attacks, a subset of ``{GRADIENTS, QUERIES}``:

- gradient attacks (FGSM, PGD, APGD, FAB, C&W) need a differentiable PyTorch model;
- query attacks (Square) need only a function from inputs to logits, so they attack a compiled
  engine directly;
- an ensemble (AutoAttack, :mod:`dlforge.adversarial.attacks.autoattack`) needs both.

The caller hands every attack the same :class:`Target` (a predict function, the differentiable model
where there is one) and reads the same :class:`AttackResult`; what it decides from ``requires`` is only
*where* an attack runs (gradients: on the source and on each engine's own graph; queries only: on each
engine). The audit's probes, experiments that are not eps-ball attacks, live in their own registry
(:mod:`dlforge.adversarial.probes`).

An attack returns candidate adversarial inputs. It does not judge them: the caller projects every
result onto the eps-ball and the valid range, then measures it
(:func:`dlforge.adversarial.attacks.robust.robust_accuracy`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np

GRADIENTS = "gradients"
QUERIES = "queries"


@dataclass
class Target:
    """The model under attack, as an attack may use it.

    Args:
        predict: inputs (numpy, float32) -> logits; the queries of a query attack and the judge of an
            ensemble's stages.
        model: a :class:`~dlforge.adversarial.attacks.torch_model.TorchModel` whose gradients the attack may
            follow (None: the target has none, and an attack that requires them cannot run on it).
        batch_size: batch size of gradient attacks.
        on_stage: called with a stage's name as a multi-stage attack enters it (for progress).
    """

    predict: Callable[[np.ndarray], np.ndarray]
    model: object | None = None
    batch_size: int = 256
    on_stage: Callable[[str], None] | None = None

    @classmethod
    def of(cls, model, batch_size: int = 256, on_stage=None) -> "Target":
        """A differentiable model attacked and judged on itself."""
        return cls(lambda z: model.predict(z, batch_size), model, batch_size, on_stage)


@dataclass
class AttackResult:
    """Candidate adversarial inputs; ``queries``: forward passes used per sample (query attacks);
    ``stages``: an ensemble's robust accuracy after each of its attacks."""

    x_adv: np.ndarray
    queries: np.ndarray | None = None
    stages: list[dict] | None = None


class Attack(ABC):
    name: str = ""
    norm: str = "linf"
    requires: ClassVar[frozenset[str]] = frozenset()
    # the inputs it can perturb: an attack that works on any array is for both; one that knows pixels
    # (Square's squares) says "image" only, and the audit refuses it on a model of sound
    modalities: ClassVar[tuple[str, ...]] = ("image", "audio")

    @abstractmethod
    def craft(self, target: Target, x: np.ndarray, y: np.ndarray, *, eps: float,
              value_range: tuple[float, float] = (0.0, 1.0)) -> AttackResult:
        """Adversarial candidates for ``x`` (labels ``y``) within ``eps`` in this attack's norm."""

    def usable_on(self, target: Target) -> bool:
        return GRADIENTS not in self.requires or target.model is not None


class GradientAttack(Attack):
    """An attack that follows a PyTorch model's input gradients. Subclasses implement :meth:`run` on one
    batch of tensors; :meth:`craft` batches a numpy set through the target's model."""

    requires = frozenset({GRADIENTS})

    def craft(self, target, x, y, *, eps, value_range=(0.0, 1.0)) -> AttackResult:
        if target.model is None:
            raise ValueError(f"{self.name} needs a differentiable model; the target has none")
        return AttackResult(target.model.attack(self, x, y, eps=eps, value_range=value_range,
                                                batch_size=target.batch_size))

    @abstractmethod
    def run(self, model, x, y, *, eps: float, value_range: tuple[float, float] = (0.0, 1.0), target=None):
        """Adversarial candidates for a batch (the per-batch primitive :meth:`craft` calls).

        Args:
            model: a torch module in eval mode whose parameters need no gradients.
            x: inputs, a float tensor on the model's device; y: their true labels.
            eps: the perturbation budget in this attack's norm.
            target: target labels for a targeted attack (None: untargeted).
        """


class QueryAttack(Attack):
    """An attack that only queries: subclasses implement :meth:`run` on a predict function."""

    requires = frozenset({QUERIES})

    def craft(self, target, x, y, *, eps, value_range=(0.0, 1.0)) -> AttackResult:
        return self.run(target.predict, x, y, eps=eps, value_range=value_range)

    @abstractmethod
    def run(self, predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray, *, eps: float,
            value_range: tuple[float, float] = (0.0, 1.0)) -> AttackResult:
        """Adversarial candidates using only ``predict`` (inputs -> logits), with query counts."""


def describe_requires(requires: frozenset[str]) -> str:
    """``"gradients"``, ``"queries"``, ``"gradients+queries"`` or ``"-"`` (for listings)."""
    return "+".join(sorted(requires)) or "-"
