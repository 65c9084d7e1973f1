"""Feature squeezing (Xu, Evans, Qi, NDSS 2018): an input-filter detector for adversarial examples.

The model's prediction on an input is compared with its predictions on squeezed copies (reduced
bit depth; a median filter). Legitimate inputs barely change; adversarial perturbations, tuned to
the exact pixel values, often do not survive squeezing. The score is the largest L1 distance
between softmax outputs; the threshold is set at a chosen false-positive rate on clean data.
Needs only forward passes, so it runs on the engine.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def reduce_bit_depth(x: np.ndarray, bits: int) -> np.ndarray:
    levels = 2**bits - 1
    return (np.round(x * levels) / levels).astype(np.float32)


def median_filter(x: np.ndarray, size: int) -> np.ndarray:
    from scipy.ndimage import median_filter as scipy_median

    return scipy_median(x, size=(1, 1, size, size), mode="reflect").astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


class FeatureSqueezing:
    """Detector: ``score(predict, x)`` per input, ``fit`` a threshold on clean data, ``detect``.

    Args:
        bits: bit depth of the first squeezer (1 for MNIST-like images, as Xu et al.).
        median: window of the median-filter squeezer (2 for MNIST, as Xu et al.).
        fpr: false-positive rate on clean data that sets the threshold (default 0.05).
    """

    name = "feature-squeezing"

    def __init__(self, *, bits: int = 1, median: int = 2, fpr: float = 0.05):
        self.bits, self.median, self.fpr = bits, median, fpr
        self.threshold: float | None = None

    def score(self, predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
        base = softmax(predict(x))
        squeezed = [reduce_bit_depth(x, self.bits), median_filter(x, self.median)]
        return np.max([np.abs(base - softmax(predict(s))).sum(1) for s in squeezed], axis=0)

    def fit(self, predict, x_clean: np.ndarray) -> float:
        self.threshold = float(np.quantile(self.score(predict, x_clean), 1 - self.fpr))
        return self.threshold

    def detect(self, predict, x: np.ndarray) -> np.ndarray:
        if self.threshold is None:
            raise ValueError("fit the detector on clean data first")
        return self.score(predict, x) > self.threshold


class ReconstructionFilter:
    """Detector from a reconstruction model (dlforge's ``autoencoder``): inputs it reconstructs badly
    are off the data manifold. Score: per-image mean squared reconstruction error; threshold at a
    chosen false-positive rate on clean data. The classifier's own ``predict`` is not used."""

    name = "autoencoder"

    def __init__(self, engine_path, *, fpr: float = 0.05):
        from dlforge.runtime import open_session

        self.session = open_session(engine_path)
        if self.session.model is not None and self.session.model.task != "reconstruction":
            raise ValueError(f"{engine_path} is a {self.session.model.task} model, not an autoencoder")
        self.fpr, self.threshold = fpr, None

    def score(self, predict, x: np.ndarray) -> np.ndarray:
        out = np.concatenate([self.session.predict(x[i:i + 256]) for i in range(0, len(x), 256)])
        return ((out - x) ** 2).reshape(len(x), -1).mean(1)

    fit = FeatureSqueezing.fit
    detect = FeatureSqueezing.detect


def make_detector(spec: str):
    """``feature-squeezing`` or ``autoencoder=ENGINE_DIR``."""
    from dlforge.errors import InputError

    name, _, arg = spec.partition("=")
    if name == "feature-squeezing" and not arg:
        return FeatureSqueezing()
    if name == "autoencoder" and arg:
        try:
            return ReconstructionFilter(arg)
        except ValueError as exc:
            raise InputError(str(exc)) from exc
    raise InputError(f"unknown detector {spec!r}; expected feature-squeezing or autoencoder=ENGINE_DIR")
