"""Input normalization inside the model, so every stage feeds it pixels.

A model trained on normalized inputs, ``(x - mean) / std``, gets a :class:`Normalize` in front of it
in the checkpoint (:func:`with_normalization`). The checkpoint, its ONNX export and every engine then
take pixels in the card's ``value_range``, and an attack's eps stays in pixel units. The card records
the numbers (section ``normalization``), and :func:`dlforge.train.load_checkpoint` puts the layer back
on every route (zoo, program, factory): it is applied in this one place, never by a caller.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from dlforge.errors import InputError


class Normalize(nn.Module):
    """``(x - mean) / std`` over dimension 1 (the channels), one mean and std per channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, *([1] * (x.dim() - 2)))
        return (x - self.mean.view(shape)) / self.std.view(shape)

    def extra_repr(self) -> str:
        return f"mean={self.mean.tolist()}, std={self.std.tolist()}"


def with_normalization(model: nn.Module, normalization: dict | None) -> nn.Module:
    """``model`` behind a :class:`Normalize` built from a card's ``normalization`` section (None: unchanged)."""
    if not normalization:
        return model
    return nn.Sequential(Normalize(normalization["mean"], normalization["std"]), model)


def normalization_section(mean: Sequence[float], std: Sequence[float], channels: int) -> dict:
    """The card's ``normalization`` section, checked against the model's channels."""
    if len(mean) not in (1, channels):
        raise InputError(f"--normalize gives {len(mean)} means and standard deviations, but the model's inputs "
                         f"have {channels} channels; give one per channel, or one for all")
    if len(mean) == 1:
        mean, std = tuple(mean) * channels, tuple(std) * channels
    return {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}


def channel_statistics(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of images ``(N, C, ...)`` (``--normalize auto``)."""
    axes = (0, *range(2, x.ndim))
    std = x.std(axis=axes, dtype=np.float64)
    if (std <= 0).any():
        raise InputError("--normalize auto: a channel of the training images is constant (standard deviation 0); "
                         "give MEAN/STD or none")
    return [round(float(v), 6) for v in x.mean(axis=axes, dtype=np.float64)], [round(float(v), 6) for v in std]

