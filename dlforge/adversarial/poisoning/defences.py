"""Poison detection: activation clustering and spectral signatures on the training set, STRIP on
the engine at inference time. Each is scored against the known poisoned indices."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

import numpy as np

from dlforge.adversarial.detectors import DETECTORS, Detector
from dlforge.registry import Registry



def penultimate(model, x: np.ndarray, *, batch_size: int = 512, device: str = "cpu") -> np.ndarray:
    """Activations entering the model's last linear layer (its last hidden representation)."""
    import torch

    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    captured = []
    hook = last.register_forward_hook(lambda mod, inp, out: captured.append(inp[0].detach().float().cpu().numpy()))
    model.eval()
    try:
        with torch.inference_mode():
            for i in range(0, len(x), batch_size):
                model(torch.from_numpy(x[i:i + batch_size]).to(device))
    finally:
        hook.remove()
    return np.concatenate(captured)


def reclassification_rate(x: np.ndarray, y: np.ndarray, cluster: np.ndarray, label: int) -> float:
    """Share of a cluster's samples whose raw pixels lie nearer another class's mean image than their label's.

    A light form of Chen et al.'s exclusionary reclassification (a nearest-centroid classifier on
    pixels instead of a retrained network): backdoored samples are other classes' images wearing a
    trigger, so in pixel space most of them still sit with their source classes.
    """
    flat = x.reshape(len(x), -1)
    centroids = np.stack([flat[y == c].mean(0) for c in range(int(y.max()) + 1)])
    members = flat[cluster]
    d = (members ** 2).sum(1)[:, None] - 2 * members @ centroids.T + (centroids ** 2).sum(1)[None]
    return float((d.argmin(1) != label).mean())


