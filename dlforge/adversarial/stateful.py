"""Stateful query detection: the deployed engine's query history as a reverse image search.

A query-based black-box attack (Square, a substitute's Jacobian augmentation, a genetic search) sends thousands of
near-identical images. A defender that keeps every query and looks each new one up in that history sees the attack
as a run of near-duplicates, whatever the attack optimizes. Two lookups:

- :class:`Blacklight` (Li et al., "Blacklight: Scalable Defense for Neural Networks against Query-Based Black-Box
  Attacks", USENIX Security 2022; reference ``Huiying-Li/blacklight``): the image, on the 0-255 scale, plus a
  secret per-pixel salt modulo 255, is rounded to multiples of ``step``, flattened (height, width, channel, as
  the reference's arrays), cut into sliding windows of ``window`` values (stride 1), and each window hashed; the ``top`` largest hash values are the query's fingerprint.
  A query is flagged when it shares at least ``threshold`` of them with any single earlier query. A match on a
  window is a match on *part* of the image: an attacker who changes a square of it leaves the rest to match.
  Deviation: a 64-bit polynomial hash of the window's levels instead of SHA-256 (the same equality test; a
  collision needs 2^64 luck), so that fingerprinting runs vectorized in numpy.
- :class:`SimilarityEncoder` (Chen, Carlini & Wagner, "Stateful Detection of Black-Box Adversarial Attacks", 2019):
  a small convolutional encoder trained so that an image and a benign transformation of it land close and two
  different images far apart (a contrastive loss); a query is flagged when the mean distance to its ``k`` nearest
  earlier queries in that space falls below a threshold set on a benign stream.

Each history is one attacker's (an attack on one image, as in Li et al.'s per-attack measure) or one shared stream
(the benign stream the false-positive rate is measured on). Flagged queries are kept in the history (the attacker
still sent them).
"""

from __future__ import annotations

from array import array

import numpy as np

from dlforge.errors import InputError

_BASE = np.uint64(0x100000001B3)  # FNV-1a's 64-bit prime as the polynomial's base
_MIX = np.uint64(0x9E3779B97F4A7C15)


