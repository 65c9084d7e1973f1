"""The adversarial patch: one printable square that turns any image into the target class, wherever it sits."""

from __future__ import annotations

import math

import numpy as np

from dlforge.adversarial.attacks.base import GRADIENTS
from dlforge.adversarial.probes.base import PROBES, Probe
from dlforge.adversarial.probes import gradient_routes
from dlforge.adversarial.records import TRANSFER
from dlforge.adversarial.probes.transforms import affine
from dlforge.errors import InputError
from dlforge.reporting import Column


def parse_areas(areas: str) -> tuple[float, ...]:
    """``"0.05/0.1/0.15"`` -> ``(0.05, 0.1, 0.15)``: shares of the image the patch covers."""
    try:
        out = tuple(float(a) for a in str(areas).split("/"))
    except ValueError:
        raise ValueError(f"areas must be shares of the image separated by '/', e.g. 0.05/0.1/0.15, got {areas!r}")
    if not out or not all(0 < a < 0.5 for a in out):
        raise ValueError(f"each area must be in (0, 0.5), got {areas!r}")
    return out


@PROBES.register("patch")
class AdversarialPatch(Probe):
    """A universal targeted patch trained with EOT (random place, rotation, scale): targeted success vs area.

    Brown, Mané, Roy, Abadi, Gilmer, "Adversarial Patch", 2017, https://arxiv.org/abs/1712.09665. One
    square patch per area (its share of the image's pixels) is trained on the training split with the
    source's gradients (without a source: the first engine graph's): each step pastes it on a batch of
    images at a random position, rotation (+-``rotation`` degrees) and scale (0.9-1.1) and ascends the
    target class's log-probability averaged over the batch (Expectation over Transformation), with
    Adam. Evaluation: the audited test images whose label is not the target, each with the patch at
    one random position and rotation (the same for every model); targeted success is the share
    classified as the target, on the model the patch was trained on and, by transfer, on every
    engine. The control is a patch of uniform noise placed the same way: success that it shares is
    occlusion, not attack. Deviations: Brown et al. use circular patches on ImageNet; a square
    suits small grey images, and the scale range is narrow so that the area stays what it says.

    Args:
        target: the target class index (default 0).
        areas: patch areas as shares of the image, separated by '/' (default 0.05/0.1/0.15/0.2/0.3).
        steps: training steps (default 400).
        batch: training images per step (default 64).
        lr: Adam's learning rate (default 0.05).
        rotation: largest rotation in degrees (default 20).
        seed: seed of training and placement.
    """

    name = "patch"
    option_ranges = {"rotation": (0, None, True)}
    requires = frozenset({GRADIENTS})
    columns = (Column("route"), Column("target", fmt=lambda t: t[:32]), Column("area", fmt=".3f", align=">"),
               Column("side", "side px", "d", ">"), Column("success", "targeted success", ".4f", ">"),
               Column("noise_patch", "noise patch", ".4f", ">"), Column("images", "of", "d", ">"))

    def __init__(self, *, target: int = 0, areas: str = "0.05/0.1/0.15/0.2/0.3", steps: int = 400, batch: int = 64,
                 lr: float = 0.05, rotation: float = 20.0, seed: int = 0):
        self.areas = parse_areas(areas)
        if steps < 1 or batch < 1:
            raise ValueError(f"steps and batch must be >= 1, got {steps} and {batch}")
        if lr <= 0 or not 0 <= rotation <= 180:
            raise ValueError(f"lr must be > 0 and rotation in [0, 180], got {lr} and {rotation}")
        self.target, self.steps, self.batch, self.lr, self.rotation, self.seed = target, steps, batch, lr, rotation, seed

    def prepare(self, run) -> None:
        classes = run.engines[0].predict(run.x[:1]).shape[1]
        if not 0 <= self.target < classes:
            raise InputError(f"patch:target={self.target} is not a class of the model (0..{classes - 1})")
        if len(run.x.shape) != 4:
            raise InputError("patch needs image inputs (N, C, H, W)")

    def probe(self, run, show) -> dict:
        route, source, model, judges = next(iter(gradient_routes(run)))
        keep = run.y != self.target
        x_eval = run.x[keep]
        rows, gallery = [], []
        for area in self.areas:
            show(f"training the {area:g} patch on {source}")
            patch = self.train(model, run.dataset.x_train, area, run.value_range)
            side = patch.shape[-1]
            place = np.random.default_rng(self.seed + 1)
            angle, shift = self._placement(len(x_eval), side, x_eval.shape[-2:], place)
            patched = self.paste(x_eval, patch, angle, shift, run.value_range[0])
            noise = np.random.default_rng(self.seed + 2).uniform(*run.value_range, patch.shape).astype(np.float32)
            control = self.paste(x_eval, noise, angle, shift, run.value_range[0])
            for name, judge in judges.items():
                rows.append({"route": route if name == source else TRANSFER, "target": name, "area": side * side /
                             float(np.prod(x_eval.shape[-2:])), "side": side,
                             "success": float((judge(patched).argmax(1) == self.target).mean()),
                             "noise_patch": float((judge(control).argmax(1) == self.target).mean()),
                             "images": int(len(x_eval)), "target_class": self.target})
            label = run.dataset.labels[self.target] if self.target < len(run.dataset.labels) else str(self.target)
            gallery.append({"group": f"patches (target {label})", "title": f"{side}x{side} patch",
                            "image": patch.tolist()})
            gallery += [{"group": "", "title": f"area {area:g}", "image": img.tolist()} for img in patched[:2]]
        return {"rows": rows, "gallery": gallery,
                "notes": [f"trained on {source} ({route}); target class {self.target}; the noise patch is the "
                          "occlusion control"]}

    def train(self, model, x_train: np.ndarray, area: float, value_range) -> np.ndarray:
        """The patch (C, s, s) for ``area``, trained with EOT on ``x_train``."""
        import torch

        lo, hi = value_range
        c, h, w = x_train.shape[1:]
        side = max(1, round(math.sqrt(area * h * w)))
        g = torch.Generator().manual_seed(self.seed)
        patch = (torch.rand((c, side, side), generator=g) * (hi - lo) + lo).requires_grad_(True)
        opt = torch.optim.Adam([patch], lr=self.lr * (hi - lo))
        rng = np.random.default_rng(self.seed)
        target = torch.full((self.batch,), self.target, dtype=torch.long, device=model.device)
        for _ in range(self.steps):
            xb = torch.from_numpy(x_train[rng.integers(0, len(x_train), self.batch)].astype(np.float32))
            angle, shift = self._placement(self.batch, side, (h, w), rng)
            scale = torch.from_numpy(rng.uniform(0.9, 1.1, self.batch).astype(np.float32))
            with torch.enable_grad():
                out = model.model(self._paste(xb, patch, torch.from_numpy(angle), torch.from_numpy(shift), scale,
                                              lo).to(model.device))
                loss = torch.nn.functional.cross_entropy(out, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                patch.clamp_(lo, hi)
        return patch.detach().numpy()

    def paste(self, x: np.ndarray, patch: np.ndarray, angle: np.ndarray, shift: np.ndarray, lo: float) -> np.ndarray:
        """``x`` with ``patch`` placed per image (numpy in and out; ``lo``: the value range's low end)."""
        import torch

        with torch.no_grad():
            return self._paste(torch.from_numpy(x), torch.from_numpy(patch), torch.from_numpy(angle),
                               torch.from_numpy(shift), None, lo).numpy()

    def _placement(self, n: int, side: int, hw: tuple, rng) -> tuple[np.ndarray, np.ndarray]:
        """Random rotations (radians) and centre shifts (pixels) that keep the patch inside the image."""
        theta = math.radians(self.rotation)
        reach = side * 1.1 * (abs(math.cos(min(theta, math.pi / 4))) + abs(math.sin(min(theta, math.pi / 4))))
        room = np.maximum((np.array(hw[::-1], dtype=np.float32) - reach) / 2, 0)  # (x, y)
        angle = rng.uniform(-theta, theta, n).astype(np.float32)
        shift = (rng.uniform(-1, 1, (n, 2)) * room).astype(np.float32)
        return angle, shift

    @staticmethod
    def _paste(x, patch, angle, shift, scale, lo: float):
        """``x`` with ``patch`` pasted at its centre, rotated, scaled and moved (torch; differentiable)."""
        import torch
        from torch.nn import functional as F

        n, _, h, w = x.shape
        s = patch.shape[-1]
        top, left = (h - s) // 2, (w - s) // 2
        pad = (left, w - s - left, top, h - s - top)
        canvas = F.pad((patch - lo).expand(n, -1, -1, -1), pad)
        mask = F.pad(torch.ones(n, 1, s, s, dtype=x.dtype), pad)
        canvas, mask = affine(canvas, angle, shift, scale), affine(mask, angle, shift, scale)
        return x * (1 - mask) + canvas + lo * mask
