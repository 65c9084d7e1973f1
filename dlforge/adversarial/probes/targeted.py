"""Targeted attacks: make the model answer a class the attacker chose ("make it hear *go*")."""

from __future__ import annotations

import numpy as np

from dlforge.adversarial.attacks.base import GRADIENTS
from dlforge.adversarial.attacks.genetic import genetic_search
from dlforge.adversarial.attacks.projection import project
from dlforge.adversarial.probes import gradient_routes, log_probabilities
from dlforge.adversarial.probes.base import PROBES, Probe
from dlforge.adversarial.records import QUERY, TRANSFER
from dlforge.errors import InputError
from dlforge.reporting import Column


def targeted_fitness(predict, target: np.ndarray, population: int):
    """Alzantot et al.'s fitness: log p(target) - log sum of the other classes' p, on the engine's outputs."""
    def fitness(cands: np.ndarray, rows: np.ndarray):
        n, p = cands.shape[:2]
        logp = log_probabilities(predict(cands.reshape(n * p, *cands.shape[2:])))
        t = np.repeat(target[rows], p)
        own = logp[np.arange(len(t)), t]
        others = logp.copy()
        others[np.arange(len(t)), t] = -np.inf
        rest = np.logaddexp.reduce(others, axis=1)
        reached = logp.argmax(1) == t
        return (own - rest).reshape(n, p), reached.reshape(n, p)
    return fitness


