"""The stateful-detection probe: query attacks against an engine that keeps its query history (a reverse image
search, :mod:`dlforge.adversarial.stateful`)."""

from __future__ import annotations

import numpy as np

from dlforge.adversarial.attacks import make_attack
from dlforge.adversarial.attacks.base import QUERIES
from dlforge.adversarial.attacks.projection import project
from dlforge.adversarial.probes.base import PROBES, Probe
from dlforge.adversarial.stateful import Blacklight, SimilarityEncoder, Watched, benign_stream, oars_square
from dlforge.errors import InputError
from dlforge.reporting import Column

ATTACKS = ("square", "square+oars", "genetic", "substitute")
DETECTORS = ("blacklight", "encoder")


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


@PROBES.register("stateful")
class StatefulDetection(Probe):
    """Query attacks against each engine behind a stateful detector, the engine's query history as a search engine
    for near-duplicates of each query: ``detector=blacklight`` (Li et al., USENIX Security 2022: matched on hashed
    windows, parts, of the image) or ``detector=encoder`` (Chen, Carlini & Wagner 2019: k nearest earlier queries in
    a similarity encoder's space, trained here on the training images first).

    The false-positive rate is measured on a benign stream: ``benign`` test images (10,000 on MNIST: the whole test
    set), each once under a random benign transformation (shift, brightness, contrast, noise), through one history;
    and beside it on the same images as they are (a clean-digit stream shares blank-background windows that a
    photograph's noise would break: Blacklight's FPR on it is higher).
    Each attack runs on each of the first ``attacks`` audited points the engine gets right, one history per point
    (one attacker per image): Square (the audit's eps and --square-queries), GenAttack (the same budget), the
    substitute attack's labelling queries (Papernot et al.; one attacker, its PGD transferred) and OARS's adaptive
    Square (Feng et al. CCS 2023), which reads the refusals. Per attack: the share of attacks flagged, the median
    and largest query count at the first flag, the attack's success on the undefended engine, and its success when
    every flagged query is refused (no answer).

    Args:
        detector: ``blacklight`` (default) or ``encoder``.
        attacks: audited points attacked (default 50).
        benign: images of the benign stream (default 10000; the test set's size at most).
        eps: the attacks' L-inf budget (default: the audit's largest eps).
        step, window, top, threshold, salt: Blacklight's settings (:class:`dlforge.adversarial.stateful.Blacklight`;
            salt=-1: no salt).
        k, fpr: the encoder's neighbours (50) and the false-positive rate its threshold is set at on a benign stream
            of training images (0.005).
        substitute: include the substitute attack (default true; it trains twice, with and without refusals).
        seed: seed of the benign stream and the attacks.
    """

    name = "stateful"
    requires = frozenset({QUERIES})
    option_ranges = {"threshold": (1, None, True), "step": (1, 255, True), "eps": (0, None, False),
                     "salt": (-1, None, True), "fpr": (0, 1, False, False)}
    columns = (Column("target", fmt=lambda t: t[:24]), Column("attack"),
               Column("detected", "flagged", lambda v: _fmt(v, ".2f"), ">"),
               Column("first_detection_median", "1st flag (median q)", lambda v: _fmt(v, ".0f"), ">"),
               Column("first_detection_max", "(max)", lambda v: _fmt(v, ".0f"), ">"),
               Column("queries_median", "queries", lambda v: _fmt(v, ".0f"), ">"),
               Column("success", "success", lambda v: _fmt(v, ".2f"), ">"),
               Column("success_refused", "success if refused", lambda v: _fmt(v, ".2f"), ">"),
               Column("benign_fpr", "benign FPR", lambda v: _fmt(v, ".4f"), ">"),
               Column("benign_fpr_as_is", "(as is)", lambda v: _fmt(v, ".4f"), ">"))

    def __init__(self, *, detector: str = "blacklight", attacks: int = 50, benign: int = 10000, eps: float | None = None,
                 step: int = 50, window: int = 20, top: int = 50, threshold: int = 25, salt: int = 0, k: int = 50,
                 fpr: float = 0.005, substitute: bool = True, seed: int = 0):
        if detector not in DETECTORS:
            raise InputError(f"stateful:detector= takes {' or '.join(DETECTORS)}, got {detector!r}")
        if not 0 < fpr < 1:
            raise InputError(f"stateful:fpr= must lie in (0, 1), got {fpr}")
        self.detector, self.k, self.fpr = detector, k, fpr
        if threshold > top:
            raise InputError(f"stateful: threshold ({threshold}) cannot exceed top ({top})")
        self.attacks, self.benign, self.eps, self.substitute, self.seed = attacks, benign, eps, substitute, seed
        self.settings_ = dict(step=step, window=window, top=top, threshold=threshold, salt=None if salt < 0 else salt)

    def prepare(self, run) -> None:
        if self.eps is None and not any(e > 0 for e in run.options.eps):
            raise InputError("stateful: the attacks need an L-inf budget: give --eps > 0 or stateful:eps=E")
        if len(run.dataset.x_test) < 100:
            raise InputError(f"stateful: the benign stream needs >= 100 test images; {run.dataset.name} has "
                             f"{len(run.dataset.x_test)}")
        if self.detector == "encoder" and len(run.dataset.x_train) < 1000 + 2 * self.k:
            raise InputError(f"stateful:detector=encoder trains on the training split; {run.dataset.name} has "
                             f"{len(run.dataset.x_train)} training images (needs >= {1000 + 2 * self.k})")
        if self.substitute and len(run.dataset.x_val) < 10:
            raise InputError(f"stateful: the substitute attack draws its seeds from the validation split, and "
                             f"{run.dataset.name} has {len(run.dataset.x_val)} validation images: pass "
                             "stateful:substitute=false")

    def probe(self, run, show) -> dict:
        eps = self.eps if self.eps is not None else max(run.options.eps)
        budget = run.options.square_queries
        if self.detector == "encoder":
            show("training the similarity encoder")
            n_train = len(run.dataset.x_train)
            detector = SimilarityEncoder(run.dataset.x_train, run.value_range, k=self.k, fpr=self.fpr, seed=self.seed,
                                         train=min(5000, n_train // 2),
                                         calibrate=min(self.benign, n_train - min(5000, n_train // 2)))
        else:
            detector = Blacklight(**self.settings_, value_range=run.value_range)
        # the detector sees images, not the engine's answers: its false-positive rate is one for every engine
        show("benign stream")
        images = run.dataset.x_test[:self.benign].astype(np.float32)
        stream = benign_stream(images, run.value_range, self.seed)
        fpr = float(detector.history().flags(stream).mean())
        # the same images as they are: no shift, no noise (digits share their blank background windows)
        as_is = float(detector.history().flags(images).mean())
        rows = []
        for engine in run.engines:
            predict = lambda z, e=engine: e.predict(z, run.options.batch_size)  # noqa: E731
            ok = np.flatnonzero(run.clean[engine.label] == run.y)[:self.attacks]
            x, y = run.x[ok], run.y[ok]
            base = {"route": "query", "target": engine.label, "detector": detector.name, "eps": float(eps),
                    "benign_fpr": fpr, "benign_fpr_as_is": as_is, "benign_queries": len(stream), "points": len(ok),
                    "budget": budget}
            for kind in ATTACKS:
                if kind == "substitute" and not self.substitute:
                    continue
                show(f"{engine.label}: {kind} against {detector.name}")
                rows.append({**base, "attack": kind,
                             **self._attack(kind, predict, detector, x, y, eps, budget, run)})
        return {"rows": rows, "gallery": [],
                "notes": [f"stateful: {_describe(detector)}; one history per attacked point; 'success if refused': "
                          "every flagged query gets no answer (OARS's adaptive Square reads that as its signal)"]}

    def _attack(self, kind, predict, detector, x, y, eps, budget, run) -> dict:
        n = len(x)
        if n == 0:
            return {"detected": None, "success": None, "success_refused": None}
        if kind == "substitute":
            return self._substitute(predict, detector, x, y, eps, run)
        outcome = {"success": None}  # OARS is written against refusals: it has no undefended run
        for refuse in (False, True):
            if kind == "square+oars" and not refuse:
                continue
            watched = Watched(predict, detector, n, refuse=refuse)
            x_adv = np.empty_like(x)
            for i in range(n):
                one = lambda z, i=i: watched(z, np.full(len(z), i))  # noqa: E731
                if kind == "square+oars":
                    x_adv[i], _ = oars_square(one, x[i], int(y[i]), eps=eps, queries=budget,
                                              value_range=run.value_range, seed=self.seed + i)
                else:
                    spec = "square" if kind == "square" else "genetic"
                    attack = make_attack(spec, queries=budget, seed=self.seed + i)
                    x_adv[i:i + 1] = attack.run(one, x[i:i + 1], y[i:i + 1], eps=eps,
                                                value_range=run.value_range).x_adv
            x_adv = project(x_adv, x, eps, "linf", run.value_range)
            success = float((predict(x_adv).argmax(1) != y).mean())  # judged on the undefended engine
            if refuse:
                outcome["success_refused"] = success
                outcome["refused_queries_median"] = float(np.median(watched.refused))
            else:
                outcome["success"] = success
            if not refuse or kind == "square+oars":
                outcome.update(_detection(watched))
        return outcome

    def _substitute(self, predict, detector, x, y, eps, run) -> dict:
        from dlforge.adversarial.attacks import Target
        from dlforge.adversarial.attacks.torch_model import TorchModel
        from dlforge.adversarial.probes.substitute import SubstituteAttack

        sub = SubstituteAttack(eps=eps, seed=self.seed, seeds=min(150, len(run.dataset.x_val)))  # 150: Papernot's
        seeds = run.dataset.x_val[:sub.seeds].astype(np.float32)
        outcome = {}
        for refuse in (False, True):
            watched = Watched(predict, detector, 1, refuse=refuse)

            def oracle(z):
                logits = watched(z, np.zeros(len(z), dtype=np.int64))
                return np.where(np.isnan(logits).any(1), -1, np.nan_to_num(logits).argmax(1))

            module, _ = sub.train_substitute(oracle, seeds, predict(seeds[:1]).shape[1], run.value_range)
            x_adv = make_attack("pgd", seed=self.seed).craft(Target.of(TorchModel(module), run.options.batch_size),
                                                             x, y, eps=eps, value_range=run.value_range).x_adv
            success = float((predict(project(x_adv, x, eps, "linf", run.value_range)).argmax(1) != y).mean())
            outcome["success_refused" if refuse else "success"] = success
            if not refuse:
                outcome.update(_detection(watched))
        return outcome


def _describe(detector) -> str:
    if isinstance(detector, Blacklight):
        return (f"Blacklight step {detector.step}, window {detector.window}, top {detector.top}, threshold "
                f"{detector.threshold}")
    return (f"similarity encoder, k {detector.k}, threshold {detector.threshold:.4g} (mean k-NN distance; clears the "
            "history on a detection)")


def _detection(watched: Watched) -> dict:
    hit = watched.first > 0
    return {"detected": float(hit.mean()),
            "first_detection_median": float(np.median(watched.first[hit])) if hit.any() else None,
            "first_detection_max": int(watched.first[hit].max()) if hit.any() else None,
            "queries_median": float(np.median(watched.queries))}
