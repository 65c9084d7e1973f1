"""Availability poisoning: mislabelled samples injected into a training set to lower clean accuracy
(as opposed to a backdoor, which keeps accuracy and plants a trigger), and loss-based filtering.

The threat model is Steinhardt, Koh and Liang's ("Certified Defenses for Data Poisoning Attacks",
NeurIPS 2017) and Koh, Steinhardt and Liang's ("Stronger Data Poisoning Attacks Break Data
Sanitization Defenses", 2018): the attacker *adds* ``eps * n`` samples to the ``n`` clean training
samples (the clean ones are untouched), so the rate ``eps`` is poisoned samples per clean sample and
the poisoned share of the training set is ``eps / (1 + eps)``. Every injected sample here is a copy
of a real training image with a wrong label, so no pixel statistic can tell it apart.

- ``random-label``: images drawn at random, each with a label drawn uniformly from the other classes:
  symmetric label noise, the baseline every availability attack must beat.
- ``boundary-flip``: a feature-space attack with full knowledge of the data and the architecture (the
  threat model above). The attacker trains a surrogate on the clean data and reads, for every
  training image, the margin of its last linear layer on the surrogate's learned features,
  ``(w_y - w_c) . phi(x) + (b_y - b_c)`` for the nearest other class ``c``. It injects the images
  nearest to another class in that feature space, each labelled as that class: the copies contradict
  the originals exactly where the decision boundary is decided, instead of spreading over classes and
  regions a network absorbs. This is dlforge's own heuristic, not a published attack; it is measured
  against ``random-label`` at every rate (``dlforge poison --attack boundary-flip`` draws both curves).

The defence is loss-based filtering (the "loss" sanitizer of Koh et al. 2018, Sec. 2): train on the
poisoned data, remove the training samples whose loss under that model is above the 99th percentile of
the clean validation set's (what a defender with trusted clean data knows; ``--filter-share`` removes a
fixed share instead, and the true poisoned share is reported as an oracle), retrain.
Here the loss is computed from each deployed engine's outputs, so the filter's decisions on the fp32
and the INT8 engine can be compared.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from dlforge.data import Dataset
from dlforge.errors import InputError

AVAILABILITY_ATTACKS = ("random-label", "boundary-flip")
DEFAULT_RATES = "0.05/0.1/0.2/0.4"


def parse_rates(rates: str) -> tuple[float, ...]:
    """``"0.05/0.1/0.2/0.4"`` -> ``(0.05, 0.1, 0.2, 0.4)``: distinct injection rates, each in (0, 1]."""
    try:
        out = tuple(float(r) for r in str(rates).split("/"))
    except ValueError:
        raise InputError(f"--rates must be injection rates separated by '/', e.g. {DEFAULT_RATES}; got {rates!r}")
    if not all(0 < r <= 1 for r in out):
        raise InputError(f"--rates: each rate (poisoned samples per clean training sample) must be in (0, 1]; "
                         f"got {rates!r}")
    if len(set(out)) != len(out):
        raise InputError(f"--rates lists a rate twice: {rates!r}")
    return tuple(sorted(out))


@dataclass(frozen=True)
class Injection:
    """What was added to the training set."""

    attack: str
    rate: float
    source: np.ndarray  # indices of the copied clean training images
    labels: np.ndarray  # the labels the copies carry (never the image's own)
    clean_samples: int

    @property
    def poisoned(self) -> np.ndarray:
        """Indices of the injected samples in the poisoned training set (appended after the clean ones)."""
        return np.arange(self.clean_samples, self.clean_samples + len(self.source))

    def describe(self) -> dict:
        return {"attack": self.attack, "rate": self.rate, "injected_samples": int(len(self.source)),
                "poisoned_share": len(self.source) / (self.clean_samples + len(self.source))}


def surrogate_margins(logits: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each sample's nearest other class by the last layer's scores, and its margin to it (true class's
    score minus that class's; negative where the surrogate misclassifies the sample)."""
    logits = np.asarray(logits, dtype=np.float64)
    rows = np.arange(len(y))
    others = logits.copy()
    others[rows, y] = -np.inf
    nearest = others.argmax(1)
    return nearest, logits[rows, y] - logits[rows, nearest]


def inject(dataset: Dataset, attack: str, rate: float, *, seed: int = 0,
           surrogate_logits: np.ndarray | None = None) -> tuple[Dataset, Injection]:
    """Add ``round(rate * n)`` mislabelled copies of training images to ``dataset``'s training split.

    ``boundary-flip`` needs ``surrogate_logits``: the clean surrogate's outputs on the training images.
    """
    if attack not in AVAILABILITY_ATTACKS:
        raise InputError(f"unknown availability attack {attack!r}; expected one of {', '.join(AVAILABILITY_ATTACKS)}")
    if not 0 < rate <= 1:
        raise InputError(f"the injection rate must be in (0, 1], got {rate}")
    y, k = dataset.y_train, dataset.num_classes
    n = len(y)
    count = int(round(rate * n))
    if count < 1:
        raise InputError(f"rate {rate} injects no sample into {n} training samples; raise it to at least {1 / n:.2g}")
    rng = np.random.default_rng(seed)
    if attack == "random-label":
        source = np.sort(rng.choice(n, size=count, replace=False))
        labels = (y[source] + rng.integers(1, k, size=count)) % k
    else:
        if surrogate_logits is None or len(surrogate_logits) != n:
            raise ValueError("boundary-flip needs the surrogate's outputs on every training image")
        nearest, margin = surrogate_margins(surrogate_logits, y)
        source = np.argsort(margin, kind="stable")[:count]
        labels = nearest[source]
    poisoned = dataclasses.replace(dataset, x_train=np.concatenate([dataset.x_train, dataset.x_train[source]]),
                                   y_train=np.concatenate([y, labels.astype(y.dtype)]),
                                   name=f"{dataset.name}+{attack}")
    return poisoned, Injection(attack, rate, source, labels, n)


def sample_losses(outputs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-sample cross-entropy from a model's outputs (logits, or probabilities where the graph ends in a softmax)."""
    from dlforge.adversarial.probes import log_probabilities

    return -log_probabilities(outputs)[np.arange(len(y)), y]


VALIDATION_QUANTILE = 0.99


def loss_threshold(validation_losses: np.ndarray, quantile: float = VALIDATION_QUANTILE) -> float:
    """The loss filter's bar when the defender does not know how much was injected: the ``quantile`` of
    the losses of clean held-out (validation) samples under the same model. What a defender with a
    trusted clean set knows; the poisoned share is not needed."""
    if len(validation_losses) == 0:
        raise InputError("the loss filter's threshold needs clean validation samples; set --filter-share instead")
    return float(np.quantile(validation_losses, quantile))


def loss_filter(losses: np.ndarray, share: float) -> np.ndarray:
    """Flag the ``share`` of samples with the highest loss (ties broken by index); a boolean mask."""
    if not 0 <= share < 1:
        raise InputError(f"--filter-share must be in [0, 1), got {share}")
    count = int(round(share * len(losses)))
    flagged = np.zeros(len(losses), dtype=bool)
    flagged[np.argsort(-losses, kind="stable")[:count]] = True
    return flagged
