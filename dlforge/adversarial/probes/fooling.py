"""Fooling images: unrecognizable inputs that a network classifies with near-certain confidence.

Nguyen, Yosinski, Clune, "Deep Neural Networks are Easily Fooled: High Confidence Predictions for
Unrecognizable Images", CVPR 2015, https://arxiv.org/abs/1412.1897. They evolved images that MNIST
and ImageNet networks label with >= 99.99% confidence, and produced more by gradient ascent. Two
probes, one per way of searching:

- ``fooling``: gradient ascent on a class's log-probability from uniform noise, with the source's
  gradients (judged on the source and, by transfer, on each engine) and with each engine graph's
  own (judged on that engine);
- ``fooling-evo``: the paper's MNIST search, MAP-Elites with the direct encoding, run against each
  engine with queries only (no gradients): one elite per class, offspring of random elites with
  each pixel mutated with probability ``mutation_rate`` by polynomial mutation of strength 15.

"Unrecognizable" is judged, not assumed: an image counts only if it resembles no training image
more than uniform noise does (its largest absolute correlation with a training image is at or below the
99.9% quantile of noise's; :class:`dlforge.adversarial.probes.Resemblance`); the evolutionary search
never keeps an elite that does not. The judge catches a digit's shape drawn faintly into noise
(an earlier L2-distance yardstick did not: noise kept every image far from every digit, legible or
not). Both searches also stop at the confidence bar (further search draws the shape in), and each
class's image is in the JSON and the HTML gallery for a person to judge. Per route and target, a
row gives the classes reached at ``confidence`` or more, the lowest and median best confidence
over classes, and the queries spent.
"""

from __future__ import annotations

import math

import numpy as np

from dlforge.adversarial.attacks.base import GRADIENTS, QUERIES
from dlforge.adversarial.probes.base import PROBES, Probe
from dlforge.adversarial.probes import gradient_routes, log_probabilities, resemblance
from dlforge.adversarial.records import QUERY, TRANSFER
from dlforge.reporting import Column

COLUMNS = (Column("route"), Column("target", fmt=lambda t: t[:32]),
           Column("fooled", "classes >= bar", align=">"), Column("min_confidence", "min conf", ".6f", ">"),
           Column("median_confidence", "median conf", ".6f", ">"),
           Column("max_resemblance_ratio", "max resemb/bar", ".2f", ">"), Column("queries", "queries", "d", ">"))


def _class_rows(images, logp, known, labels) -> list[dict]:
    scores = known.scores(images)
    judged = known.verdict(scores)
    return [{"class": labels[c] if c < len(labels) else str(c), "confidence": float(np.exp(logp[c, c])),
             "resemblance": float(scores[c]), "resemblance_ratio": float(scores[c] / known.bar),
             "unrecognizable": bool(judged[c])}
            for c in range(len(images))]


def _row(route: str, target: str, per_class: list[dict], confidence: float, queries: int | None) -> dict:
    conf = np.array([p["confidence"] if p["unrecognizable"] else 0.0 for p in per_class])
    fooled = int((conf >= confidence).sum())
    return {"route": route, "target": target, "fooled": f"{fooled}/{len(per_class)}", "classes_fooled": fooled,
            "classes": len(per_class), "confidence_bar": confidence, "min_confidence": float(conf.min()),
            "median_confidence": float(np.median(conf)),
            "max_resemblance_ratio": float(max(p["resemblance_ratio"] for p in per_class)),
            "queries": queries, "per_class": per_class}


def _unjudged(known) -> dict | None:
    """The section of a probe that cannot judge "unrecognizable" on this data: said, not searched."""
    if known.judgeable:
        return None
    return {"rows": [], "gallery": [], "resemblance": known.describe(), "notes": [known.note()]}


def _gallery(route: str, target: str, images: np.ndarray, per_class: list[dict]) -> list[dict]:
    return [{"group": f"{route} on {target}", "title": f"{p['class']} {p['confidence']:.4f}",
             "image": images[c].tolist()} for c, p in enumerate(per_class)]