def activation_clustering(features: np.ndarray, x: np.ndarray, y: np.ndarray, *, components: int = 10,
                          seed: int = 0) -> tuple[np.ndarray, list[dict]]:
    """Chen et al. 2018: per class, reduce last-hidden activations (PCA) and split them with 2-means.
    A cluster is poison when most of it (> 50%) is reclassified to other classes *and* markedly
    more of it than of its sibling cluster (by > 30 points): a class merely written in two styles
    splits into two clusters that both stay with their label.

    Returns a boolean mask of flagged training samples and per-class details (silhouette score,
    cluster sizes, each cluster's reclassification rate).
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score

    flagged = np.zeros(len(y), dtype=bool)
    details = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if len(idx) < 10:
            continue
        reduced = PCA(n_components=min(components, features.shape[1], len(idx) - 1), random_state=seed).fit_transform(
            features[idx])
        labels = KMeans(n_clusters=2, n_init=5, random_state=seed).fit_predict(reduced)
        sample = np.random.default_rng(seed).choice(len(idx), size=min(len(idx), 2000), replace=False)
        silhouette = float(silhouette_score(reduced[sample], labels[sample]))
        rates = [reclassification_rate(x, y, idx[labels == k], int(c)) for k in (0, 1)]
        poison = [k for k in (0, 1) if rates[k] > 0.5 and rates[k] - rates[1 - k] > 0.3]
        for k in poison:
            flagged[idx[labels == k]] = True
        details.append({"class": int(c), "silhouette": silhouette,
                        "cluster_sizes": [int((labels == k).sum()) for k in (0, 1)],
                        "reclassified_elsewhere": rates, "flagged_clusters": poison})
    return flagged, details


def spectral_signatures(features: np.ndarray, y: np.ndarray, expected_poisons: int, *,
                        factor: float = 1.5) -> tuple[np.ndarray, list[dict]]:
    """Tran et al. 2018: score each sample by its squared projection on its class's top singular
    vector of centred representations; remove the ``factor`` x expected poison count highest.

    Scores are divided by their class's total variance so that classes compare: in a poisoned class
    the top direction carries the poison/clean split and most of the variance.
    """
    scores = np.zeros(len(y))
    details = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        centred = features[idx] - features[idx].mean(0)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        total = float((centred ** 2).sum(1).mean()) or 1.0
        scores[idx] = (centred @ vt[0]) ** 2 / total
        details.append({"class": int(c), "top_direction_variance_share": float(s[0] ** 2 / max((s ** 2).sum(), 1e-12))})
    remove = min(len(y), int(round(factor * expected_poisons)))
    flagged = np.zeros(len(y), dtype=bool)
    flagged[np.argsort(-scores)[:remove]] = True
    return flagged, details


def detection_rates(flagged: np.ndarray, poisoned: np.ndarray) -> dict:
    truth = np.zeros(len(flagged), dtype=bool)
    truth[poisoned] = True
    tp, fp = int((flagged & truth).sum()), int((flagged & ~truth).sum())
    return {"true_positive_rate": tp / max(int(truth.sum()), 1), "false_positive_rate": fp / max(int((~truth).sum()), 1),
            "flagged": int(flagged.sum()), "true_positives": tp, "false_positives": fp}


def per_class_rates(flagged: np.ndarray, poisoned: np.ndarray, y: np.ndarray) -> list[dict]:
    truth = np.zeros(len(flagged), dtype=bool)
    truth[poisoned] = True
    out = []
    for c in np.unique(y):
        m = y == c
        out.append({"class": int(c), **{k: v for k, v in detection_rates(flagged[m], np.flatnonzero(truth[m])).items()
                                         if k in ("true_positive_rate", "false_positive_rate", "flagged")}})
    return out


def strip_entropy(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, overlays: np.ndarray, *,
                  copies: int = 20, seed: int = 0) -> np.ndarray:
    """Gao et al. 2019 (STRIP): mean prediction entropy of each input blended with ``copies`` clean
    images. A trigger survives the blending and keeps predictions confident: low entropy."""
    from dlforge.adversarial.squeezing import softmax

    rng = np.random.default_rng(seed)
    entropy = np.zeros(len(x))
    for _ in range(copies):
        pick = overlays[rng.integers(0, len(overlays), len(x))]
        logits = predict(((x + pick) / 2).astype(np.float32))
        p = softmax(logits)
        entropy += -(p * np.log(np.clip(p, 1e-12, 1))).sum(1)
    return entropy / copies


def strip_detection(clean_entropy: np.ndarray, armed_entropy: np.ndarray, fpr: float) -> dict:
    """Threshold at the ``fpr`` quantile of clean entropies; flag inputs below it."""
    threshold = float(np.quantile(clean_entropy, fpr))
    return {"threshold": threshold, "target_false_positive_rate": fpr,
            "false_positive_rate": float((clean_entropy < threshold).mean()),
            "true_positive_rate": float((armed_entropy < threshold).mean())}


class DatasetDefence(ABC):
    """A defence that inspects the (possibly poisoned) training set and flags samples to remove.

    ``flag`` receives the trained model's last-hidden-layer features of every training sample, the
    samples, their labels and the number of poisons the defender expects; it returns a boolean mask
    of flagged samples and per-class details for the report.
    """

    name = ""

    @abstractmethod
    def flag(self, features: np.ndarray, x: np.ndarray, y: np.ndarray, *, expected_poisons: int,
             seed: int = 0) -> tuple[np.ndarray, list[dict]]:
        """Boolean mask of flagged samples, and details."""


DATASET_DEFENCES: Registry[type[DatasetDefence]] = Registry("dataset defence",
                                                             ["dlforge.adversarial.poisoning.defences"])


@DATASET_DEFENCES.register("activation-clustering")
class ActivationClustering(DatasetDefence):
    """Activation clustering (Chen et al. 2018); see :func:`activation_clustering`."""

    def flag(self, features, x, y, *, expected_poisons, seed=0):
        return activation_clustering(features, x, y, seed=seed)


@DATASET_DEFENCES.register("spectral-signatures")
class SpectralSignatures(DatasetDefence):
    """Spectral signatures (Tran et al. 2018); see :func:`spectral_signatures`."""

    def flag(self, features, x, y, *, expected_poisons, seed=0):
        return spectral_signatures(features, y, expected_poisons)


@DETECTORS.register("strip")
class Strip(Detector):
    """STRIP (Gao et al. 2019) as an input filter on the engine: the score is minus the mean prediction
    entropy of the input blended with clean images (a trigger keeps predictions confident). ``fit``
    takes held-out clean images: they are the blending pool and set the threshold at ``fpr``."""

    def __init__(self, argument: str | None = None, *, fpr: float = 0.01, copies: int = 20, seed: int = 0):
        super().__init__(argument, fpr=fpr)
        self.copies, self.seed, self.overlays = copies, seed, None

    def fit(self, predict, x_clean):
        self.overlays = x_clean
        return super().fit(predict, x_clean)

    def score(self, predict, x):
        if self.overlays is None:
            raise ValueError("fit STRIP on held-out clean images first")
        return -strip_entropy(predict, x, self.overlays, copies=self.copies, seed=self.seed)