class Blacklight:
    """Fingerprints of sliding windows of the quantized image (see the module docstring).

    Args:
        step: quantization step on the 0-255 scale (Li et al.: 50).
        window: values per window of the flattened image (Li et al.: 20 for MNIST and CIFAR-10).
        top: hashes kept per query (Li et al.: 50).
        threshold: shared hashes that flag a query (at least this many; 25, the reference's CIFAR-10 setting as
            Feng et al.'s OARS code applies it; the reference flags more than 25).
        salt: seed of the secret per-pixel salt (None: no salt).
    """

    name = "blacklight"

    def __init__(self, *, step: int = 50, window: int = 20, top: int = 50, threshold: int = 25,
                 value_range=(0.0, 1.0), salt: int | None = 0):
        if not (1 <= step <= 255 and window >= 1 and top >= 1 and 1 <= threshold <= top):
            raise InputError(f"blacklight: need 1 <= step <= 255, window >= 1, 1 <= threshold <= top; got step {step}, "
                             f"window {window}, top {top}, threshold {threshold}")
        self.step, self.window, self.top, self.threshold = step, window, top, threshold
        self.history = lambda: History(self)
        self.value_range = value_range
        self.salt = salt  # the defender's secret: a per-pixel offset before quantization (None: none)
        self._salt = {}

    def fingerprints(self, x: np.ndarray) -> np.ndarray:
        """``(N, top)`` uint64 hashes per query, 0 where a query has fewer distinct windows."""
        lo, hi = self.value_range
        # flattened height x width x channel, interleaved as the reference's PIL arrays are
        pixels = np.clip((np.moveaxis(x, 1, -1) - lo) / (hi - lo), 0, 1).reshape(len(x), -1) * 255
        if self.salt is not None:
            if pixels.shape[1] not in self._salt:
                self._salt[pixels.shape[1]] = np.random.default_rng(self.salt).uniform(0, 255, pixels.shape[1])
            pixels = np.mod(pixels + self._salt[pixels.shape[1]], 255)
        flat = np.round(pixels / self.step).astype(np.uint64)
        span = flat.shape[1] - self.window + 1
        if span < 1:
            raise InputError(f"blacklight: window {self.window} is longer than the image ({flat.shape[1]} values)")
        h = np.zeros((len(x), span), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j in range(self.window):
                h = h * _BASE + flat[:, j:j + span] + np.uint64(1)
            h = (h ^ (h >> np.uint64(29))) * _MIX  # spread the values: the kept "largest" are a random subset
            h |= np.uint64(1)  # never 0 (the padding)
        s = np.sort(h, axis=1)
        s[:, 1:][s[:, 1:] == s[:, :-1]] = 0  # duplicates out
        s = np.sort(s, axis=1)
        return s[:, -self.top:] if span >= self.top else np.pad(s, ((0, 0), (self.top - span, 0)))


class History:
    """One query history of a :class:`Blacklight` detector: :meth:`add` returns, per query in order, the most
    hashes it shares with any one earlier query of this history."""

    def __init__(self, detector: Blacklight):
        self.detector = detector
        self.buckets: dict[int, array] = {}
        self.size = 0

    def add(self, x: np.ndarray) -> np.ndarray:
        out = np.zeros(len(x), dtype=np.int64)
        for row, fp in enumerate(self.detector.fingerprints(x)):
            keys = [int(v) for v in fp if v]
            found = [self.buckets[k] for k in keys if k in self.buckets]
            if found:
                ids = np.concatenate([np.frombuffer(b, dtype=np.int64) for b in found])
                out[row] = np.bincount(ids).max()
            for k in keys:
                self.buckets.setdefault(k, array("q")).append(self.size)
            self.size += 1
        return out

    def flags(self, x: np.ndarray) -> np.ndarray:
        return self.add(x) >= self.detector.threshold


def benign_stream(x: np.ndarray, value_range, seed: int = 0) -> np.ndarray:
    """Each image once, under a random benign transformation a user's photo might carry: a shift of up to 2
    pixels, brightness x[0.9, 1.1], contrast about the mean x[0.9, 1.1] and Gaussian noise of sd 0.01 of the
    range; order shuffled."""
    rng = np.random.default_rng(seed)
    out = np.stack([_transform(img, rng, value_range) for img in x])
    return out[rng.permutation(len(x))].astype(np.float32)


class Watched:
    """An engine's predict behind a stateful detector, one history per attacked image: ``predict(x, rows)`` records
    each query of ``rows`` (which attack each belongs to); ``first[i]``: the query count at attack ``i``'s first
    flagged query (0: never flagged); with ``refuse``, a flagged query gets no answer (its logits are NaN, which
    every dlforge query attack reads as no progress) and is counted in ``refused``."""

    def __init__(self, predict, detector, n: int, refuse: bool = False):
        self.predict_engine, self.detector, self.refuse = predict, detector, refuse
        self.histories = [detector.history() for _ in range(n)]
        self.queries = np.zeros(n, dtype=np.int64)
        self.first = np.zeros(n, dtype=np.int64)
        self.refused = np.zeros(n, dtype=np.int64)

    def __call__(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        flagged = np.zeros(len(x), dtype=bool)
        for j, i in enumerate(rows):
            self.queries[i] += 1
            flagged[j] = bool(self.histories[i].flags(x[j:j + 1])[0])
            if flagged[j] and self.first[i] == 0:
                self.first[i] = self.queries[i]
        logits = self.predict_engine(x)
        if self.refuse and flagged.any():
            logits = logits.astype(np.float32, copy=True)
            logits[flagged] = np.nan
            self.refused[rows[flagged]] += 1
        return logits


def oars_square(predict, x: np.ndarray, y: int, *, eps: float, queries: int, value_range, p_init: float = 0.8,
                search_steps: int = 6, probes: int = 5, max_rejections: int = 300, seed: int = 0) -> tuple[np.ndarray, int]:
    """Feng et al.'s adaptive Square against a stateful defence that refuses flagged queries (OARS: "Stateful Defenses
    for Machine Learning Models Are Not Yet Secure Against Black-box Attacks", CCS 2023; reference
    ``nmangaokar/ccs_23_oars_stateful_attacks``, ``attacks/adaptive/Square.py``), on one image: ``(x_adv, queries)``.

    ``predict``: one image batch -> logits, NaN where the defence refused the query (the reject signal). First two
    binary searches, each probe a real query: the number of squares a proposal draws (accepted when no probe is
    refused) and the smallest square side (accepted when at most half are); then Square's random search with each
    proposal drawing that many squares of at least that side, a refused proposal replaced by a fresh one (rejection
    sampling), and the attack given up after ``max_rejections`` refusals in a row. Every query, refused or not,
    counts against the budget. Deviation: ``search_steps`` (6) and ``probes`` (5) per search where the reference
    uses 10 steps of 5 and 10 probes, to leave MNIST-sized budgets room for the attack itself."""
    from dlforge.adversarial.attacks.square import margin, square_fraction

    rng = np.random.default_rng(seed)
    lo, hi = value_range
    c, h, w = x.shape
    used = 0

    def ask(z):
        nonlocal used
        used += len(z)
        return predict(z.astype(np.float32))

    def propose(base, count, side):
        delta = base - x
        for _ in range(count):
            top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            delta[:, top:top + side, left:left + side] = eps * rng.choice([-1.0, 1.0], size=(c, 1, 1))
        return np.clip(x + delta, lo, hi)

    x_adv = np.clip(x + eps * rng.choice([-1.0, 1.0], size=(c, 1, w)), lo, hi).astype(np.float32)
    loss = float(margin(ask(x_adv[None]), np.array([y]))[0])
    first_side = min(max(int(round(np.sqrt(p_init * h * w))), 1), h - 1, w - 1)

    def refused_share(count, side):
        out = ask(np.stack([propose(x_adv, count, side) for _ in range(probes)]))
        return float(np.isnan(out).any(1).mean())

    low, high, count = 1, 100, 100  # the number of squares: the fewest with no refusal
    for _ in range(search_steps):
        mid = (low + high) // 2
        if refused_share(mid, max(first_side // 4, 1)) <= 0:
            count, high = mid, mid - 1
        else:
            low = mid + 1
    low, high, min_side = 1, h - 1, h - 1  # the smallest side refused at most half the time
    for _ in range(search_steps):
        mid = (low + high) // 2
        if refused_share(count, mid) <= 0.5:
            min_side, high = mid, mid - 1
        else:
            low = mid + 1
    streak, i = 0, 0
    while used < queries and loss > 0:
        side = max(min(max(int(round(np.sqrt(square_fraction(p_init, i, queries) * h * w))), 1), h - 1), min_side)
        i += 1
        proposal = propose(x_adv, count, side).astype(np.float32)
        out = ask(proposal[None])
        if np.isnan(out).any():
            streak += 1
            if streak >= max_rejections:
                break
            continue
        streak = 0
        new = float(margin(out, np.array([y]))[0])
        if new < loss:
            x_adv, loss = proposal, new
    return x_adv, used


def encoder_network(shape: tuple, dim: int = 256):
    """Chen et al.'s similarity encoder (their reference ``schoyc/blackbox-detection``): two blocks of two 3x3
    convolutions (32, then 64 filters) and a 2x2 max-pool, then dense 512 and dense ``dim`` (dropout left out)."""
    from torch import nn

    c, h, w = shape
    return nn.Sequential(nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * (h // 4) * (w // 4), 512), nn.ReLU(),
                         nn.Linear(512, dim))


class SimilarityEncoder:
    """Chen, Carlini & Wagner's stateful detection (see the module docstring): ``k`` nearest earlier queries in the
    space of an encoder trained with a contrastive loss, an image and its benign transformation or small noise close
    (squared distance), two different images at least ``margin`` apart. The threshold on the mean k-NN distance is
    set at ``fpr`` on a benign stream of ``calibrate`` training images disjoint from those it trained on (their
    reference: the 0.1th percentile over the training set); the stream's history is not cleared, so the threshold
    errs low (k-NN distances in a history that is cleared on detections are, if anything, larger). Deviations: their encoder's training recipe is not published with the code; this one trains for
    ``epochs`` on ``train`` images with the benign transformations of :func:`benign_stream` plus uniform noise up to
    ``noise`` as positives."""

    name = "encoder"

    def __init__(self, x_train: np.ndarray, value_range, *, k: int = 50, fpr: float = 0.005, train: int = 5000,
                 epochs: int = 2, noise: float = 0.1, margin: float = 1.0, calibrate: int = 10000, seed: int = 0):
        import torch

        self.k, self.value_range = k, value_range
        lo, hi = value_range
        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        order = rng.permutation(len(x_train))
        if len(order) < train + 2 * k:
            raise InputError(f"the similarity encoder trains on {train} images and calibrates on more than {2 * k}; "
                             f"the training split has {len(order)}: lower its train= or k=")
        x = x_train[order[:train]].astype(np.float32)
        self.model = encoder_network(x.shape[1:])
        opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        for epoch in range(epochs):
            positives = np.stack([_transform(img, rng, value_range) for img in x])
            positives = np.clip(positives + rng.uniform(-noise, noise, positives.shape) * (hi - lo), lo, hi)
            self.model.train()
            for i in range(0, len(x), 128):
                a = torch.from_numpy(x[i:i + 128])
                p = torch.from_numpy(positives[i:i + 128].astype(np.float32))
                za, zp = self.model(a), self.model(p)
                near = ((za - zp) ** 2).sum(1)
                far = torch.cdist(za, za)  # every other image of the batch is a different one
                off = ~torch.eye(len(a), dtype=torch.bool)
                loss = near.mean() + (torch.relu(margin - far[off]) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.model.eval()
        self.history = lambda: EncoderHistory(self)
        # calibrated on training images it was not trained on, as a stream as long as the benign one it is judged
        # on (k-NN distances shrink as a history grows)
        calibration = benign_stream(x_train[order[train:train + calibrate]].astype(np.float32), value_range,
                                    seed + 99)
        scores = self._stream_scores(calibration)
        self.threshold = float(np.quantile(scores[np.isfinite(scores)], fpr))

    def embed(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return np.concatenate([self.model(torch.from_numpy(x[i:i + 512].astype(np.float32))).numpy()
                                   for i in range(0, len(x), 512)])

    def _stream_scores(self, x: np.ndarray) -> np.ndarray:
        """Mean distance of each query to its ``k`` nearest earlier ones (inf while fewer than ``k`` came before)."""
        z = self.embed(x)
        out = np.full(len(z), np.inf)
        for i in range(self.k, len(z)):
            d = np.sqrt(((z[:i] - z[i]) ** 2).sum(1))
            out[i] = np.partition(d, self.k - 1)[:self.k].mean()
        return out


class EncoderHistory:
    """One query history of a :class:`SimilarityEncoder`; :meth:`flags` says, per query in order, whether its
    mean distance to its ``k`` nearest earlier queries is below the threshold. As in their reference, a detection
    clears the history (the account is banned and starts afresh)."""

    def __init__(self, detector: SimilarityEncoder):
        self.detector = detector
        self.z: list[np.ndarray] = []

    def flags(self, x: np.ndarray) -> np.ndarray:
        k = self.detector.k
        out = np.zeros(len(x), dtype=bool)
        for i, z in enumerate(self.detector.embed(x)):
            if len(self.z) >= k:
                d = np.sqrt(((np.stack(self.z) - z) ** 2).sum(1))
                out[i] = np.partition(d, k - 1)[:k].mean() < self.detector.threshold
            self.z.append(z)
            if out[i]:
                self.z = []
        return out


def _transform(img: np.ndarray, rng, value_range) -> np.ndarray:
    """One benign transformation of :func:`benign_stream`."""
    lo, hi = value_range
    img = np.roll(img, tuple(rng.integers(-2, 3, 2)), axis=(-2, -1))
    mean = img.mean()
    img = (img - mean) * rng.uniform(0.9, 1.1) + mean
    img = img * rng.uniform(0.9, 1.1) + rng.normal(0, 0.01 * (hi - lo), img.shape)
    return np.clip(img, lo, hi)
