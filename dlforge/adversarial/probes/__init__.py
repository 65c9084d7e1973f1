"""Probes: the audit's experiments that are not eps-ball attacks on the test points.

Each probe is registered in :data:`PROBES` (:mod:`dlforge.adversarial.probes.base`), its own registry,
and is named in the same ``--attacks`` spec as the attacks (:func:`make`, same grammar), so
``dlforge audit --attacks pgd,fooling,ood,substitute`` runs it beside the attacks and ``--list-attacks``
shows its options. A probe runs once per audit and writes its own report section
(:class:`dlforge.adversarial.probes.base.Probe`):

- ``fooling`` / ``fooling-evo``: unrecognizable inputs classified with high confidence (Nguyen et
  al. 2015), by gradient ascent and by a query-only evolutionary search against each engine;
- ``ood``: the confidence of each engine on inputs from no class it knows (noise, another dataset);
- ``substitute``: Papernot et al.'s black-box attack, a substitute trained on an engine's answers;
- ``patch``: a universal targeted adversarial patch trained with EOT (Brown et al. 2017);
- ``physical``: PGD vs EOT-PGD examples through a print-and-photograph stand-in (Kurakin et al.
  2017, Athalye et al. 2018).

This module holds what they share: turning outputs into probabilities, and the judge of
"unrecognizable" (:class:`Resemblance`), measured against the model's own data and against noise.
"""

from __future__ import annotations

import numpy as np

from dlforge.adversarial.attacks import ATTACKS, from_spec, parse_spec
from dlforge.adversarial.probes.base import PROBES, Probe
from dlforge.adversarial.records import ENGINE_ROUTE, WHITE_BOX
from dlforge.errors import InputError


def make(spec: str, **defaults):
    """The attack or probe a ``--attacks`` spec names (one grammar, two registries; a name is in one only)."""
    name = parse_spec(spec)[0]
    if name in PROBES:
        return from_spec(PROBES, spec, **defaults)
    if name not in ATTACKS:
        raise InputError(f"unknown attack {name!r}; attacks: {', '.join(ATTACKS.names())}; probes: "
                         f"{', '.join(PROBES.names())}")
    return from_spec(ATTACKS, spec, **defaults)


def _is_distribution(out: np.ndarray) -> bool:
    """Whether every row is already a probability distribution (a softmax in the graph)."""
    return bool((out >= 0).all() and np.allclose(out.sum(1), 1.0, atol=1e-4))


def probabilities(out: np.ndarray) -> np.ndarray:
    """Class probabilities (float64) from a model's outputs: the outputs themselves where every row is
    already a distribution, else their softmax."""
    out = np.asarray(out, dtype=np.float64)
    return out if _is_distribution(out) else np.exp(log_probabilities(out))


def log_probabilities(out: np.ndarray) -> np.ndarray:
    """``log`` of :func:`probabilities`, computed stably (a confidence of 1 - 1e-9 stays below 0)."""
    out = np.asarray(out, dtype=np.float64)
    if _is_distribution(out):
        return np.log(np.clip(out, 1e-300, None))
    z = out - out.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


