"""Calibration: what an INT8 transform is calibrated on and how, as one typed value.

The build stage makes one :class:`Calibration` per build and derives variants with :meth:`replace`
(a plan's fp32 nodes, a cache of calibrated ranges, the pre-processed graph) instead of mutating a
shared dict; every backend's ``compile`` receives it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class Calibration:
    """Images and settings of an INT8 calibration.

    Attributes:
        calib_x: the calibration images, float32 ``(N, C, H, W)``.
        method: ``minmax``, ``entropy`` (KL, 2048 bins) or ``percentile``.
        per_channel: weights quantized per output channel (else per tensor).
        static_batch: the graph's fixed batch size, or None for a dynamic batch.
        exclude: nodes kept in fp32 (a per-layer precision plan).
        keep: nodes the model itself keeps in fp32 whatever the plan (its ``keep_fp32`` modules).
        cache: a file of calibrated ranges, read instead of calibrating again when it exists.
        prepared: the source graph already pre-processed for quantization (shared by many compiles).
        reduce_range: weights quantized to 7 bits (a backend whose INT8 kernels would saturate asks for it).
    """

    calib_x: np.ndarray
    method: str = "minmax"
    per_channel: bool = True
    static_batch: int | None = None
    exclude: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()
    cache: Path | None = None
    prepared: Path | None = None
    reduce_range: bool = False

    def replace(self, **changes) -> Calibration:
        return dataclasses.replace(self, **changes)
