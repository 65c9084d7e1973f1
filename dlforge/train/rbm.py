"""How well a binary RBM models its data: exact and AIS log-likelihood, pseudo-likelihood, free-energy gap.

Contrastive divergence (Hinton 2002) follows an approximation of the log-likelihood's gradient, not the
gradient, and its fixed points need not be the likelihood's; the reconstruction error it is usually monitored
with is not the likelihood either. Fischer & Igel ("Empirical Analysis of the Divergence of Gibbs Sampling
Based Learning Algorithms for Restricted Boltzmann Machines", ICANN 2010) show on Bars-and-Stripes that the
log-likelihood can *fall* under CD while the reconstruction error keeps falling. These functions measure the
likelihood itself, so a training report can show which happened:

- :func:`exact_log_partition`: log Z by summing over every state of the smaller layer (2^n terms, n <= 24);
- :func:`ais_log_partition`: Salakhutdinov & Murray's annealed importance sampling ("On the Quantitative
  Analysis of Deep Belief Networks", ICML 2008) from a base-rate RBM (zero weights, the data's visible biases),
  with its standard error;
- :func:`log_likelihood`: mean log p(v) = -F(v) - log Z over a set;
- :func:`pseudo_log_likelihood`: Besag's pseudo-likelihood, one randomly chosen bit per sample, times D;
- the free-energy gap, held-out minus training mean free energy (rises as the RBM overfits, Hinton's
  practical guide, section 6).

Parameters are numpy arrays: ``W`` (hidden, visible), ``b_v`` (visible), ``b_h`` (hidden); data are binary
or probabilities in [0, 1] (a probability is used as the expected visible state, as the DBN trains on it).
Computation is float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_EXACT_UNITS = 24


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def free_energy(v: np.ndarray, W: np.ndarray, b_v: np.ndarray, b_h: np.ndarray) -> np.ndarray:
    """F(v) = -v.b_v - sum_j softplus(b_h + W v)_j, per row of ``v``; p(v) = exp(-F(v)) / Z."""
    v = np.asarray(v, dtype=np.float64)
    return -v @ b_v - softplus(v @ W.T + b_h).sum(1)


def _states(n: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Binary states ``start`` .. ``stop`` of ``n`` units (the bits of their index)."""
    index = np.arange(start, 2 ** n if stop is None else min(stop, 2 ** n))
    return ((index[:, None] >> np.arange(n)[None]) & 1).astype(np.float64)


def exact_log_partition(W: np.ndarray, b_v: np.ndarray, b_h: np.ndarray, chunk: int = 1 << 14) -> float:
    """log Z, summing out the larger layer analytically and enumerating the smaller one (at most 2^24 states)."""
    W, b_v, b_h = (np.asarray(a, dtype=np.float64) for a in (W, b_v, b_h))
    hidden, visible = W.shape
    if min(hidden, visible) > MAX_EXACT_UNITS:
        raise ValueError(f"exact log Z enumerates the smaller layer: {min(hidden, visible)} units is more than "
                         f"{MAX_EXACT_UNITS}; use ais_log_partition")
    parts = []
    if hidden <= visible:  # log Z = logsumexp_h [h.b_h + sum_i softplus(b_v + W^T h)_i]
        for start in range(0, 2 ** hidden, chunk):
            h = _states(hidden, start, start + chunk)
            parts.append(h @ b_h + softplus(h @ W + b_v).sum(1))
    else:  # log Z = logsumexp_v [-F(v)]
        for start in range(0, 2 ** visible, chunk):
            v = _states(visible, start, start + chunk)
            parts.append(-free_energy(v, W, b_v, b_h))
    return float(np.logaddexp.reduce(np.concatenate(parts)))


def log_likelihood(v: np.ndarray, W, b_v, b_h, log_z: float) -> float:
    """Mean log p(v) over the rows of ``v``."""
    return float(np.mean(-free_energy(v, W, b_v, b_h)) - log_z)


def pseudo_log_likelihood(v: np.ndarray, W, b_v, b_h, rng: np.random.Generator) -> float:
    """Mean stochastic pseudo-log-likelihood: D * log sigmoid(F(v with bit i flipped) - F(v)), i random per row."""
    v = (np.asarray(v, dtype=np.float64) > 0.5).astype(np.float64)
    i = rng.integers(0, v.shape[1], size=len(v))
    flipped = v.copy()
    flipped[np.arange(len(v)), i] = 1 - flipped[np.arange(len(v)), i]
    gap = free_energy(flipped, W, b_v, b_h) - free_energy(v, W, b_v, b_h)
    return float(v.shape[1] * np.mean(-softplus(-gap)))


def free_energy_gap(train: np.ndarray, held_out: np.ndarray, W, b_v, b_h) -> float:
    """Mean free energy of held-out data minus that of (as many) training data: grows as the RBM overfits."""
    n = min(len(train), len(held_out))
    return float(free_energy(held_out[:n], W, b_v, b_h).mean() - free_energy(train[:n], W, b_v, b_h).mean())


def base_rate_biases(data: np.ndarray, smoothing: float = 0.05) -> np.ndarray:
    """Visible biases of the base-rate RBM: the log-odds of each unit's mean over the data (smoothed, as in
    Salakhutdinov & Murray's code, so that no unit is exactly 0 or 1)."""
    p = (np.asarray(data, dtype=np.float64).mean(0) * len(data) + smoothing) / (len(data) + 2 * smoothing)
    return np.log(p) - np.log1p(-p)


