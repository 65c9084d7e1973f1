"""Random image transformations in torch, differentiable where they can be (for EOT), shared by the
adversarial-patch and physical-world probes.

Athalye, Engstrom, Ilyas, Kwok, "Synthesizing Robust Adversarial Examples", ICML 2018
(https://arxiv.org/abs/1707.07397): Expectation over Transformation optimizes the expected loss over
a distribution of transformations, so the result survives any draw from it. JPEG has no useful
gradient: its forward pass is the real codec (Pillow) and its backward pass the identity (BPDA,
Athalye, Carlini, Wagner, ICML 2018).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Chain:
    """A print-and-photograph stand-in; each field is the largest change one draw may make.

    blur: Gaussian blur sigma in pixels (uniform in [0, blur]); noise: Gaussian noise sigma in value
    units; brightness: added offset in value units; contrast: factor in [1 - c, 1 + c] about the
    image mean; rotation: degrees; translation: pixels; jpeg: lowest JPEG quality (uniform in
    [jpeg, 95]; 0: no JPEG).
    """

    blur: float = 1.0
    noise: float = 0.05
    brightness: float = 0.1
    contrast: float = 0.2
    rotation: float = 10.0
    translation: float = 2.0
    jpeg: int = 50

    def describe(self) -> str:
        return (f"blur sigma <= {self.blur:g} px, noise sigma <= {self.noise:g}, brightness +-{self.brightness:g}, "
                f"contrast x[{1 - self.contrast:g}, {1 + self.contrast:g}], rotation +-{self.rotation:g} deg, "
                f"translation +-{self.translation:g} px" + (f", JPEG quality {self.jpeg}-95" if self.jpeg else ""))


def affine(x, angle, shift, scale=None):
    """Rotate (radians) and scale each image about its centre, then move the centre by ``shift``
    pixels; bilinear, zero outside. (Exact for square images; others rotate in normalized coordinates.)

    Shapes: x (N, C, H, W); angle (N,); shift (N, 2) as (dx, dy); scale (N,) or None.
    """
    import torch
    from torch.nn import functional as F

    n, _, h, w = x.shape
    s = torch.ones(n, device=x.device, dtype=x.dtype) if scale is None else scale.to(x.dtype)
    cos, sin = torch.cos(angle).to(x.dtype), torch.sin(angle).to(x.dtype)
    a = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1) / s[:, None, None]
    centre = torch.stack([shift[:, 0] * 2 / w, shift[:, 1] * 2 / h], 1).to(x.dtype)  # normalized coordinates
    theta = torch.cat([a, -(a @ centre[:, :, None])], 2)  # output point `centre` samples the input's centre
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def gaussian_blur(x, sigma):
    """Per-image Gaussian blur (sigma (N,) in pixels; 0 leaves the image as it is), 5x5 kernel."""
    import torch
    from torch.nn import functional as F

    n, c, h, w = x.shape
    r = torch.arange(-2, 3, device=x.device, dtype=x.dtype)
    k = torch.exp(-(r[None, :] ** 2) / (2 * sigma.clamp_min(1e-3)[:, None] ** 2))
    k = k / k.sum(1, keepdim=True)  # (N, 5), separable
    kernel = (k[:, :, None] * k[:, None, :]).repeat_interleave(c, 0)[:, None]  # (N*C, 1, 5, 5)
    out = F.conv2d(F.pad(x.reshape(1, n * c, h, w), (2, 2, 2, 2), mode="replicate"), kernel, groups=n * c)
    return out.reshape(n, c, h, w)


def jpeg(x: np.ndarray, quality: np.ndarray, value_range) -> np.ndarray:
    """Encode and decode each image as JPEG at its quality (Pillow), in and out of the value range."""
    from PIL import Image

    lo, hi = value_range
    out = np.empty_like(x)
    for i, img in enumerate(x):
        u8 = np.clip(np.round((img - lo) / (hi - lo) * 255), 0, 255).astype(np.uint8)
        pil = Image.fromarray(u8[0] if u8.shape[0] == 1 else np.moveaxis(u8, 0, -1))
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=int(quality[i]))
        back = np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float32)
        back = back[None] if back.ndim == 2 else np.moveaxis(back, -1, 0)
        out[i] = back / 255 * (hi - lo) + lo
    return out


def apply_chain(x, chain: Chain, generator, value_range):
    """One random draw of ``chain`` per image (a torch tensor; differentiable but for JPEG, whose backward
    pass is the identity)."""
    import torch

    lo, hi = value_range
    n = len(x)

    def u(a, b):
        return torch.rand(n, generator=generator, device=x.device) * (b - a) + a

    out = affine(x - lo, u(-1, 1) * math.radians(chain.rotation),
                 torch.stack([u(-1, 1), u(-1, 1)], 1) * chain.translation) + lo
    if chain.blur:
        out = gaussian_blur(out, u(0, chain.blur))
    mean = out.mean((1, 2, 3), keepdim=True)
    out = (out - mean) * u(1 - chain.contrast, 1 + chain.contrast).view(-1, 1, 1, 1) + mean
    out = out + u(-chain.brightness, chain.brightness).view(-1, 1, 1, 1) * (hi - lo)
    if chain.noise:
        out = out + torch.randn(out.shape, generator=generator, device=x.device) * u(0, chain.noise).view(-1, 1, 1, 1)
    out = out.clamp(lo, hi)
    if chain.jpeg:
        quality = u(chain.jpeg, 95).round().cpu().numpy()
        coded = torch.from_numpy(jpeg(out.detach().cpu().numpy(), quality, value_range)).to(out.device)
        out = out + (coded - out).detach()  # BPDA: the codec forward, the identity backward
    return out
