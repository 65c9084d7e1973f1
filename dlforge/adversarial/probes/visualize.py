"""Feature visualization of the deployed model: what its units respond to, shown on real images first."""

from __future__ import annotations

import numpy as np

from dlforge.adversarial.attacks.base import GRADIENTS
from dlforge.adversarial.probes import probabilities
from dlforge.adversarial.probes.base import PROBES, Probe
from dlforge.adversarial.records import ENGINE_ROUTE, WHITE_BOX
from dlforge.errors import InputError
from dlforge.reporting import Column


@PROBES.register("visualize")
class Visualize(Probe):
    """Feature visualization per engine graph: natural exemplars, activation maximization, DeepDream, INT8 overlap.

    Units are the elements of the engine's penultimate value (the input of its last linear layer: LeNet's hidden
    neurons, a ResNet's pooled channels), read from each engine's own graph (:mod:`dlforge.adversarial.features`;
    ONNX Runtime with the engine's settings for every measured activation, the converted graph, with straight-
    through gradients for INT8, to optimize). For each of the ``units`` units with the largest activation variance
    on the test images (chosen on the first engine, the same indices on every engine):

    - **natural exemplars** first: the ``top`` test images that activate it most, as Borowski et al. ("Exemplary
      natural images explain CNN activations better than state-of-the-art feature visualization", ICLR 2021) found
      people predict a unit better from them than from synthetic images;
    - **activation maximization from noise** (Olah, Mordvintsev, Schubert, "Feature Visualization", Distill 2017):
      the image parameterized in a 1/f-scaled Fourier basis through a sigmoid into the value range, random jitter
      (a roll of up to ``jitter`` pixels, default one per 14 pixels of the image's side) every step, from Gaussian
      Fourier coefficients of scale ``init`` (0.1: a start so faint that a unit is dead on it gets no gradient),
      Adam for ``steps`` steps; its activation on the engine is reported beside the best exemplar's;
    - the **selectivity overlap**: the share of a unit's top-``top`` exemplars on the fp32 engine that are also its
      top exemplars on each other engine (INT8): 1.0 when quantization left what it responds to alone.

    Class visualizations maximize each of ``classes`` logits the same way, on the PyTorch source where there is
    one and on each engine graph. DeepDream (Mordvintsev et al. 2015) amplifies whatever the penultimate layer
    sees in the first test image: ``dream_steps`` normalized gradient steps on the L2 norm of its value.
    """

    name = "visualize"
    requires = frozenset({GRADIENTS})
    option_ranges = {"lr": (0, None, False), "init": (0, None, False), "jitter": (0, None, True),
                     "classes": (0, None, True), "dream_steps": (0, None, True)}
    columns = (Column("route"), Column("target", fmt=lambda t: t[:32]), Column("kind"), Column("unit"),
               Column("visualization", "viz activation", ".3f", ">"),
               Column("best_exemplar", "best exemplar", ".3f", ">"),
               Column("exemplar_overlap", "top-k overlap vs first", ".2f", ">"))

    def __init__(self, *, units: int = 4, classes: int = 4, top: int = 9, steps: int = 128, lr: float = 0.05,
                 jitter: int | None = None, dream_steps: int = 20, pool: int = 2000, init: float = 0.1, seed: int = 0):
        if min(units, top, steps, pool) < 1 or classes < 0 or dream_steps < 0:
            raise ValueError("units, top, steps and pool must be >= 1; classes and dream_steps >= 0")
        self.units, self.classes, self.top, self.steps, self.lr = units, classes, top, steps, lr
        self.jitter, self.dream_steps, self.pool, self.seed, self.init = jitter, dream_steps, pool, seed, init

    def prepare(self, run) -> None:
        if len(run.x.shape) != 4:
            raise InputError("visualize renders images; this model's input is not one")
        if self.jitter is None:  # 2 pixels of a 28- or 32-pixel image, none on an 8-pixel one
            self.jitter = min(run.x.shape[-2:]) // 14

    def probe(self, run, show) -> dict:
        from dlforge.adversarial.features import EngineFeatures

        pool = np.ascontiguousarray(run.dataset.x_test[:self.pool], dtype=np.float32)
        graphs = [(e, g) for e, g in zip(run.engines, run.graphs) if g.model is not None]
        if not graphs:
            raise InputError("visualize optimizes through each engine's own graph, and no engine graph could be "
                             "differentiated here (see the engine gradients lines); audit ONNX Runtime engines")
        rows, gallery, first_top = [], [], None
        units = None
        labels = run.dataset.labels
        for engine, graph in graphs:
            show(f"exemplars on {engine.label}")
            features = EngineFeatures(engine, "penultimate")
            acts = features.run(pool, run.options.batch_size)[0][0]
            if units is None:
                units = np.argsort(-acts.var(0), kind="stable")[:min(self.units, acts.shape[1])]
            tops = {int(u): np.argsort(-acts[:, u], kind="stable")[:self.top] for u in units}
            show(f"activation maximization on {engine.label}")
            images = self.maximize(graph.model, features.names[0], [int(u) for u in units], pool.shape[1:],
                                   run.value_range)
            viz_acts = features.run(images, len(images))[0][0]
            for k, u in enumerate(units):
                u = int(u)
                overlap = None if first_top is None else len(set(first_top[u]) & set(tops[u])) / self.top
                rows.append({"route": ENGINE_ROUTE, "target": engine.label, "kind": "unit", "unit": u,
                             "visualization": float(viz_acts[k, u]), "best_exemplar": float(acts[tops[u][0], u]),
                             "exemplar_overlap": overlap, "exemplars": [int(i) for i in tops[u]]})
                group = f"{engine.label}: unit {u}"
                gallery += [{"group": group, "title": f"exemplar {j + 1}", "image": pool[i].tolist()}
                            for j, i in enumerate(tops[u][:3])]
                gallery.append({"group": group, "title": "visualization", "image": images[k].tolist()})
            first_top = first_top or tops
            rows += self._classes(engine.label, ENGINE_ROUTE, graph.model, lambda z, e=engine: e.predict(z),
                                  pool.shape[1:], run.value_range, labels, gallery, show)
            if self.dream_steps:
                show(f"DeepDream on {engine.label}")
                dream = self.dream(graph.model, features.names[0], pool[:1], run.value_range)
                gallery += [{"group": f"{engine.label}: DeepDream", "title": "image", "image": pool[0].tolist()},
                            {"group": f"{engine.label}: DeepDream", "title": "amplified", "image": dream[0].tolist()}]
            features.close()
        if run.model is not None:
            rows += self._classes("source", WHITE_BOX, run.model, run.model.predict, pool.shape[1:], run.value_range,
                                  labels, gallery, show)
        return {"rows": rows, "gallery": gallery,
                "notes": [f"units: the {len(units)} elements of the penultimate value with the largest activation "
                          f"variance on {len(pool)} test images ({', '.join(str(int(u)) for u in units)}); "
                          f"top-{self.top} exemplars; {self.steps} Adam steps at lr {self.lr}, jitter {self.jitter} "
                          "px, 1/f Fourier parameterization; activations measured on each engine (ONNX Runtime)"]}

    def _classes(self, label, route, model, predict, shape, value_range, labels, gallery, show) -> list[dict]:
        if not self.classes:
            return []
        show(f"class visualization on {label}")
        chosen = list(range(min(self.classes, len(labels))))
        images = self.maximize(model, None, chosen, shape, value_range)
        probs = probabilities(predict(images))
        gallery += [{"group": f"{label}: classes", "title": str(labels[c])[:16], "image": images[k].tolist()}
                    for k, c in enumerate(chosen)]
        return [{"route": route, "target": label, "kind": "class", "unit": str(labels[c]),
                 "visualization": float(probs[k, c]), "best_exemplar": None, "exemplar_overlap": None}
                for k, c in enumerate(chosen)]

    def maximize(self, model, value: str | None, targets: list[int], shape, value_range) -> np.ndarray:
        """One image per target maximizing unit ``targets[k]`` of ``value`` (None: logit ``targets[k]``)."""
        import torch

        torch_model = getattr(model, "model", model)
        device = getattr(model, "device", "cpu")
        c, h, w = shape
        g = torch.Generator().manual_seed(self.seed)
        fy = torch.fft.fftfreq(h)[:, None]
        fx = torch.fft.rfftfreq(w)[None, :]
        scale = 1.0 / torch.sqrt(fx * fx + fy * fy).clamp_min(1.0 / max(h, w))
        spectrum = (torch.randn(len(targets), c, h, w // 2 + 1, 2, generator=g) * self.init).requires_grad_(True)
        optimizer = torch.optim.Adam([spectrum], lr=self.lr)
        lo, hi = value_range
        index = torch.arange(len(targets))
        goal = torch.tensor(targets)

        def image():
            z = torch.fft.irfftn(torch.view_as_complex(spectrum) * scale, s=(h, w), dim=(-2, -1)) * (h * w) ** 0.5
            return lo + (hi - lo) * torch.sigmoid(z)

        for _ in range(self.steps):
            x = image()
            if self.jitter:
                dy, dx = (int(v) for v in torch.randint(-self.jitter, self.jitter + 1, (2,), generator=g))
                x = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
            with torch.enable_grad():
                out = _value(torch_model, value, x.to(device))
                loss = -out[index, goal].sum()
                optimizer.zero_grad()
                loss.backward()
            optimizer.step()
        with torch.no_grad():
            return image().cpu().numpy().astype(np.float32)

    def dream(self, model, value: str, x: np.ndarray, value_range) -> np.ndarray:
        """DeepDream: normalized gradient ascent on the squared norm of ``value``, with jitter, from ``x``."""
        import torch

        torch_model = getattr(model, "model", model)
        lo, hi = value_range
        g = torch.Generator().manual_seed(self.seed + 1)
        img = torch.from_numpy(x.copy()).to(getattr(model, "device", "cpu"))
        step = 0.02 * (hi - lo)
        for _ in range(self.dream_steps):
            dy, dx = (int(v) for v in torch.randint(-self.jitter, self.jitter + 1, (2,), generator=g)) \
                if self.jitter else (0, 0)
            shifted = torch.roll(img, shifts=(dy, dx), dims=(-2, -1)).requires_grad_(True)
            with torch.enable_grad():
                loss = _value(torch_model, value, shifted).pow(2).sum()
                grad, = torch.autograd.grad(loss, shifted)
            grad = torch.roll(grad, shifts=(-dy, -dx), dims=(-2, -1))
            img = (img + step * grad / grad.abs().mean().clamp_min(1e-12)).clamp(lo, hi).detach()
        return img.cpu().numpy()


def _value(module, value: str | None, x):
    """The logits (``value`` None) or the named intermediate value of the engine's converted graph, per sample."""
    if value is None:
        return module(x)
    from dlforge.adversarial.features import torch_values

    return torch_values(module, [value], x)[0]

