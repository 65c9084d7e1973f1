"""Backends: one module per backend in ``dlforge/build/`` (compile) and one in ``dlforge/runtime/`` (run).

A build backend turns the parent ONNX into a payload for one precision and opens the fresh payload
for evaluation; the engine card it writes names the backend, and ``dlforge.runtime`` opens the
engine through the runtime registry (:data:`dlforge.runtime.open.RUNTIMES`) under the same name.
Registering a new one::

    @BACKENDS.register("my-backend")
    class MyBackend(Backend):
        precisions = ("fp32",)
        payload = "model.onnx"
        def compile(self, precision, src, dst, calibration): ...
        def open(self, path, details, info): ...
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from dlforge.artifact import ModelInfo
from dlforge.precision.calibration import Calibration
from dlforge.registry import Registry
from dlforge.runtime.base import Session

BACKENDS: Registry[type[Backend]] = Registry("backend", ["dlforge.build.ort", "dlforge.build.tensorrt"])


class Backend(ABC):
    """Compiles ONNX into an engine payload. Constructed per build with the build's options."""

    name = ""
    precisions: tuple[str, ...] = ()
    payload = ""

    def __init__(self, options, info: ModelInfo):
        self.options = options
        self.info = info

    @abstractmethod
    def compile(self, precision: str, src: Path, dst: Path, calibration: Calibration) -> dict:
        """Write the payload for ``precision`` to ``dst``; return what the card records of it.

        ``calibration``: the build's :class:`~dlforge.precision.Calibration` (images and settings; a
        lower precision's graph comes from :mod:`dlforge.precision`).
        """

    @abstractmethod
    def open(self, path: Path, details: dict, info: ModelInfo) -> Session:
        """A Session over a freshly compiled payload, for evaluation before it is saved."""

    def batch_range(self, details: dict) -> tuple[int, int | None] | None:
        """The batch range the engine accepts, recorded in the card (None: whatever the graph says)."""
        return None

    def card_sections(self, details: dict) -> dict:
        return {}

    def card_env(self, details: dict) -> dict:
        return {}
