"""Learned detectors on the deployed engine's features (:mod:`dlforge.adversarial.features`).

Both are fitted per engine, on that engine's own activations (fp32 and INT8 engines get their own), from labelled
*training* images; the audit sets their thresholds on held-out test images and measures their false-positive rate
on the audited ones, three disjoint sets.

- ``mahalanobis`` (Lee, Lee, Lee & Shin, "A Simple Unified Framework for Detecting Out-of-Distribution Samples and
  Adversarial Attacks", NeurIPS 2018; reference ``pokaxpoka/deep_Mahalanobis_detector``): class-conditional
  Gaussians with one shared covariance on the penultimate features; the score is the distance to the nearest class
  mean, ``min_c (f - mu_c)^T Sigma^-1 (f - mu_c)`` (minus the paper's confidence ``M(x)``). Left out: the input
  pre-processing step and the logistic regression over several layers, which Lee et al. tune on adversarial
  examples (their Table 2); this form is tuned on no attack.
- ``lid`` (Ma et al., "Characterizing Adversarial Subspaces Using Local Intrinsic Dimensionality", ICLR 2018;
  reference ``xingjunm/lid_adversarial_subspace_detection``): at every layer, the maximum-likelihood LID estimate
  ``-(1/k sum_i log(r_i / r_k))^-1`` from the ``k`` nearest of a clean reference batch, and a logistic regression
  over the layers trained on clean, noisy (negative) and adversarial (positive) training images. It is **tuned on a
  known attack** (``tuned=fgsm`` by default, at the audit's largest L-inf eps, crafted as the audit crafts): its
  rows say which attack (and eps) it saw, and every other attack of the audit is one it did not. Deviations: Ma et
  al. take the neighbours from the minibatch being scored; here the reference batch is a fixed set of clean
  training images, so a score does not depend on what else is in the batch (and an attacker cannot poison the
  neighbours); their noisy negatives carry Gaussian noise of the adversarial examples' L2 size, these +-eps noise
  of random sign (the same L-inf size as the attack, the budget an L-inf audit states).

Both give the adaptive attacks a differentiable score through the engine's converted graph.
"""

from __future__ import annotations

import numpy as np

from dlforge.adversarial.detectors import DETECTORS, Detector
from dlforge.adversarial.features import EngineFeatures, torch_values
from dlforge.errors import InputError


