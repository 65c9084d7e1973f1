"""Out-of-distribution confidence: how sure each engine is on inputs that belong to none of its classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlforge.adversarial.attacks.base import QUERIES
from dlforge.adversarial.probes.base import PROBES, Probe
from dlforge.adversarial.probes import probabilities
from dlforge.errors import InputError
from dlforge.reporting import Column

# The dataset a model of one is probed with by default: same image shape, no class in common.
OTHER_DATASET = {"mnist": "fashion-mnist", "fashion-mnist": "mnist"}


@PROBES.register("ood")
class OutOfDistribution(Probe):
    """Confidence on inputs of no known class: uniform noise and another dataset, beside the test images.

    The critique of Nguyen et al. (CVPR 2015, https://arxiv.org/abs/1412.1897) without any search:
    a classifier's softmax still names a class, often confidently, on inputs unlike its training
    data. Per target (the source where there is one, each engine), per input set: the mean of the
    maximum class probability and the share of inputs above ``threshold``. The in-distribution test
    images are the baseline (Hendrycks, Gimpel, "A Baseline for Detecting Misclassified and
    Out-of-Distribution Examples", ICLR 2017, use the same maximum softmax probability).

    Args:
        data: the other dataset (default: Fashion-MNIST for an MNIST model and the reverse; "none"
            for noise only). A name, an ``.npz`` file or an image folder, of the model's input shape.
        data_dir: its directory (default: beside the audited dataset's, else dlforge's data directory).
        samples: inputs per set (default 1000).
        threshold: the confidence counted as "confident" (default 0.9).
        seed: seed of the noise.
    """

    name = "ood"
    requires = frozenset({QUERIES})
    option_ranges = {"threshold": (0, 1, False)}
    columns = (Column("target", fmt=lambda t: t[:32]), Column("inputs"), Column("samples", "n", "d", ">"),
               Column("mean_confidence", "mean max-prob", ".4f", ">"),
               Column("confident", "share > threshold", ".4f", ">"), Column("top_class", "most predicted"))

    def __init__(self, *, data: str | None = None, data_dir: str | None = None, samples: int = 1000,
                 threshold: float = 0.9, seed: int = 0):
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.data, self.data_dir, self.samples, self.threshold, self.seed = data, data_dir, samples, threshold, seed
        self._loaded = None

    def prepare(self, run) -> None:
        """Load the other dataset before any attack runs: a bad ``data`` fails the audit at once."""
        self._loaded = self._other(run)

    def probe(self, run, show) -> dict:
        lo, hi = run.value_range
        rng = np.random.default_rng(self.seed)
        sets = [("test images", run.x[:self.samples]),
                ("uniform noise", rng.uniform(lo, hi, (self.samples, *run.x.shape[1:])).astype(np.float32))]
        notes = []
        other, reason = self._loaded or self._other(run)
        if other is not None:
            sets.append(other)
        else:
            notes.append(f"no other dataset: {reason}")
        targets = ([("source", run.model.predict)] if run.model is not None else []) + \
                  [(e.label, lambda z, e=e: e.predict(z, run.options.batch_size)) for e in run.engines]
        labels = run.dataset.labels
        rows = []
        for target, predict in targets:
            show(f"on {target}")
            for name, x in sets:
                p = probabilities(predict(x))
                top = np.bincount(p.argmax(1), minlength=p.shape[1])
                rows.append({"target": target, "inputs": name, "samples": int(len(x)),
                             "mean_confidence": float(p.max(1).mean()),
                             "confident": float((p.max(1) > self.threshold).mean()), "threshold": self.threshold,
                             "top_class": f"{labels[top.argmax()] if top.argmax() < len(labels) else top.argmax()} "
                                          f"({top.max() / len(x):.0%})"})
        return {"rows": rows, "gallery": [], "notes": notes}

    def _other(self, run):
        """``((name, x), None)``, or ``(None, why there is none)``."""
        from dlforge.data import load_dataset

        name = self.data or OTHER_DATASET.get(run.dataset.name)
        if name is None or name == "none":
            return None, (f"pass ood:data=NAME for a model of {run.dataset.name}" if name is None
                          else "ood:data=none")
        data_dir = self.data_dir
        if data_dir is None and self.data is None and Path(run.dataset.source).is_dir():
            beside = Path(run.dataset.source).parent / name
            data_dir = str(beside) if beside.is_dir() else None
        try:
            ds = load_dataset(name, data_dir, input_shape=run.x.shape[1:])
        except InputError as exc:
            if self.data:  # asked for by name: a mistake to report, not to skip
                raise InputError(f"ood:data={name}: {exc}") from exc
            return None, f"{name} could not be loaded ({exc}); pass ood:data_dir=DIR or ood:data=none"
        if ds.x_test.shape[1:] != run.x.shape[1:]:
            raise InputError(f"ood:data={name} images are {ds.x_test.shape[1:]}, the model takes {run.x.shape[1:]}; "
                             "pass a dataset of the model's input shape")
        return (name, ds.x_test[:self.samples].astype(np.float32)), None
