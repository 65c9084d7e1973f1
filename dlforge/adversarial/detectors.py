"""Input-filter detectors: one interface, registered in :data:`DETECTORS` by name.

A detector scores inputs (higher: more suspicious) using the engine's ``predict`` or a model of
its own; the audit sets its threshold at a false-positive rate on held-out clean images
(:meth:`Detector.fit`) and reports the share of *successful* adversarial examples it flags.
A spec follows the attacks' grammar, ``name[:key=value...]`` (``feature-squeezing:bits=4:median=3``,
``strip:fpr=0.05``); a detector that needs an argument takes it after ``=``
(``autoencoder=runs/ae/engine-ort-fp32:fpr=0.01``). Options are the detector's keyword-only ``__init__``
parameters, type- and range-checked as an attack's are.
"""

from __future__ import annotations

import re
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
    option_ranges = {"fpr": (0, 1, False, False)}  # checked with the spec, before the audit runs anything

    def __init__(self, argument: str | None = None, *, fpr: float = 0.05):
        if not 0 < fpr < 1:
            raise InputError(f"detector false-positive rate must be within (0, 1), got {fpr}")
        self.argument, self.fpr = argument, fpr
        self.threshold: float | None = None

    @abstractmethod
    def score(self, predict: Predict, x: np.ndarray) -> np.ndarray:
        """One score per input; higher means more likely adversarial."""

    needs_gradients = False  # trained on adversarial examples the audit crafts (a differentiable model)
    tuned_on: str | None = None  # the attack it was trained on, where it was (its other rows are unseen attacks)
    tuned_eps: float | None = None  # ... and at which eps

    @classmethod
    def check(cls, run) -> None:
        """Refuse, before any attack runs, an audit this detector cannot be fitted in (one line, InputError)."""

    def prepare(self, engine, run, held_out: np.ndarray) -> None:
        """Called once per engine before :meth:`fit`: a learned detector fits itself on that engine here (from
        training images; ``held_out``, the threshold's images, only to check what it reads)."""

    def fit(self, predict: Predict, x_clean: np.ndarray) -> float:
        self.threshold = float(np.quantile(self.score(predict, x_clean), 1 - self.fpr))
        return self.threshold

    def detect(self, predict: Predict, x: np.ndarray) -> np.ndarray:
        if self.threshold is None:
            raise ValueError("fit the detector on clean data first")
        return self.score(predict, x) > self.threshold

    def close(self) -> None:
        """Release anything the detector opened."""

    def torch_score(self, forward, x):
        """The score as a differentiable function of ``x`` (a torch tensor), for adaptive attacks
        (:mod:`dlforge.adversarial.adaptive`): ``forward`` is the differentiable classifier (inputs -> logits) that
        stands for the engine. A non-differentiable step is replaced by the identity in the backward pass (BPDA,
        Athalye et al. 2018) and a random one by a fixed sample of it. None: the detector has no such form, and an
        adaptive attack on it says so instead of reporting a figure."""
        return None


DETECTORS: Registry[type[Detector]] = Registry("detector", ["dlforge.adversarial.squeezing",
                                                             "dlforge.adversarial.learned",
                                                             "dlforge.adversarial.poisoning.defences"])


# a trailing ``key=value`` part of a spec with an argument: an identifier, then a value that is not a path
_OPTION = re.compile(r"^\s*[A-Za-z_]\w*\s*=[^/\\]*$")


def detector_spec(spec: str) -> tuple[type[Detector], str | None, dict]:
    """``(class, argument, options)`` of a detector spec, every option checked, nothing opened (for validation).

    After ``name=`` the argument runs up to the trailing ``:key=value`` parts (a value without ``/``), so a path
    may hold ``:`` (``autoencoder=/runs/a:b/engine:fpr=0.01``)."""
    from dlforge.adversarial.attacks import attack_options, check_option
    from dlforge.options import parse_key_values

    name, sep, rest = spec.partition("=") if "=" in spec.split(":")[0] else spec.partition(":")
    name = name.strip()
    cls = DETECTORS.get(name)
    known = attack_options(cls)
    parts = rest.split(":") if rest else []
    if sep == "=":  # the argument (a path may hold ':'), then the trailing parts that read as options
        split = len(parts)
        while split > 1 and _OPTION.match(parts[split - 1]):
            split -= 1
        argument, pairs = ":".join(parts[:split]), [p.strip() for p in parts[split:]]
    else:
        argument, pairs = "", [p.strip() for p in parts]
    if cls.takes_argument and not argument.strip():
        raise InputError(f"detector {name!r} needs an argument: {name}=VALUE (see `dlforge audit --help`)")
    if not cls.takes_argument and sep == "=":
        raise InputError(f"detector {name!r} takes no argument; got {spec!r}")
    settings = parse_key_values(pairs, f"detector spec {spec!r}")
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise InputError(f"detector {name!r} has no option {unknown[0]!r}; its options: "
                         f"{', '.join(f'{k}={v!r}' for k, v in known.items()) or 'none'}")
    return cls, argument.strip() or None, {k: check_option(spec, cls, k, v, "detector") for k, v in settings.items()}


def make_detector(spec: str) -> Detector:
    """Build a detector from its spec (:func:`detector_spec`)."""
    from dlforge.adversarial.attacks import attack_options

    cls, argument, settings = detector_spec(spec)
    detector = cls(argument, **settings)
    detector.settings = {**attack_options(cls), **settings}  # what it ran with, defaults included (the report's)
    return detector