@PROBES.register("fooling")
class FoolingImages(Probe):
    """Fooling images by gradient ascent from noise: the confidence reached per class on unrecognizable inputs.

    Nguyen, Yosinski, Clune, CVPR 2015, https://arxiv.org/abs/1412.1897 (their gradient-ascent
    images). From ``starts`` uniform-noise images per class, up to ``steps`` signed-gradient steps of
    ``step_size`` on the class's log-probability, each image kept within ``radius`` (L-inf, a share of
    the value range) of its starting noise, and stopped once it reaches ``confidence``: ascending
    further only draws the class's shape into the noise (on the MNIST LeNet, 100 unbounded steps
    made the 0, 3, 8 and 9 legible). Per class, the best image among those still unrecognizable.

    Args:
        steps: most ascent steps (default 100).
        step_size: L-inf size of each step, in value units (default 0.01).
        radius: the most any pixel may move from its starting noise, as a share of the value range (default 0.3).
        starts: noise images per class (default 8).
        confidence: the bar a class must reach to count as fooled (default 0.99).
        seed: seed of the noise.
    """

    name = "fooling"
    option_ranges = {"confidence": (0, 1, False)}
    requires = frozenset({GRADIENTS})
    columns = COLUMNS

    def __init__(self, *, steps: int = 100, step_size: float = 0.01, radius: float = 0.3, starts: int = 8,
                 confidence: float = 0.99, seed: int = 0):
        if steps < 1 or starts < 1:
            raise ValueError(f"steps and starts must be >= 1, got {steps} and {starts}")
        if not 0 < step_size:
            raise ValueError(f"step_size must be > 0, got {step_size}")
        if not 0 < radius <= 1:
            raise ValueError(f"radius is a share of the value range, in (0, 1], got {radius}")
        self.radius = radius
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {confidence}")
        self.steps, self.step_size, self.starts, self.confidence, self.seed = steps, step_size, starts, confidence, seed

    def probe(self, run, show) -> dict:
        known = resemblance(run)
        if (section := _unjudged(known)) is not None:
            return section
        labels = run.dataset.labels
        k = run.engines[0].predict(run.x[:1]).shape[1]
        rows, gallery = [], []
        for route, target, model, judges in gradient_routes(run):
            show(f"ascent on {target}")
            candidates = self.ascend(model, k, run.x.shape[1:], run.value_range, keep=known.unrecognizable)
            unrecognizable = known.unrecognizable(candidates).reshape(k, self.starts)
            for judge_target, judge in judges.items():
                logp = log_probabilities(judge(candidates)).reshape(k, self.starts, -1)
                own = logp[np.arange(k), :, np.arange(k)]  # (k, starts): each image's log-probability of its class
                own = np.where(unrecognizable, own, -np.inf)
                best = own.argmax(1)
                pick = np.arange(k) * self.starts + best
                images = candidates[pick]
                per_class = _class_rows(images, logp[np.arange(k), best], known, labels)
                on = route if judge_target == target else TRANSFER
                rows.append(_row(on, judge_target, per_class, self.confidence, None))
                if not gallery:
                    gallery = _gallery(on, judge_target, images, per_class)
        return {"rows": rows, "gallery": gallery, "resemblance": known.describe(), "notes": [known.note()]}

    def ascend(self, model, classes: int, shape: tuple, value_range: tuple[float, float], keep=None) -> np.ndarray:
        """``classes * starts`` images, each pushed up its class's log-probability (class-major order),
        within ``radius`` of its starting noise, each stopping once it reaches ``confidence``. With ``keep``
        (a judge: images -> bool per image), each start returns its best iterate that ``keep`` accepts
        (the ascent may draw the class's shape in; an iterate past that point is not kept)."""
        import torch

        lo, hi = value_range
        g = torch.Generator().manual_seed(self.seed)
        x0 = torch.rand((classes * self.starts, *shape), generator=g) * (hi - lo) + lo
        x0 = x0.to(model.device).contiguous(memory_format=model.layout)
        x = x0.clone()
        target = torch.arange(classes, device=model.device).repeat_interleave(self.starts)
        rows = torch.arange(len(x), device=model.device)
        best = x.clone()
        best_logp = torch.full((len(x),), -float("inf"), dtype=torch.float64, device=model.device)
        bar, radius = math.log(self.confidence), self.radius * (hi - lo)
        for _ in range(self.steps + 1):
            x.requires_grad_(True)
            with torch.enable_grad():
                logp = torch.log_softmax(model.model(x).double(), 1)[rows, target]
                (grad,) = torch.autograd.grad(logp.sum(), x)
            with torch.no_grad():
                better = (logp > best_logp) & (best_logp < bar)  # an image at the bar is kept as it is
                if keep is not None:
                    better &= torch.from_numpy(keep(x.detach().cpu().numpy())).to(better.device)
                best[better], best_logp[better] = x[better], logp[better]
                moving = (best_logp < bar).view(-1, *[1] * (x.ndim - 1))
                if not moving.any():
                    break
                x = x + self.step_size * grad.sign() * moving
                x = torch.min(torch.max(x, x0 - radius), x0 + radius).clamp(lo, hi).detach()
        return best.cpu().numpy()


