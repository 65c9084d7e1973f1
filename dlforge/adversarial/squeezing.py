"""Feature squeezing (Xu, Evans, Qi, NDSS 2018): an input-filter detector for adversarial examples.

The model's prediction on an input is compared with its predictions on squeezed copies (reduced
bit depth; a median filter). Legitimate inputs barely change; adversarial perturbations, tuned to
the exact pixel values, often do not survive squeezing. The score is the largest L1 distance
between softmax outputs; the threshold is set at a chosen false-positive rate on clean data.
Needs only forward passes, so it runs on the engine.
"""

from __future__ import annotations

import numpy as np

from dlforge.adversarial.detectors import DETECTORS, Detector
from dlforge.errors import InputError


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


@DETECTORS.register("feature-squeezing")
class FeatureSqueezing(Detector):
    """Feature squeezing (Xu et al. 2018): the L1 change of the softmax under bit-depth reduction and
    a median filter.

    Args:
        bits: bit depth of the first squeezer (1 for MNIST-like images, as Xu et al.).
        median: window of the median-filter squeezer (2 for MNIST, as Xu et al.).
        fpr: false-positive rate on clean data that sets the threshold (default 0.05).
    """

    name = "feature-squeezing"

    def __init__(self, argument: str | None = None, *, bits: int = 1, median: int = 2, fpr: float = 0.05):
        super().__init__(argument, fpr=fpr)
        self.bits, self.median = bits, median

    def score(self, predict, x: np.ndarray) -> np.ndarray:
        base = softmax(predict(x))
        squeezed = [reduce_bit_depth(x, self.bits), median_filter(x, self.median)]
        return np.max([np.abs(base - softmax(predict(s))).sum(1) for s in squeezed], axis=0)

    def torch_score(self, forward, x):
        """The same score; both squeezers pass gradients straight through (BPDA, Athalye et al. 2018: their
        forward value, the identity's gradient), the adaptive attack on squeezing He et al. 2017 and Sharma & Chen
        2018 describe."""
        import torch

        base = torch.softmax(forward(x), 1)
        out = []
        for squeeze in (lambda z: reduce_bit_depth(z, self.bits), lambda z: median_filter(z, self.median)):
            value = torch.from_numpy(squeeze(x.detach().cpu().numpy())).to(x.device)
            squeezed = x + (value - x).detach()
            out.append((base - torch.softmax(forward(squeezed), 1)).abs().sum(1))
        return torch.stack(out).max(0).values


@DETECTORS.register("autoencoder")
class ReconstructionFilter(Detector):
    """Reconstruction error of an autoencoder engine (``autoencoder=ENGINE_DIR``): inputs it
    reconstructs badly are off the data manifold. The classifier's own ``predict`` is not used."""

    name = "autoencoder"
    takes_argument = True

    def __init__(self, argument: str | None = None, *, fpr: float = 0.05):
        from dlforge.runtime import open_deployed

        super().__init__(argument, fpr=fpr)
        self._graph = None  # its differentiable graph, built on first use by an adaptive attack
        self.model = open_deployed(argument)
        if self.model.task != "reconstruction":
            self.model.close()
            raise InputError(f"{argument} is a {self.model.task} model, not an autoencoder (task reconstruction)")

    def score(self, predict, x: np.ndarray) -> np.ndarray:
        out = self.model.predict(x)
        return ((out - x) ** 2).reshape(len(x), -1).mean(1)

    def torch_score(self, forward, x):
        """The reconstruction error through the autoencoder engine's own graph made differentiable
        (:mod:`dlforge.onnx_torch`, checked against the engine as the audit checks a classifier's)."""
        if self._graph is None:
            from dlforge.adversarial.engine_graph import engine_graph

            lo, hi = self.model.value_range
            graph = engine_graph(self.model, x.detach().cpu().numpy(), noise=0.05 * (hi - lo),
                                 value_range=self.model.value_range, device=str(x.device.type))
            if graph.model is None:
                raise InputError(f"adaptive attack on autoencoder={self.argument}: its graph cannot be "
                                 f"differentiated ({graph.reason})")
            self._graph = graph.model.model
        out = self._graph(x)
        return ((out - x) ** 2).reshape(len(x), -1).mean(1)

    def close(self) -> None:
        self.model.close()
