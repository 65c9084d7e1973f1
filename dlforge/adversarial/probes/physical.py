"""Adversarial examples in the physical world: do they survive a print-and-photograph stand-in?"""

from __future__ import annotations

import numpy as np

from dlforge.adversarial.attacks import Target, make_attack
from dlforge.adversarial.attacks.base import GRADIENTS
from dlforge.adversarial.probes.base import PROBES, Probe
from dlforge.adversarial.probes import gradient_routes
from dlforge.adversarial.records import TRANSFER
from dlforge.adversarial.probes.transforms import Chain, apply_chain
from dlforge.adversarial.attacks.projection import project
from dlforge.reporting import Column


@PROBES.register("physical")
class PhysicalWorld(Probe):
    """PGD vs EOT-PGD examples through random blur, noise, lighting, rotation, shift and JPEG: the share that survives.

    Kurakin, Goodfellow, Bengio, "Adversarial examples in the physical world", ICLR 2017 workshop
    (https://arxiv.org/abs/1607.02533) printed adversarial images, photographed them and measured the
    *destruction rate*: of the clean images classified right whose adversarial version was classified
    wrong, the share classified right again after the transformation. Athalye, Engstrom, Ilyas, Kwok,
    "Synthesizing Robust Adversarial Examples", ICML 2018 (https://arxiv.org/abs/1707.07397) make
    examples survive by Expectation over Transformation. Here a random chain stands in for the
    printer and the camera (:class:`dlforge.adversarial.probes.transforms.Chain`), and both PGD and
    EOT-PGD (PGD whose every step follows the gradient averaged over ``eot_samples`` draws of the
    chain; JPEG by BPDA) run at ``eps`` on the source (without one, on each engine graph). Each
    example then meets ``draws`` fresh draws of the chain on every model. The headline, *fooled after
    chain*, is the share of all points classified right on the clean input and wrong after the attack
    and the chain; *survival* is one minus Kurakin et al.'s destruction rate, a rate conditional on
    the attack having fooled the point without the chain, reported beside it. The clean accuracy under the chain is the control (a chain
    that destroys the digits themselves proves nothing).

    Args:
        eps: L-inf budget, in value units (default 0.15: on dlforge's MNIST LeNet, PGD then fools 70% of
            the points and the chain undoes half of that; at 0.3 over 98% of PGD's examples survive it).
        steps: PGD steps (default 40; step 2.5 * eps / steps, random start).
        eot_samples: chain draws averaged per EOT step (default 10).
        draws: chain draws per example in the evaluation (default 10).
        points: audited test points used (default 200).
        blur, noise, brightness, contrast, rotation, translation, jpeg: the chain's limits (see Chain;
            blur and translation default to 1 and 2 pixels of a 28-pixel image, scaled to the input).
        seed: seed of the start, the EOT draws and (offset by one) the evaluation draws.
    """

    name = "physical"
    option_ranges = {k: (0, None, True) for k in ("noise", "brightness", "contrast", "rotation", "blur",
                                                  "translation")}
    requires = frozenset({GRADIENTS})
    columns = (Column("route"), Column("target", fmt=lambda t: t[:32]), Column("attack"),
               Column("eps", fmt="g", align=">"), Column("fooled_after_chain", "fooled after chain", ".4f", ">"),
               Column("adversarial", "adv (no chain)", ".4f", ">"),
               Column("survival", "survives chain", ".4f", ">"), Column("clean_under_chain", "clean acc (chain)",
                                                                        ".4f", ">"), Column("examples", "of", "d", ">"))

    def __init__(self, *, eps: float = 0.15, steps: int = 40, eot_samples: int = 10, draws: int = 10, points: int = 200,
                 blur: float | None = None, noise: float = 0.05, brightness: float = 0.1, contrast: float = 0.2,
                 rotation: float = 10.0, translation: float | None = None, jpeg: int = 50, seed: int = 0):
        if eps <= 0 or steps < 1 or eot_samples < 1 or draws < 1 or points < 1:
            raise ValueError("eps must be > 0 and steps, eot_samples, draws, points >= 1")
        if not 0 <= jpeg <= 95:
            raise ValueError(f"jpeg is the lowest JPEG quality, 0 (no JPEG) to 95, got {jpeg}")
        self.eps, self.steps, self.eot_samples, self.draws, self.points, self.seed = \
            eps, steps, eot_samples, draws, points, seed
        self.limits = dict(blur=blur, noise=noise, brightness=brightness, contrast=contrast, rotation=rotation,
                           translation=translation, jpeg=jpeg)
        self.chain = Chain(**{k: v for k, v in self.limits.items() if v is not None})

    def prepare(self, run) -> None:
        """Blur and translation default to 1 and 2 pixels on a 28-pixel image, in proportion on others."""
        side = min(run.x.shape[-2:])
        scaled = {"blur": side / 28, "translation": 2 * side / 28}
        self.chain = Chain(**{k: (scaled[k] if v is None else v) for k, v in self.limits.items()})

    def probe(self, run, show) -> dict:
        x, y = run.x[:self.points], run.y[:self.points]
        rows = []
        for route, source, model, judges in gradient_routes(run):
            show(f"PGD on {source}")
            plain = make_attack("pgd", steps=self.steps, seed=self.seed).craft(
                Target.of(model, run.options.batch_size), x, y, eps=self.eps, value_range=run.value_range).x_adv
            show(f"EOT-PGD on {source}")
            eot = self.eot_pgd(model, x, y, run.value_range)
            examples = {"pgd": project(plain, x, self.eps, "linf", run.value_range),
                        "eot-pgd": project(eot, x, self.eps, "linf", run.value_range)}
            for name, judge in judges.items():
                show(f"chain draws on {name}")
                clean_ok = judge(x).argmax(1) == y
                clean_chain = np.mean([judge(self._draw(x, run.value_range, d)).argmax(1) == y
                                       for d in range(self.draws)])
                for attack, x_adv in examples.items():
                    fooled = clean_ok & (judge(x_adv).argmax(1) != y)
                    # every point, through each draw of the chain: right on the clean input, wrong after the chain
                    after = np.array([clean_ok & (judge(self._draw(x_adv, run.value_range, d)).argmax(1) != y)
                                      for d in range(self.draws)])
                    kept = after[:, fooled]
                    rows.append({"route": route if name == source else TRANSFER, "target": name, "attack": attack,
                                 "eps": self.eps, "fooled_after_chain": float(after.mean()),
                                 "adversarial": float(fooled.mean()),
                                 "survival": float(kept.mean()) if fooled.any() else None,
                                 "clean_under_chain": float(clean_chain), "examples": int(fooled.sum())})
        return {"rows": rows, "gallery": [],
                "notes": [f"chain: {self.chain.describe()}; {self.draws} draws per example; fooled after chain: the "
                          "share of all points right on the clean input and wrong after the attack and the chain (the "
                          "headline); survival: among the points the attack fooled without the chain, the share "
                          "still fooled after it (1 - the destruction rate of Kurakin et al.), a conditional rate"]}

    def transform(self, x, generator, value_range):
        """One random draw of the chain on a batch of tensors (differentiable; JPEG by BPDA)."""
        return apply_chain(x, self.chain, generator, value_range)

    def _draw(self, x: np.ndarray, value_range, d: int) -> np.ndarray:
        """Evaluation draw ``d`` of the chain (seeded apart from the EOT draws)."""
        import torch

        g = torch.Generator().manual_seed(self.seed + 1 + 1000 * d)
        with torch.no_grad():
            return self.transform(torch.from_numpy(x), g, value_range).numpy()

    def eot_pgd(self, model, x: np.ndarray, y: np.ndarray, value_range) -> np.ndarray:
        """PGD with each step's gradient averaged over ``eot_samples`` draws of the chain (Athalye et al. 2018)."""
        import torch

        lo, hi = value_range
        g = torch.Generator().manual_seed(self.seed)
        x0, yt = torch.from_numpy(x), torch.from_numpy(y).long()
        step = 2.5 * self.eps / self.steps
        adv = (x0 + (torch.rand(x0.shape, generator=g) * 2 - 1) * self.eps).clamp(lo, hi)
        for _ in range(self.steps):
            adv.requires_grad_(True)
            with torch.enable_grad():
                grad = torch.zeros_like(adv)
                for _ in range(self.eot_samples):
                    out = model.model(self.transform(adv, g, value_range).to(model.device))
                    loss = torch.nn.functional.cross_entropy(out, yt.to(model.device), reduction="sum")
                    grad = grad + torch.autograd.grad(loss, adv)[0]
            adv = torch.min(torch.max(adv.detach() + step * grad.sign(), x0 - self.eps), x0 + self.eps).clamp(lo, hi)
        return adv.numpy()
