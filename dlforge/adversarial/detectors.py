"""Input-filter detectors: one interface, registered in :data:`DETECTORS` by name.

A detector scores inputs (higher: more suspicious) using the engine's ``predict`` or a model of
its own; the audit sets its threshold at a false-positive rate on held-out clean images
(:meth:`Detector.fit`) and reports the share of *successful* adversarial examples it flags.
A spec is ``name`` or ``name=ARGUMENT`` (e.g. ``autoencoder=runs/ae/engine-ort-fp32``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

import numpy as np

from dlforge.errors import InputError
from dlforge.registry import Registry

Predict = Callable[[np.ndarray], np.ndarray]


class Detector(ABC):
    """Scores inputs; ``fit`` sets the threshold at ``fpr`` on clean data, ``detect`` applies it."""

    name = ""
    takes_argument = False  # whether the spec needs ``=ARGUMENT``

    def __init__(self, argument: str | None = None, *, fpr: float = 0.05):
        if not 0 < fpr < 1:
            raise InputError(f"detector false-positive rate must be within (0, 1), got {fpr}")
        self.argument, self.fpr = argument, fpr
        self.threshold: float | None = None

    @abstractmethod
    def score(self, predict: Predict, x: np.ndarray) -> np.ndarray:
        """One score per input; higher means more likely adversarial."""

    def fit(self, predict: Predict, x_clean: np.ndarray) -> float:
        self.threshold = float(np.quantile(self.score(predict, x_clean), 1 - self.fpr))
        return self.threshold

    def detect(self, predict: Predict, x: np.ndarray) -> np.ndarray:
        if self.threshold is None:
            raise ValueError("fit the detector on clean data first")
        return self.score(predict, x) > self.threshold

    def close(self) -> None:
        """Release anything the detector opened."""


DETECTORS: Registry[type[Detector]] = Registry("detector", ["dlforge.adversarial.squeezing",
                                                             "dlforge.adversarial.poisoning.defences"])


def make_detector(spec: str) -> Detector:
    """Build a detector from ``name`` or ``name=ARGUMENT``."""
    name, sep, argument = spec.partition("=")
    cls = DETECTORS.get(name.strip())
    if cls.takes_argument and not argument:
        raise InputError(f"detector {name!r} needs an argument: {name}=VALUE (see `dlforge audit --help`)")
    if not cls.takes_argument and sep:
        raise InputError(f"detector {name!r} takes no argument; got {spec!r}")
    return cls(argument or None)
