"""Probes: the audit's experiments that are not eps-ball attacks on the test points.

Each probe is registered in :data:`dlforge.adversarial.attacks.ATTACKS` (kind ``probe``), so
``dlforge audit --attacks fooling,ood,substitute`` runs it beside the attacks and ``--list-attacks``
shows its options. A probe runs once per audit and writes its own report section
(:class:`dlforge.adversarial.attacks.base.Probe`):

- ``fooling`` / ``fooling-evo``: unrecognizable inputs classified with high confidence (Nguyen et
  al. 2015), by gradient ascent and by a query-only evolutionary search against each engine;
- ``ood``: the confidence of each engine on inputs from no class it knows (noise, another dataset);
- ``substitute``: Papernot et al.'s black-box attack, a substitute trained on an engine's answers;
- ``patch``: a universal targeted adversarial patch trained with EOT (Brown et al. 2017);
- ``physical``: PGD vs EOT-PGD examples through a print-and-photograph stand-in (Kurakin et al.
  2017, Athalye et al. 2018).

This module holds what they share: turning outputs into probabilities, and the yardstick for
"unrecognizable" taken from the model's own data.
"""

from __future__ import annotations

import numpy as np

from dlforge.errors import InputError


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


class Familiarity:
    """How far an input lies from the model's own training data, and where "unrecognizable" begins.

    The distance is the L2 distance to the nearest of (up to) ``reference`` training images. The
    bar is the ``quantile`` of that distance over held-out test images: an input farther from every
    training image than 99% of real test images are is called unrecognizable. Nguyen et al. judged
    "unrecognizable" by eye; this is a yardstick that can be computed and checked, stated per image
    in the report as the ratio distance / bar (> 1: unrecognizable).
    """

    def __init__(self, x_train: np.ndarray, x_held_out: np.ndarray, *, reference: int = 10_000,
                 held_out: int = 1000, quantile: float = 0.99, seed: int = 0):
        if len(x_train) == 0 or len(x_held_out) == 0:
            raise InputError("judging which inputs are unrecognizable needs training and held-out images")
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(x_train), min(reference, len(x_train)), replace=False)
        self.reference = x_train[np.sort(pick)].reshape(len(pick), -1).astype(np.float32)
        self._sq = (self.reference.astype(np.float64) ** 2).sum(1)
        self.quantile = quantile
        self.bar = float(np.quantile(self.distances(x_held_out[:held_out]), quantile))

    def distances(self, x: np.ndarray, batch: int = 512) -> np.ndarray:
        """L2 distance of each input to its nearest reference training image."""
        flat = x.reshape(len(x), -1).astype(np.float32)
        out = np.empty(len(x))
        for i in range(0, len(x), batch):
            q = flat[i:i + batch]
            d2 = (q.astype(np.float64) ** 2).sum(1)[:, None] + self._sq[None, :] - 2.0 * (q @ self.reference.T)
            out[i:i + batch] = np.sqrt(np.clip(d2.min(1), 0.0, None))
        return out

    def describe(self) -> dict:
        return {"reference_images": int(len(self.reference)), "quantile": self.quantile, "bar": self.bar}


def familiarity(run) -> Familiarity:
    """The yardstick of an audit run, built once and shared by the probes that need it."""
    if "familiarity" not in run.cache:
        ds = run.dataset
        held_out = run.held_out() if len(ds.x_test) > len(run.y) else ds.x_val  # not the audited points
        run.cache["familiarity"] = Familiarity(ds.x_train, held_out, seed=run.options.seed)
    return run.cache["familiarity"]


def gradient_routes(run):
    """``(route, target, model, judges)`` for each differentiable model of an audit run: the source
    (judged on itself when it is the engines' own source, and on each engine by transfer) and each
    engine's own graph (judged on that engine). ``judges`` maps a target label to a predict function."""
    from dlforge.adversarial.checks import ENGINE_ROUTE

    batch = run.options.batch_size
    if run.model is not None:
        judges = {"source": run.model.predict} if run.crafted_on == "source" else {}
        judges.update({e.label: (lambda z, e=e: e.predict(z, batch)) for e in run.engines})
        yield "white-box" if run.crafted_on == "source" else run.crafted_on, "source", run.model, judges
    for engine, graph in zip(run.engines, run.graphs):
        if graph.model is not None:
            yield ENGINE_ROUTE, engine.label, graph.model, {engine.label: lambda z, e=engine: e.predict(z, batch)}


__all__ = ["Familiarity", "familiarity", "gradient_routes", "log_probabilities", "probabilities"]
