"""The kinds of attack: gradient attacks (need a differentiable PyTorch model), query attacks (need
only a function from inputs to logits, so they run against a compiled engine directly), ensembles
(a cascade of both, :mod:`dlforge.adversarial.attacks.autoattack`) and probes (whole experiments
with their own measure: fooling images, substitute-model attacks, :mod:`dlforge.adversarial.probes`).

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


class Probe(Attack):
    """An experiment on the audited models that is not an eps-ball attack on the test points: it has
    its own measure (confidence on unrecognizable inputs, misclassification after transfer, ...) and
    runs once per audit, not once per eps.

    ``probe(run, show)`` gets the audit's state (:class:`dlforge.adversarial.audit.AuditRun`: the
    engines, the source model and engine graphs where there are gradients, the test points, the
    dataset) and ``show(stage)`` for the progress bar; it returns its report section::

        {"rows": [{"route", "target", ...}], "gallery": [{"title", "image", ...}], "notes": [str]}

    ``columns`` are the rows' columns in the terminal table (:class:`dlforge.reporting.Column`).
    """

    kind = "probe"
    norm = "-"  # no eps-ball: each probe states its own budget
    gradients = False  # True: needs the source's or an engine graph's gradients
    columns: tuple = ()

    def prepare(self, run) -> None:
        """Check and load what the probe needs before any attack runs (bad input fails the audit early)."""

    @abstractmethod
    def probe(self, run, show: Callable[[str], None]) -> dict:
        """Run the experiment on ``run``'s models; its report section."""


class QueryAttack(Attack):
    kind = "query"

    @abstractmethod
    def run(self, predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray, *, eps: float,
            value_range: tuple[float, float] = (0.0, 1.0)) -> QueryResult:
        """Adversarial candidates using only ``predict`` (inputs -> logits), with query counts."""
