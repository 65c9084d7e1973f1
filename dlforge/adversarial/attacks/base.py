"""The two kinds of attack: gradient attacks (need a differentiable PyTorch model) and query attacks
(need only a function from inputs to logits, so they run against a compiled engine directly).

An attack's ``run`` returns candidate adversarial inputs. It does not judge them: the audit
projects every result onto the eps-ball and the valid range, then measures it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class QueryResult:
    x_adv: np.ndarray
    queries: np.ndarray  # forward passes used, per sample


class Attack(ABC):
    name: str = ""
    norm: str = "linf"
    kind: str = ""  # "gradient" or "query"


class GradientAttack(Attack):
    kind = "gradient"

    @abstractmethod
    def run(self, model, x, y, *, eps: float, value_range: tuple[float, float] = (0.0, 1.0), target=None):
        """Adversarial candidates for a batch.

        Args:
            model: a torch module in eval mode whose parameters need no gradients.
            x: inputs, a float tensor on the model's device; y: their true labels.
            eps: the perturbation budget in this attack's norm.
            target: target labels for a targeted attack (None: untargeted).
        """


class QueryAttack(Attack):
    kind = "query"

    @abstractmethod
    def run(self, predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray, *, eps: float,
            value_range: tuple[float, float] = (0.0, 1.0)) -> QueryResult:
        """Adversarial candidates using only ``predict`` (inputs -> logits), with query counts."""
