"""Backends, one folder each: ``ort`` (ONNX Runtime on CPU) and ``tensorrt`` (NVIDIA GPUs).

Each folder holds its compiler, its session and its pure decisions; :data:`BACKENDS` (discovered)
has one entry per backend, used by the build stage, the runtime, the bench and the Triton deploy.
"""

from dlforge.backends.base import BACKENDS, Backend

__all__ = ["BACKENDS", "Backend"]