@PROBES.register("fooling-evo")
class FoolingEvolution(Probe):
    """Fooling images by MAP-Elites against each engine, queries only: confidence per class and queries used.

    Nguyen, Yosinski, Clune, CVPR 2015, https://arxiv.org/abs/1412.1897: the direct encoding of
    their MNIST experiments. Elites start as uniform noise; each generation, ``batch`` offspring of
    random elites have each pixel mutated with probability ``mutation_rate`` (polynomial mutation,
    strength ``eta`` = 15, as in the paper) and replace the elite of every class they score higher
    on, provided they are unrecognizable. A class whose elite reaches ``confidence`` is settled (its
    elite kept); the search ends when every class is settled or at ``queries``. Deviations: the
    paper's rate of 0.1 halves every 1,000 generations and its runs go on for thousands of
    generations, past the bar; stopping there keeps the images nearer their noise.

    Args:
        queries: engine evaluations in all, every class together (default 30,000).
        batch: offspring per generation (one engine call; default 100).
        mutation_rate: chance that a pixel is mutated (default 0.1).
        eta: polynomial mutation strength (default 15).
        confidence: the bar a class must reach to count as fooled (default 0.99).
        seed: seed of the search.
    """

    name = "fooling-evo"
    requires = frozenset({QUERIES})
    option_ranges = {"confidence": (0, 1, False), "mutation_rate": (0, 1, False)}
    columns = COLUMNS

    def __init__(self, *, queries: int = 30_000, batch: int = 100, mutation_rate: float = 0.1, eta: float = 15.0,
                 confidence: float = 0.99, seed: int = 0):
        if batch < 1 or queries < batch:
            raise ValueError(f"need 1 <= batch <= queries, got batch {batch}, queries {queries}")
        if not 0 < mutation_rate <= 1:
            raise ValueError(f"mutation_rate must be in (0, 1], got {mutation_rate}")
        if eta <= 0:
            raise ValueError(f"eta must be > 0, got {eta}")
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {confidence}")
        self.queries, self.batch, self.mutation_rate, self.eta = queries, batch, mutation_rate, eta
        self.confidence, self.seed = confidence, seed

    def probe(self, run, show) -> dict:
        known = resemblance(run)
        if (section := _unjudged(known)) is not None:
            return section
        labels = run.dataset.labels
        rows, gallery = [], []
        for engine in run.engines:
            predict = lambda z, e=engine: e.predict(z, run.options.batch_size)  # noqa: E731
            images, logp, used = self.evolve(predict, run.x.shape[1:], run.value_range, known,
                                             lambda q, e=engine: show(f"{e.label}: {q} queries"))
            per_class = _class_rows(images, logp, known, labels)
            rows.append(_row(QUERY, engine.label, per_class, self.confidence, used))
            if not gallery:
                gallery = _gallery(QUERY, engine.label, images, per_class)
        return {"rows": rows, "gallery": gallery, "resemblance": known.describe(), "notes": [known.note()]}

    def evolve(self, predict, shape: tuple, value_range: tuple[float, float], known, on_progress=None):
        """``(elites, their log-probabilities (classes, classes), queries used)``."""
        lo, hi = value_range
        rng = np.random.default_rng(self.seed)
        population = rng.uniform(lo, hi, (self.batch, *shape)).astype(np.float32)
        logp = log_probabilities(predict(population))
        used = len(population)
        ok = known.unrecognizable(population)
        fitness = np.where(ok[:, None], logp, -np.inf)
        best = fitness.argmax(0)
        elites, elite_logp, elite_fit = population[best].copy(), logp[best].copy(), fitness[best, np.arange(logp.shape[1])]
        bar = math.log(self.confidence)
        while used + self.batch <= self.queries and (elite_fit < bar).any():
            parents = elites[rng.integers(0, len(elites), self.batch)]
            children = self.mutate(parents, rng, lo, hi)
            logp = log_probabilities(predict(children))
            used += len(children)
            ok = known.unrecognizable(children)
            fitness = np.where(ok[:, None], logp, -np.inf)
            best = fitness.argmax(0)
            # a class at the bar is settled: its elite is kept, not evolved further towards the class's shape
            gain = (fitness[best, np.arange(len(elites))] > elite_fit) & (elite_fit < bar)
            elites[gain], elite_logp[gain] = children[best[gain]], logp[best[gain]]
            elite_fit[gain] = fitness[best[gain], np.flatnonzero(gain)]
            if on_progress is not None and (used // self.batch) % 20 == 0:
                on_progress(used)
        return elites, elite_logp, used

    def mutate(self, parents: np.ndarray, rng, lo: float, hi: float) -> np.ndarray:
        """Polynomial mutation (Deb, Agrawal 1995) of each pixel with probability ``mutation_rate``."""
        u = rng.random(parents.shape)
        delta = np.where(u < 0.5, (2 * u) ** (1 / (self.eta + 1)) - 1, 1 - (2 * (1 - u)) ** (1 / (self.eta + 1)))
        hit = rng.random(parents.shape) < self.mutation_rate
        return np.clip(parents + hit * delta * (hi - lo), lo, hi).astype(np.float32)