def default_schedule(steps: int = 14_500) -> np.ndarray:
    """Salakhutdinov & Murray's schedule: 500 temperatures spaced uniformly in [0, 0.5], 4,000 in [0.5, 0.9] and
    10,000 in [0.9, 1] (14,500 intermediate distributions); ``steps`` scales the three parts in proportion."""
    a, b = max(1, round(steps * 500 / 14_500)), max(1, round(steps * 4000 / 14_500))
    c = max(1, steps - a - b)
    return np.concatenate([np.linspace(0, 0.5, a, endpoint=False), np.linspace(0.5, 0.9, b, endpoint=False),
                           np.linspace(0.9, 1.0, c + 1)])


@dataclass
class AISEstimate:
    log_z: float
    standard_error: float  # of log Z (delta method: std of the weights / (sqrt(runs) * their mean))
    runs: int
    temperatures: int

    def to_dict(self) -> dict:
        return {"log_z": self.log_z, "standard_error": self.standard_error, "runs": self.runs,
                "temperatures": self.temperatures}


def ais_log_partition(W, b_v, b_h, data: np.ndarray, *, runs: int = 100, betas: np.ndarray | None = None,
                      seed: int = 0) -> AISEstimate:
    """Annealed importance sampling estimate of log Z (Salakhutdinov & Murray 2008, section 4.1).

    p_k(v) is proportional to exp((1 - beta_k) v.b_A + beta_k (v.b_v) + sum_j softplus(beta_k (W v + b_h))_j),
    from the base-rate RBM A (beta = 0: no weights, visible biases ``base_rate_biases(data)``, log Z_A =
    sum_i softplus(b_A)_i + H log 2) to the RBM (beta = 1). Each run starts from an exact sample of A and
    moves with one Gibbs sweep per temperature; log Z = log Z_A + log mean(w).
    """
    W, b_v, b_h = (np.asarray(a, dtype=np.float64) for a in (W, b_v, b_h))
    betas = default_schedule() if betas is None else np.asarray(betas, dtype=np.float64)
    rng = np.random.default_rng(seed)
    b_a = base_rate_biases(data)
    hidden = W.shape[0]

    def log_p_star(v, beta):
        return (1 - beta) * (v @ b_a) + beta * (v @ b_v) + softplus(beta * (v @ W.T + b_h)).sum(1)

    v = (rng.random((runs, len(b_v))) < 1 / (1 + np.exp(-b_a))).astype(np.float64)
    log_w = np.zeros(runs)
    for prev, beta in zip(betas[:-1], betas[1:]):
        log_w += log_p_star(v, beta) - log_p_star(v, prev)
        h = (rng.random((runs, hidden)) < 1 / (1 + np.exp(-beta * (v @ W.T + b_h)))).astype(np.float64)
        field = (1 - beta) * b_a + beta * (h @ W + b_v)
        v = (rng.random(v.shape) < 1 / (1 + np.exp(-field))).astype(np.float64)
    log_z_a = float(softplus(b_a).sum() + hidden * np.log(2.0))
    mean_log_w = float(np.logaddexp.reduce(log_w) - np.log(runs))
    weights = np.exp(log_w - log_w.max())
    se = float(weights.std(ddof=1) / (np.sqrt(runs) * weights.mean())) if runs > 1 else float("nan")
    return AISEstimate(log_z_a + mean_log_w, se, runs, len(betas))


def binarize(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Binary data as they are; probabilities (grey pixels, a lower RBM's hidden probabilities) sampled once as
    Bernoulli variables, as Salakhutdinov & Murray binarize MNIST: a likelihood is of binary vectors."""
    v = np.asarray(v, dtype=np.float64)
    return v if np.isin(v, (0.0, 1.0)).all() else (rng.random(v.shape) < v).astype(np.float64)


def diagnostics(W, b_v, b_h, train: np.ndarray, held_out: np.ndarray | None, *, runs: int = 100, betas=None,
                seed: int = 0, sample: int = 1000, ais: bool = True) -> dict:
    """Every figure of one RBM: log Z (exact where the smaller layer has <= 20 units, else AIS when ``ais``), the
    train and held-out log-likelihood (where there is a log Z), the pseudo-log-likelihood and the free-energy gap,
    on up to ``sample`` rows of each set (binarized, :func:`binarize`)."""
    rng = np.random.default_rng(seed)
    train = binarize(np.asarray(train)[:sample], rng)
    held_out = None if held_out is None else binarize(np.asarray(held_out)[:sample], rng)
    out: dict = {"pseudo_log_likelihood": pseudo_log_likelihood(train if held_out is None else held_out, W, b_v, b_h,
                                                                rng)}
    if held_out is not None:
        out["free_energy_gap"] = free_energy_gap(train, held_out, W, b_v, b_h)
    if min(np.shape(W)) <= 20:
        log_z, method = exact_log_partition(W, b_v, b_h), "exact"
    elif not ais:
        return out
    else:
        est = ais_log_partition(W, b_v, b_h, train, runs=runs, betas=betas, seed=seed)
        log_z, method = est.log_z, "ais"
        out["log_z_standard_error"] = est.standard_error
        out["ais"] = {"runs": est.runs, "temperatures": est.temperatures}
    out.update({"log_z": log_z, "log_z_method": method,
                "log_likelihood_train": log_likelihood(train, W, b_v, b_h, log_z)})
    if held_out is not None:
        out["log_likelihood_held_out"] = log_likelihood(held_out, W, b_v, b_h, log_z)
    return out
