"""Poison defences as published, each scored against the known poisoned indices.

- Activation clustering (Chen et al. 2018) and spectral signatures (Tran et al. 2018) inspect the
  training set through the model's last hidden layer and flag samples to remove.
- STRIP (Gao et al. 2019) filters inputs at inference time by the entropy of the model's
  predictions on the input blended with clean images.

Each is run on a deployed engine's own activations or outputs (:mod:`.features`), so the fp32 and
the INT8 engine can be compared. Each defence's ``published`` holds its paper's reference and the
detection it reports, where the paper's text was checked (:func:`published`).
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Callable, ClassVar

import numpy as np

from dlforge.adversarial.detectors import DETECTORS, Detector
from dlforge.errors import InputError
from dlforge.registry import Registry

REDUCTIONS = ("pca", "ica")
AC_ANALYSES = ("relative-size", "silhouette")
# ART 1.20.1 defaults (art.defences.detector.poison.clustering_analyzer.ClusteringAnalyzer): a cluster
# holding under 35% of its class is "substantially smaller"; a class silhouette above 0.10 means the
# two clusters are a real split. The papers' text available here gives no numbers for either.
SIZE_THRESHOLD = 0.35
SILHOUETTE_THRESHOLD = 0.10
STRIP_COPIES = 100  # N, Gao et al. 2019 Sec. 5.2 and Table 3



@dataclass
class Flags:
    """What a training-set defence flagged: the mask it removes, per-class details, the mask of each
    analysis it ran (activation clustering runs two), and each sample's cluster within its class
    (activation clustering; -1 where a class was not clustered)."""

    flagged: np.ndarray
    details: list[dict]
    by_analysis: dict[str, np.ndarray] = field(default_factory=dict)
    cluster: np.ndarray | None = None


def reduce_dimensions(features: np.ndarray, dims: int, method: str, seed: int) -> tuple[np.ndarray, dict]:
    """``features`` reduced to ``dims`` by FastICA or PCA, and what happened (ICA's convergence)."""
    from sklearn.decomposition import PCA, FastICA

    if features.shape[1] <= dims:
        return features, {"reduced": False}
    dims = min(dims, len(features))
    if method == "pca":
        return PCA(n_components=dims, random_state=seed).fit_transform(features), {"reduced": True}
    from sklearn.exceptions import ConvergenceWarning

    # ART's settings for FastICA (max_iter=1000, tol=0.005).
    ica = FastICA(n_components=dims, whiten="unit-variance", max_iter=1000, tol=0.005, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reduced = ica.fit_transform(features)
    return reduced, {"reduced": True, "ica_converged": bool(ica.n_iter_ < ica.max_iter)}


def activation_clustering(features: np.ndarray, y: np.ndarray, *, reduce: str = "pca", dims: int = 10,
                          analysis: str = "relative-size", size_threshold: float = SIZE_THRESHOLD,
                          silhouette_threshold: float = SILHOUETTE_THRESHOLD, seed: int = 0) -> Flags:
    """Activation clustering (Chen et al. 2018): per class, reduce the last-hidden-layer activations
    to ``dims``, split them with 2-means, and analyse.

    The reduction is PCA by default, as ART's ActivationDefence, or FastICA, the paper's choice. PCA
    is the default because it keeps the variance that sets a poison cluster apart: FastICA whitens
    every component to unit variance first, and on a planted 15% cluster 2-means then often splits
    the clean samples instead (tests/adversarial/test_poisoning.py shows PCA isolating it exactly).

    - relative size: a cluster holding less than ``size_threshold`` of its class is poison.
    - silhouette: as relative size, but only in a class whose silhouette score exceeds
      ``silhouette_threshold`` (the clustering is a real split), as ART implements it.

    Both analyses run; ``analysis`` picks the one whose flags are removed. Exclusionary
    reclassification (retraining without a cluster, per cluster) is not implemented.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score
    from threadpoolctl import threadpool_limits

    if reduce not in REDUCTIONS:
        raise InputError(f"unknown reduction {reduce!r}; expected one of {', '.join(REDUCTIONS)}")
    if analysis not in AC_ANALYSES:
        raise InputError(f"unknown cluster analysis {analysis!r}; expected one of {', '.join(AC_ANALYSES)}")
    masks = {a: np.zeros(len(y), dtype=bool) for a in AC_ANALYSES}
    cluster = np.full(len(y), -1)
    details = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if len(idx) < 3:
            details.append({"class": int(c), "samples": int(len(idx)), "skipped": "fewer than 3 samples"})
            continue
        reduced, how = reduce_dimensions(features[idx], dims, reduce, seed)
        # 2-means on 10-d points gains nothing from OpenMP threads and, on a busy machine, loses ~50x
        # to their spin-waiting
        with threadpool_limits(1):
            labels = KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(reduced)
        cluster[idx] = labels
        sizes = np.bincount(labels, minlength=2)
        shares = sizes / len(idx)
        silhouette = float(silhouette_score(reduced, labels)) if sizes.min() > 0 else 0.0
        small = [k for k in (0, 1) if shares[k] < size_threshold]
        flagged = {"relative-size": small, "silhouette": small if silhouette > silhouette_threshold else []}
        for a, clusters in flagged.items():
            masks[a][idx[np.isin(labels, clusters)]] = True
        details.append({"class": int(c), "samples": int(len(idx)), "cluster_sizes": sizes.tolist(),
                        "cluster_shares": [round(float(s), 4) for s in shares], "silhouette": round(silhouette, 4),
                        "flagged_clusters": flagged, **how})
    return Flags(masks[analysis], details, masks, cluster)


def spectral_signatures(features: np.ndarray, y: np.ndarray, *, eps: float, factor: float = 1.5) -> Flags:
    """Spectral signatures (Tran et al. 2018, Algorithm 1): per class, centre the representations,
    take the top right singular vector v, score each sample by ((R_i - mean) . v)^2, and remove the
    round(``factor`` * ``eps`` * n) highest scores of the class.

    ``eps`` is the defender's upper bound on the poisoned fraction. The authors' released code
    (MadryLab/backdoor_data_poisoning, compute_corr.py) and ART project the uncentred
    representations; this follows the paper's centred form.
    """
    if not 0 < eps < 1:
        raise InputError(f"spectral signatures' eps must be within (0, 1), got {eps}")
    flagged = np.zeros(len(y), dtype=bool)
    details = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        centred = features[idx] - features[idx].mean(0)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        scores = (centred @ vt[0]) ** 2
        remove = min(len(idx), round(factor * eps * len(idx)))
        flagged[idx[np.argsort(-scores, kind="stable")[:remove]]] = True
        details.append({"class": int(c), "samples": int(len(idx)), "removed": int(remove),
                        "top_direction_variance_share": round(float(s[0] ** 2 / max((s ** 2).sum(), 1e-12)), 4)})
    return Flags(flagged, details)


def detection_rates(flagged: np.ndarray, poisoned: np.ndarray) -> dict:
    """TPR (share of the poisoned samples flagged) and FPR (share of the clean samples flagged)."""
    truth = np.zeros(len(flagged), dtype=bool)
    truth[poisoned] = True
    tp, fp = int((flagged & truth).sum()), int((flagged & ~truth).sum())
    return {"true_positive_rate": tp / max(int(truth.sum()), 1),
            "false_positive_rate": fp / max(int((~truth).sum()), 1), "flagged": int(flagged.sum()),
            "true_positives": tp, "false_positives": fp}


def per_class_rates(flagged: np.ndarray, poisoned: np.ndarray, y: np.ndarray) -> list[dict]:
    """:func:`detection_rates` within each (poisoned) label."""
    truth = np.zeros(len(flagged), dtype=bool)
    truth[poisoned] = True
    out = []
    for c in np.unique(y):
        m = y == c
        rates = detection_rates(flagged[m], np.flatnonzero(truth[m]))
        out.append({"class": int(c), "poisoned": int(truth[m].sum()),
                    **{k: rates[k] for k in ("true_positive_rate", "false_positive_rate", "flagged")}})
    return out


class DatasetDefence(ABC):
    """A defence that inspects the (possibly poisoned) training set and flags samples to remove.

    Hyper-parameters are keyword-only in ``__init__``; ``flag`` receives the last-hidden-layer
    features of every training sample and their labels.
    """

    name = ""
    published: ClassVar[dict | None] = None  # {"paper", "method", "reported"}: what the report cites

    @abstractmethod
    def flag(self, features: np.ndarray, y: np.ndarray) -> Flags:
        """The samples to remove, with details."""

    def settings(self) -> dict:
        return dict(vars(self))


DATASET_DEFENCES: Registry[type[DatasetDefence]] = Registry("dataset defence",
                                                             ["dlforge.adversarial.poisoning.defences"])


@DATASET_DEFENCES.register("activation-clustering")
class ActivationClustering(DatasetDefence):
    """Activation clustering (Chen et al. 2018); see :func:`activation_clustering`."""

    published = {
        "paper": ("B. Chen, W. Carvalho, N. Baracaldo, H. Ludwig, B. Edwards, T. Lee, I. Molloy, B. "
                  "Srivastava. Detecting Backdoor Attacks on Deep Neural Networks by Activation "
                  "Clustering. SafeAI@AAAI 2019 (CEUR-WS Vol-2301, paper 18); arXiv:1811.03728."),
        "method": ("per class: last-hidden-layer activations reduced to 10 dimensions (ICA), 2-means; a "
                   "cluster is poison by relative size or silhouette score"),
        "reported": ("Gao et al. 2019 (STRIP), Table 4, summarise AC's detection capability as 'F1 score "
                     "nearly 100%'. Chen et al.'s own result tables were not checked here."),
    }

    def __init__(self, *, reduce: str = "pca", dims: int = 10, analysis: str = "relative-size",
                 size_threshold: float = SIZE_THRESHOLD, silhouette_threshold: float = SILHOUETTE_THRESHOLD,
                 seed: int = 0):
        self.reduce, self.dims, self.analysis, self.seed = reduce, dims, analysis, seed
        self.size_threshold, self.silhouette_threshold = size_threshold, silhouette_threshold

    def flag(self, features, y):
        return activation_clustering(features, y, **self.settings())


@DATASET_DEFENCES.register("spectral-signatures")
class SpectralSignatures(DatasetDefence):
    """Spectral signatures (Tran et al. 2018); see :func:`spectral_signatures`."""

    published = {
        "paper": ("B. Tran, J. Li, A. Madry. Spectral Signatures in Backdoor Attacks. NeurIPS 2018, pp. "
                  "8000-8010; arXiv:1811.00636."),
        "method": ("per class: centred representations, top right singular vector, score = squared "
                   "projection; remove the 1.5*eps*n highest of each class"),
        "reported": ("Not checked here: the paper's result tables (CIFAR-10) could not be read."),
    }

    def __init__(self, *, eps: float, factor: float = 1.5):
        self.eps, self.factor = eps, factor

    def flag(self, features, y):
        return spectral_signatures(features, y, **self.settings())


def superimpose(x: np.ndarray, overlays: np.ndarray) -> np.ndarray:
    """STRIP's perturbation: a linear blend of the input with a clean image. Gao et al. blend with
    cv2.addWeighted without stating the weights for MNIST; equal weights keep the value range (as
    BackdoorBench's STRIP, strip_alpha=0.5)."""
    return (0.5 * x + 0.5 * overlays).astype(np.float32)


def strip_entropy(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, overlays: np.ndarray, *,
                  copies: int = STRIP_COPIES, seed: int = 0) -> np.ndarray:
    """Gao et al. 2019 (STRIP), Eqs. 2-4: the prediction entropy (bits) of each input blended with
    ``copies`` clean images drawn from ``overlays``, averaged over the copies. A trigger survives the blending
    and keeps the predictions on its target: low entropy."""
    from dlforge.adversarial.squeezing import softmax

    rng = np.random.default_rng(seed)
    entropy = np.zeros(len(x))
    for _ in range(copies):
        p = softmax(predict(superimpose(x, overlays[rng.integers(0, len(overlays), len(x))])))
        entropy += -(p * np.log2(np.clip(p, 1e-12, 1))).sum(1)
    return entropy / copies


def strip_boundary(clean_entropy: np.ndarray, frr: float) -> float:
    """Gao et al. 2019, Sec. 5.3: fit a normal to the held-out clean entropies; the detection
    boundary is its ``frr`` percentile (inputs below it are rejected as trojaned)."""
    if len(clean_entropy) < 2:
        raise InputError("STRIP's boundary needs at least 2 held-out clean entropies")
    return NormalDist(float(np.mean(clean_entropy)), max(float(np.std(clean_entropy, ddof=1)), 1e-12)).inv_cdf(frr)


def strip_sets(y_test: np.ndarray, *, size: int, target: int | None, seed: int = 0) -> dict[str, np.ndarray]:
    """Four disjoint sets of test indices, ``size`` each: the blending pool (``overlays``), the
    held-out clean images that set the boundary (``threshold``), the clean images FRR is measured on
    (``clean``), and the images that get the trigger for FAR (``triggered``: none of class
    ``target``, which a single-target backdoor already maps to itself)."""
    order = np.random.default_rng(seed).permutation(len(y_test))
    sets = {name: order[i * size:(i + 1) * size] for i, name in enumerate(("overlays", "threshold", "clean"))}
    rest = order[3 * size:]
    sets["triggered"] = (rest if target is None else rest[y_test[rest] != target])[:size]
    if min(len(s) for s in sets.values()) < 10:
        raise InputError(f"STRIP needs four disjoint sets of at least 10 test images; {len(y_test)} test images "
                         f"give {', '.join(f'{k} {len(v)}' for k, v in sets.items())}")
    return sets


def strip_rates(boundary: float, clean_entropy: np.ndarray, triggered_entropy: np.ndarray) -> dict:
    """FRR: clean inputs rejected (entropy below the boundary); FAR: triggered inputs accepted."""
    far = float((triggered_entropy >= boundary).mean())
    return {"false_rejection_rate": float((clean_entropy < boundary).mean()), "false_acceptance_rate": far,
            "detection_rate": 1 - far}


@DETECTORS.register("strip")
class Strip(Detector):
    """STRIP (Gao et al. 2019) as an input filter on the engine: the score is minus the mean prediction
    entropy of the input blended with clean images. ``fit`` splits the held-out clean images in two
    disjoint halves: the blending pool, and the images whose entropies set the boundary (a normal
    fitted to them, at ``fpr`` = Gao et al.'s preset FRR)."""

    published = {
        "paper": ("Y. Gao, C. Xu, D. Wang, S. Chen, D. C. Ranasinghe, S. Nepal. STRIP: A Defence Against "
                  "Trojan Attacks on Deep Neural Networks. ACSAC 2019, pp. 113-125; arXiv:1902.06531."),
        "method": ("entropy of predictions on N=100 blends of the input with held-out clean images; "
                   "boundary at the preset-FRR percentile of a normal fitted to clean entropies"),
        "reported": ("Gao et al. 2019, Table 3, MNIST, 9-pixel square trigger, N=100: preset FRR 1% -> FAR "
                     "1.85%, FRR 2% -> FAR 1.1%, FRR 3% -> FAR 0.75%. Abstract: FAR below 1% at a preset FRR "
                     "of 1% overall; 0% FRR and FAR on CIFAR10 and GTSRB. STRIP assumes an input-agnostic "
                     "trigger (Sec. 1)."),
    }

    def __init__(self, argument: str | None = None, *, fpr: float = 0.01, copies: int = STRIP_COPIES, seed: int = 0):
        super().__init__(argument, fpr=fpr)
        self.copies, self.seed, self.overlays = copies, seed, None

    def fit(self, predict, x_clean):
        if len(x_clean) < 4:
            raise InputError(f"STRIP needs at least 4 held-out clean images, got {len(x_clean)}")
        self.overlays = x_clean[::2]
        self.threshold = -strip_boundary(-self.score(predict, x_clean[1::2]), self.fpr)
        return self.threshold

    def score(self, predict, x):
        if self.overlays is None:
            raise ValueError("fit STRIP on held-out clean images first")
        return -strip_entropy(predict, x, self.overlays, copies=self.copies, seed=self.seed)

    def torch_score(self, forward, x, copies: int = 32):
        """Minus the mean entropy (bits) over ``copies`` blends of each input with overlays drawn afresh at each
        call (per input, as :meth:`score` draws them): an attack that calls it at every step follows the
        expectation over STRIP's random blends (EOT, Athalye et al. 2018); the judge is :meth:`score`."""
        import torch

        if self.overlays is None:
            raise ValueError("fit STRIP on held-out clean images first")
        if getattr(self, "_draws", None) is None:
            self._draws = np.random.default_rng(self.seed + 1)
        overlays = torch.from_numpy(self.overlays).to(x.device)
        entropy = 0
        for _ in range(copies):
            picks = torch.from_numpy(self._draws.integers(0, len(self.overlays), len(x))).to(x.device)
            p = torch.softmax(forward(0.5 * x + 0.5 * overlays[picks]), 1)
            entropy = entropy - (p * torch.log2(p.clamp_min(1e-12))).sum(1)
        return -entropy / copies


def published(name: str) -> dict | None:
    """What the report cites for a defence (a dataset defence, or STRIP, the input filter): its own ``published``
    (None where its paper's figures were not recorded)."""
    cls = DATASET_DEFENCES.get(name) if name in DATASET_DEFENCES else DETECTORS.get(name)
    return getattr(cls, "published", None)