@PROBES.register("targeted")
class Targeted(Probe):
    """Targeted PGD (source, transfer, each engine's own graph) and a targeted genetic attack on each engine.

    Untargeted robust accuracy says how often a model can be made wrong; the threat of a voice assistant
    that opens a web page on a sound is the *targeted* one: the attacker picks the answer. Carlini & Wagner
    ("Audio Adversarial Examples", 2018) state audio budgets in dB relative to the clip, dB_x(delta) =
    20 log10 max|delta| - 20 log10 max|x|; Alzantot, Balaji, Srivastava ("Did you hear that? Adversarial
    examples against automatic speech recognition", 2018, https://arxiv.org/abs/1801.00554) reach 87% targeted
    success on a Speech Commands CNN with a genetic algorithm that only queries the model.

    Every point whose true class is not the target is attacked; *success* is the share the judge then
    classifies as the target. Gradient rows: PGD descending the cross-entropy to the target (random start,
    step 2.5 eps / steps), crafted on the source (judged on the source and, by transfer, on each engine) and on
    each engine's own graph. Query rows: the genetic search (:func:`dlforge.adversarial.attacks.genetic.
    genetic_search`, population and selection as GenAttack) with Alzantot et al.'s fitness log p(target) -
    log sum_other p, on each engine; *queries* is the median number of engine calls of the successful points.

    Args:
        target: the class to make the model answer, by label (``go``) or index (default: the last class).
        db: audio models: the budget in dB_x (default -30); eps: image models: the L-inf budget (default 0.1).
        steps: PGD steps (default 100). queries: the genetic search's budget per point (default 2000; Alzantot
            et al. allow up to 500 generations of 20). population: its size (default 10).
        points: audited points attacked (default 100). genetic: run the query rows (default true).
        seed: seed of the random starts and the search.
    """

    name = "targeted"
    modalities = ("image", "audio")
    requires = frozenset({GRADIENTS})
    option_ranges = {"db": (float("-inf"), 0, True), "eps": (0, None, True)}
    columns = (Column("route"), Column("target", fmt=lambda t: t[:32]), Column("attack"),
               Column("goal"), Column("eps", fmt="g", align=">"), Column("db", "dB_x", ".1f", ">"),
               Column("success", "targeted success", ".4f", ">"), Column("queries", "median queries", ".0f", ">"),
               Column("points", "of", "d", ">"))

    def __init__(self, *, target: str | None = None, db: float = -30.0, eps: float = 0.1, steps: int = 100,
                 queries: int = 2000, population: int = 10, points: int = 100, genetic: bool = True, seed: int = 0):
        if steps < 1 or points < 1 or population < 2 or queries < population:
            raise ValueError("steps and points must be >= 1, population >= 2, and queries must cover one population")
        self.target, self.db, self.eps, self.steps, self.queries = target, db, eps, steps, queries
        self.population, self.points, self.genetic, self.seed = population, points, genetic, seed

    def prepare(self, run) -> None:
        labels = list(run.dataset.labels)
        if self.target is None:
            self.goal = len(labels) - 1
        elif self.target in labels:
            self.goal = labels.index(self.target)
        elif str(self.target).isdigit() and int(self.target) < len(labels):
            self.goal = int(self.target)
        else:
            raise InputError(f"targeted:target={self.target} is not a class of {run.dataset.name} "
                             f"({', '.join(labels[:12])}{' ...' if len(labels) > 12 else ''}); name one, or its index")
        info = run.engines[0].info
        audio = info is not None and info.is_audio
        if audio:
            from dlforge.data.wav import eps_from_db

            self.budget = eps_from_db(self.db, info.audio_peak)
        else:
            self.budget = self.eps
        self.audio = dict(info.audio) if audio else None

    def probe(self, run, show) -> dict:
        keep = np.flatnonzero(run.y != self.goal)[:self.points]
        if not len(keep):
            raise InputError(f"targeted: every audited point is already {run.dataset.labels[self.goal]}; raise "
                             "--samples or choose another target")
        x, y = run.x[keep], run.y[keep]
        goal = np.full(len(y), self.goal, dtype=np.int64)
        name = run.dataset.labels[self.goal]
        rows, gallery = [], []
        db = self.db if self.audio else None
        for route, source, model, judges in gradient_routes(run):
            show(f"targeted PGD to {name} on {source}")
            crafted = self.pgd(model, x, goal, run.value_range, run.options.batch_size)
            x_adv = project(crafted, x, self.budget, "linf", run.value_range)
            for judge_name, judge in judges.items():
                hit = judge(x_adv).argmax(1) == goal
                rows.append({"route": route if judge_name == source else TRANSFER, "target": judge_name,
                             "attack": "pgd", "goal": name, "eps": self.budget, "db": db,
                             "success": float(hit.mean()), "queries": None, "points": int(len(y))})
                if judge_name == source and not gallery:
                    gallery = self._gallery(x, x_adv, hit, judge(x).argmax(1), run, f"PGD on {source}")
        if self.genetic:
            for engine in run.engines:
                show(f"targeted genetic search to {name} on {engine.label}")
                predict = lambda z, e=engine: e.predict(z, run.options.batch_size)  # noqa: E731
                x_adv, used, reached, _ = genetic_search(
                    targeted_fitness(predict, goal, self.population), x, eps=self.budget, value_range=run.value_range,
                    queries=self.queries, population=self.population, seed=self.seed, rho=(0.05, 0.05),
                    alpha=(1.0, 1.0))
                hit = predict(project(x_adv, x, self.budget, "linf", run.value_range)).argmax(1) == goal
                rows.append({"route": QUERY, "target": engine.label, "attack": "genetic", "goal": name,
                             "eps": self.budget, "db": db, "success": float(hit.mean()),
                             "queries": float(np.median(used[hit])) if hit.any() else None, "points": int(len(y))})
        budget = f"{self.db:g} dB_x (eps {self.budget:.4g})" if self.audio else f"eps {self.budget:g}"
        return {"rows": rows, "gallery": gallery,
                "notes": [f"target: {name}; budget {budget}; {len(y)} points whose true class is not {name}; PGD "
                          f"{self.steps} steps; genetic: population {self.population}, up to {self.queries} queries "
                          "per point"]}

    def pgd(self, model, x: np.ndarray, goal: np.ndarray, value_range, batch_size: int) -> np.ndarray:
        """Targeted L-inf PGD: descend the cross-entropy to ``goal`` (random start, step 2.5 eps / steps)."""
        from dlforge.adversarial.attacks.pgd import PGD

        return model.attack(PGD(steps=self.steps, seed=self.seed), x, goal, eps=self.budget, value_range=value_range,
                            batch_size=batch_size, target=goal)

    def _gallery(self, x, x_adv, hit, clean_pred, run, how: str) -> list[dict]:
        labels = run.dataset.labels
        idx = np.flatnonzero(hit)[:3]
        if self.audio:
            return [{"title": f"{how}: {labels[clean_pred[i]]} -> heard {labels[self.goal]}", "clean": x[i].tolist(),
                     "audio": x_adv[i].tolist(), "sample_rate": self.audio["sample_rate"]} for i in idx]
        return [{"title": f"{labels[clean_pred[i]]} -> {labels[self.goal]}", "image": x_adv[i].tolist()} for i in idx]