def _training(run, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    ds = run.dataset
    if getattr(ds, "evaluation_only", False) or len(ds.y_train) == 0:
        raise InputError(f"learned detectors are fitted on labelled training images; {ds.name} is an evaluation set "
                         "without any: audit with the model's training dataset (--data)")
    idx = np.random.default_rng(seed).permutation(len(ds.y_train))[:limit]
    return ds.x_train[idx].astype(np.float32), ds.y_train[idx].astype(np.int64)


class FeatureDetector(Detector):
    """A detector fitted on one engine's features: :meth:`prepare` reads them before the threshold is set."""

    which = "penultimate"

    def __init__(self, argument=None, *, fpr: float = 0.05):
        super().__init__(argument, fpr=fpr)
        self.features: EngineFeatures | None = None
        self.agreement = None

    def prepare(self, engine, run, held_out: np.ndarray) -> None:
        self.close()
        self.features = EngineFeatures(engine, self.which, check=held_out[:256])
        self.agreement = self.features.agreement
        self.names = self.features.names

    def fit(self, predict, x_clean):
        if self.features is None:
            raise ValueError(f"{self.name} is fitted on an engine's features: call prepare(engine, run, held_out) first")
        return super().fit(predict, x_clean)

    def close(self) -> None:
        if self.features is not None:
            self.features.close()
            self.features = None


@DETECTORS.register("mahalanobis")
class Mahalanobis(FeatureDetector):
    """Distance to the nearest class mean on the engine's penultimate features (Lee et al. 2018).

    Args:
        train: labelled training images the class means and shared covariance are estimated on.
        fpr: false-positive rate on held-out clean images that sets the threshold.
    """

    name = "mahalanobis"
    option_ranges = {"fpr": (0, 1, False, False), "train": (10, None, True, True)}

    def __init__(self, argument=None, *, train: int = 5000, fpr: float = 0.05):
        super().__init__(argument, fpr=fpr)
        self.train = train

    def prepare(self, engine, run, held_out):
        super().prepare(engine, run, held_out)
        x, y = _training(run, self.train, run.options.seed)
        (f,) = self.features(x)
        f = f.astype(np.float64)
        classes = np.unique(y)
        self.means = np.stack([f[y == c].mean(0) for c in classes])
        centred = f - self.means[np.searchsorted(classes, y)]
        cov = centred.T @ centred / len(f)
        self.precision = np.linalg.pinv(cov, hermitian=True)

    def score(self, predict, x):
        (f,) = self.features(x)
        d = f.astype(np.float64)[:, None, :] - self.means[None]
        return np.einsum("ncd,de,nce->nc", d, self.precision, d).min(1)

    def torch_score(self, forward, x):
        import torch

        (f,) = torch_values(forward, self.names, x)
        # in float64, as the engine-side score: the precision matrix's large eigenvalues amplify float32 rounding
        means = torch.as_tensor(self.means, dtype=torch.float64, device=f.device)
        precision = torch.as_tensor(self.precision, dtype=torch.float64, device=f.device)
        d = f.double()[:, None, :] - means[None]
        return torch.einsum("ncd,de,nce->nc", d, precision, d).min(1).values.to(x.dtype)


def lid(distances, k: int):
    """The maximum-likelihood LID estimate from each row's distances to a reference set (numpy or torch)."""
    if isinstance(distances, np.ndarray):
        r = np.sort(distances, 1)[:, :k]
        r = np.maximum(r, 1e-12)
        return -1.0 / (np.log(r / r[:, -1:]).mean(1) - 1e-12)
    import torch

    r = torch.topk(distances, k, dim=1, largest=False).values.clamp_min(1e-12)
    return -1.0 / (torch.log(r / r[:, -1:]).mean(1) - 1e-12)


@DETECTORS.register("lid")
class LID(FeatureDetector):
    """Local intrinsic dimensionality at every layer of the engine, and a logistic regression over them (Ma et al.
    2018), tuned on a known attack.

    Args:
        tuned: the attack its logistic regression is trained on (``fgsm`` or ``pgd``, at the audit's largest
            L-inf eps); every other attack is one it did not see.
        k: nearest neighbours of the LID estimate (20 in Ma et al.'s CIFAR setting).
        reference: clean training images the neighbours are drawn from (Ma et al.'s minibatch: 100).
        train: clean training images for the logistic regression (each also noisy and attacked).
        fpr: false-positive rate on held-out clean images that sets the threshold.
    """

    name = "lid"
    which = "layers"
    needs_gradients = True
    option_ranges = {"fpr": (0, 1, False, False), "k": (2, None, True, True), "reference": (10, None, True, True),
                     "train": (20, None, True, True)}

    def __init__(self, argument=None, *, tuned: str = "fgsm", k: int = 20, reference: int = 100, train: int = 500,
                 fpr: float = 0.05):
        super().__init__(argument, fpr=fpr)
        if tuned not in ("fgsm", "pgd"):
            raise InputError(f"lid:tuned= takes fgsm or pgd (the attack it is trained on), got {tuned!r}")
        if k >= reference:
            raise InputError(f"lid: k ({k}) must be below the reference batch ({reference})")
        self.tuned_on, self.k, self.reference, self.train = tuned, k, reference, train

    def prepare(self, engine, run, held_out):
        super().prepare(engine, run, held_out)
        x, y = _training(run, self.reference + self.train, run.options.seed)
        self.ref = [f.astype(np.float64) for f in self.features(x[:self.reference])]
        self.x_train, self.y_train = x[self.reference:], y[self.reference:]
        from dlforge.adversarial.adaptive import crafting_model

        model, _ = crafting_model(run, engine)
        if model is None:
            raise InputError(f"lid is trained on {self.tuned_on} examples and there is no differentiable model of "
                             f"{engine.label} to craft them on (--engine-gradients off and no --source)")
        eps = max((e for e in run.options.eps if e > 0), default=None)
        if eps is None:
            raise InputError("lid is trained on L-inf adversarial examples: give an eps > 0 (--eps)")
        self.tuned_eps = eps
        from dlforge.adversarial.adaptive import adaptive_steps
        from dlforge.adversarial.attacks import make_attack

        attack = make_attack(self.tuned_on, **({"steps": adaptive_steps(run.options), "seed": run.options.seed}
                                               if self.tuned_on == "pgd" else {}))
        adv = model.attack(attack, self.x_train, self.y_train, eps=eps, value_range=run.value_range,
                           batch_size=run.options.batch_size)
        rng = np.random.default_rng(run.options.seed)
        lo, hi = run.value_range
        # noise of the same L-inf size, signs at random (see the module docstring)
        noisy = np.clip(self.x_train + eps * rng.choice([-1.0, 1.0], size=self.x_train.shape), lo, hi).astype(np.float32)
        engine_pred = engine.predict(adv, run.options.batch_size).argmax(1)
        ok = engine.predict(self.x_train, run.options.batch_size).argmax(1) == self.y_train
        # the LIDs of the regression's examples, kept: a retraining round adds only its new positives' LIDs
        self.negative_lids = self._lids(np.concatenate([self.x_train, noisy]))
        self.positive_lids = [self._lids(adv[ok & (engine_pred != self.y_train)])]
        self._fit_regression()

    def retrain(self, adversarial: np.ndarray) -> None:
        """Add ``adversarial`` to the positives and train the regression again (one round of the arms race)."""
        self.positive_lids.append(self._lids(adversarial))
        self._fit_regression()

    def _fit_regression(self) -> None:
        from sklearn.linear_model import LogisticRegression

        positives = np.concatenate(self.positive_lids)
        if len(positives) < 5:
            raise InputError(f"lid: only {len(positives)} successful {self.tuned_on} examples on the training images "
                             f"at eps {self.tuned_eps}; raise --eps or lid:train")
        features = np.concatenate([self.negative_lids, positives])
        labels = np.r_[np.zeros(len(self.negative_lids)), np.ones(len(positives))]
        self.mean, self.std = features.mean(0), features.std(0) + 1e-8
        weight = {0: 0.5 / (labels == 0).mean(), 1: 0.5 / (labels == 1).mean()}  # balanced classes
        reg = LogisticRegression(C=1.0, max_iter=2000, class_weight=weight).fit((features - self.mean) / self.std,
                                                                              labels)
        self.coef, self.intercept = reg.coef_[0], float(reg.intercept_[0])

    def _lids(self, x: np.ndarray) -> np.ndarray:
        out = []
        for f, ref in zip(self.features(x), self.ref):
            f = f.astype(np.float64)
            d2 = (f * f).sum(1)[:, None] + (ref * ref).sum(1)[None] - 2 * f @ ref.T
            out.append(lid(np.sqrt(np.maximum(d2, 0)), self.k))
        return np.stack(out, 1)

    def score(self, predict, x):
        return ((self._lids(x) - self.mean) / self.std) @ self.coef + self.intercept

    def torch_score(self, forward, x):
        import torch

        lids = []
        for f, ref in zip(torch_values(forward, self.names, x), self.ref):
            # in float64, as the engine-side score: the estimate divides by log-ratios of near-equal distances
            r = torch.as_tensor(ref, dtype=torch.float64, device=f.device)
            lids.append(lid(torch.cdist(f.double(), r), self.k))
        as64 = (lambda a: torch.as_tensor(a, dtype=torch.float64, device=x.device))  # noqa: E731
        z = (torch.stack(lids, 1) - as64(self.mean)) / as64(self.std)
        return (z @ as64(self.coef) + self.intercept).to(x.dtype)