class Resemblance:
    """Whether an input resembles the model's own data more than noise does: the judge of "unrecognizable".

    An input's *resemblance* is its largest absolute Pearson correlation with (up to) ``reference``
    training images: 1 for a training image, high for a real test image, a lightly perturbed one or
    one with inverted contrast, and low for uniform noise, whatever the brightness or contrast. The
    *noise bar* is the ``quantile`` of that score over ``noise`` images of uniform noise in the value
    range: an input at or below it looks no
    more like any training image than noise does, and is called unrecognizable; above it, the input
    carries structure of the data (a digit's strokes drawn faintly into noise score far above the bar
    on MNIST, though they stay far from every training image in L2). Nguyen et al. judged
    "unrecognizable" by eye; this judge can say no, and errs towards "recognizable": an image a person
    would need to squint at is already above the bar.

    ``data_level`` is the 1% quantile of the resemblance of held-out test images. Where it is not above
    the noise bar, real images do not stand out from noise by this measure and no judgement is
    possible (:attr:`judgeable` is False, and the probes say so).
    """

    def __init__(self, x_train: np.ndarray, x_held_out: np.ndarray, value_range: tuple[float, float] = (0.0, 1.0),
                 *, reference: int = 10_000, held_out: int = 1000, noise: int = 1000, quantile: float = 0.999,
                 seed: int = 0):
        if len(x_train) == 0 or len(x_held_out) == 0:
            raise InputError("judging which inputs are unrecognizable needs training and held-out images")
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(x_train), min(reference, len(x_train)), replace=False)
        self.reference = _standardize(x_train[np.sort(pick)])
        self.quantile = quantile
        lo, hi = value_range
        noise_images = rng.uniform(lo, hi, (noise, *x_train.shape[1:]))
        self.bar = float(np.quantile(self.scores(noise_images), quantile))
        self.data_level = float(np.quantile(self.scores(x_held_out[:held_out]), 0.01))

    @property
    def judgeable(self) -> bool:
        return self.data_level > self.bar

    def scores(self, x: np.ndarray, batch: int = 512) -> np.ndarray:
        """Each input's resemblance: its largest absolute correlation with a reference training image (a
        contrast-inverted digit is as recognizable as the digit)."""
        out = np.empty(len(x))
        for i in range(0, len(x), batch):
            out[i:i + batch] = np.abs(_standardize(x[i:i + batch]) @ self.reference.T).max(1)
        return out

    def unrecognizable(self, x: np.ndarray) -> np.ndarray:
        """Per input: resembles no training image more than noise does (all False where not judgeable)."""
        return self.verdict(self.scores(x))

    def verdict(self, scores: np.ndarray) -> np.ndarray:
        """:meth:`unrecognizable` from resemblances already computed (:meth:`scores`)."""
        return (scores <= self.bar) & self.judgeable

    def describe(self) -> dict:
        return {"reference_images": int(len(self.reference)), "noise_quantile": self.quantile, "bar": self.bar,
                "data_level": self.data_level, "judgeable": self.judgeable}

    def note(self) -> str:
        text = (f"unrecognizable: resembles none of {len(self.reference)} training images more than "
                f"{self.quantile:.1%} of uniform-noise images do (largest |correlation| <= {self.bar:.3f}; "
                f"99% of held-out test images reach {self.data_level:.3f})")
        if not self.judgeable:
            text += ("; held-out test images do not stand out from noise by this measure, so no image is "
                     "judged unrecognizable and no class counts as fooled")
        return text


def _standardize(x: np.ndarray) -> np.ndarray:
    """Each input flattened, centred and scaled to unit norm (float32), so a dot product is a correlation."""
    f = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    f = f - f.mean(1, keepdims=True)
    return (f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def resemblance(run) -> Resemblance:
    """The yardstick of an audit run, built once and shared by the probes that need it."""
    if "resemblance" not in run.cache:
        ds = run.dataset
        held_out = run.held_out() if len(ds.x_test) > len(run.y) else ds.x_val  # not the audited points
        run.cache["resemblance"] = Resemblance(ds.x_train, held_out, run.value_range, seed=run.options.seed)
    return run.cache["resemblance"]


def gradient_routes(run):
    """``(route, target, model, judges)`` for each differentiable model of an audit run: the source
    (judged on itself when it is the engines' own source, and on each engine by transfer) and each
    engine's own graph (judged on that engine). ``judges`` maps a target label to a predict function."""
    batch = run.options.batch_size
    if run.model is not None:
        judges = {"source": run.model.predict} if run.crafted_on == "source" else {}
        judges.update({e.label: (lambda z, e=e: e.predict(z, batch)) for e in run.engines})
        yield WHITE_BOX if run.crafted_on == "source" else run.crafted_on, "source", run.model, judges
    for engine, graph in zip(run.engines, run.graphs):
        if graph.model is not None:
            yield ENGINE_ROUTE, engine.label, graph.model, {engine.label: lambda z, e=engine: e.predict(z, batch)}


__all__ = ["PROBES", "Probe", "Resemblance", "resemblance", "gradient_routes", "log_probabilities", "make",
           "probabilities"]
