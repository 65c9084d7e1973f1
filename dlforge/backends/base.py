"""The backend contract and its registry: one folder per backend (``dlforge/backends/<name>/``), one entry.

A backend compiles the parent ONNX into a payload for one precision (the build stage), opens a fresh
payload for evaluation, and opens a saved engine artifact for the runtime (:meth:`Backend.open_engine`,
what ``dlforge.runtime.open_session`` calls for the backend its card names). The entry also says which
pip extra it needs and which Triton platform serves its payload. Lower precisions come from the
backend-neutral transforms of :mod:`dlforge.precision`. Adding one is a folder whose ``__init__``
imports the module that registers it (discovered: no list to edit)::

    @BACKENDS.register("my-backend")
    class MyBackend(Backend):
        precisions = ("fp32",)
        payload = "model.onnx"
        def compile(self, precision, src, dst, calibration): ...
        def open(self, path, details, info): ...
        @classmethod
        def open_engine(cls, artifact, *, threads=None, device="cpu"): ...
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

from dlforge.artifact import ModelInfo
from dlforge.registry import Registry
from dlforge.runtime.base import Session

if TYPE_CHECKING:  # the runtime opens engines through this module: it need not import the build's transforms
    from dlforge.precision.calibration import Calibration

BACKENDS: Registry[type[Backend]] = Registry("backend", packages=["dlforge.backends"])


class Backend(ABC):
    """Compiles ONNX into an engine payload. Constructed per build with the build's options."""

    name = ""
    precisions: tuple[str, ...] = ()
    payload = ""
    extra: str | None = None  # the pip extra its build and runtime need (None: the base install)
    triton_platform: str | None = None  # the Triton platform that serves its payload (None: not deployable)
    triton_file: str | None = None  # the payload's file name in a Triton version folder (default: ``payload``)
    requires_gpu = False  # its engines run on a GPU only (Triton serves them on KIND_GPU instances)
    options_class: type | None = None  # its own build options (an Options dataclass in its folder), if any

    def __init__(self, options, info: ModelInfo):
        self.options = options
        self.info = info
        self.own = options.for_backend()  # an instance of ``options_class``, checked (None without one)

    @abstractmethod
    def compile(self, precision: str, src: Path, dst: Path, calibration: Calibration) -> dict:
        """Write the payload for ``precision`` to ``dst``; return what the card records of it.

        ``calibration``: the build's :class:`~dlforge.precision.Calibration` (images and settings; a
        lower precision's graph comes from :mod:`dlforge.precision`).
        """

    @abstractmethod
    def open(self, path: Path, details: dict, info: ModelInfo) -> Session:
        """A Session over a freshly compiled payload, for evaluation before it is saved."""

    @classmethod
    @abstractmethod
    def open_engine(cls, artifact, *, threads: int | None = None, device: str = "cpu", **backend_options) -> Session:
        """A Session over a saved engine artifact of this backend (the runtime's side: no build dependencies);
        ``backend_options`` are the backend's own (ONNX Runtime's ``execution_provider``)."""

    def batch_range(self, details: dict) -> tuple[int, int | None] | None:
        """The batch range the engine accepts, recorded in the card (None: whatever the graph says)."""
        return None

    def card_sections(self, details: dict) -> dict:
        return {}

    def card_env(self, details: dict) -> dict:
        return {}

    def resolved_options(self, details: dict) -> dict:
        """Its own options as this build resolved them (an ``auto`` that depends on the machine, made definite),
        recorded in the card's params so a rebuild elsewhere makes the same engine."""
        return {}
