"""Poisoning attacks on a training set: BadNets backdoors and label flipping.

Each returns the poisoned dataset and the indices of the poisoned training samples (the ground
truth that defences are scored against), plus a function that arms test inputs for measuring the
attack success rate.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from dlforge.data import Dataset
from dlforge.errors import InputError

ATTACKS = ("badnets", "label-flip")
MODES = ("single", "all-to-all")


@dataclass(frozen=True)
class Poisoning:
    """What was done to the training set, and how to test for it."""

    attack: str
    mode: str
    rate: float
    target: int
    trigger_size: int
    poisoned: np.ndarray  # indices into the poisoned dataset's training split

    def describe(self) -> dict:
        return {"attack": self.attack, "mode": self.mode, "rate": self.rate, "target_class": self.target,
                "trigger_size": self.trigger_size if self.attack == "badnets" else None,
                "poisoned_samples": int(len(self.poisoned))}


def stamp(x: np.ndarray, size: int, value: float = 1.0) -> np.ndarray:
    """BadNets' trigger: a ``size`` x ``size`` square of ``value`` one pixel from the bottom-right corner."""
    out = x.copy()
    h, w = x.shape[-2:]
    out[..., h - 1 - size:h - 1, w - 1 - size:w - 1] = value
    return out


def validate(dataset: Dataset, attack: str, mode: str, rate: float, target: int, trigger_size: int) -> None:
    if attack not in ATTACKS:
        raise InputError(f"unknown poisoning attack {attack!r}; expected one of {', '.join(ATTACKS)}")
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if not 0 < rate < 1:
        raise InputError(f"--rate must be within (0, 1), got {rate}")
    if not 0 <= target < dataset.num_classes:
        raise InputError(f"--target-class {target} is out of range: {dataset.name} has classes 0..{dataset.num_classes - 1}")
    h, w = dataset.input_shape[1:]
    if attack == "badnets" and not 1 <= trigger_size <= min(h, w) - 2:
        raise InputError(f"--trigger-size {trigger_size} does not fit {h}x{w} images one pixel from the corner "
                         f"(largest: {min(h, w) - 2})")
    if attack == "label-flip" and mode != "single":
        raise InputError("label-flip flips labels to --target-class; --mode all-to-all applies to badnets")


def poison(dataset: Dataset, *, attack: str, mode: str = "single", rate: float = 0.1, target: int = 0,
           trigger_size: int | None = None, seed: int = 0) -> tuple[Dataset, Poisoning]:
    """Poison ``rate`` of the training split (the fraction of all training samples that are poisoned).

    badnets/single: images of other classes get the trigger and label ``target`` (Gu et al. 2017).
    badnets/all-to-all: images of class i get the trigger and label i+1.
    label-flip: images of other classes keep their pixels and get label ``target``.
    """
    trigger_size = max(2, dataset.input_shape[-1] // 9) if trigger_size is None else trigger_size
    validate(dataset, attack, mode, rate, target, trigger_size)
    rng = np.random.default_rng(seed)
    y = dataset.y_train
    candidates = np.flatnonzero(y != target) if mode == "single" else np.arange(len(y))
    count = int(round(rate * len(y)))
    if count > len(candidates):
        raise InputError(f"--rate {rate} asks for {count} poisoned samples, but only {len(candidates)} are eligible")
    chosen = np.sort(rng.choice(candidates, size=count, replace=False))
    x_new, y_new = dataset.x_train.copy(), y.copy()
    hi = 1.0
    if attack == "badnets":
        x_new[chosen] = stamp(x_new[chosen], trigger_size, hi)
    y_new[chosen] = target if mode == "single" else (y[chosen] + 1) % dataset.num_classes
    poisoned = dataclasses.replace(dataset, x_train=x_new, y_train=y_new, name=f"{dataset.name}+{attack}")
    return poisoned, Poisoning(attack, mode, rate, target, trigger_size, chosen)


def armed_test_set(dataset: Dataset, p: Poisoning) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Test inputs the attack should flip, the labels it flips them to, and their true labels.

    BadNets: every test image not already of the target class, with the trigger. Label flip (no
    trigger): the same images, unchanged, so the rate measures how often they land on the target.
    The true labels give BackdoorBench's robust accuracy (R-Acc): the share still classified right.
    """
    x, y = dataset.x_test, dataset.y_test
    if p.mode == "single":
        keep = y != p.target
        x, y, wanted = x[keep], y[keep], np.full(int(keep.sum()), p.target)
    else:
        wanted = (y + 1) % dataset.num_classes
    if p.attack == "badnets":
        x = stamp(x, p.trigger_size)
    return x, wanted, y
