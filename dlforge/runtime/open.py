"""``open_session``: one call from an artifact directory (or a bare ``.onnx``) to a running Session.

Engines are opened by the runtime registered under the backend name their card records
(:data:`RUNTIMES`); a new backend registers its opener beside its build module.
"""

from __future__ import annotations

import os
from pathlib import Path

from dlforge.artifact import Artifact, open_artifact
from dlforge.errors import InputError, MissingDependency
from dlforge.onnx_external import check_external_data
from dlforge.registry import Registry
from dlforge.runtime.base import Session

# name -> opener(artifact, threads=, device=) -> Session
RUNTIMES: Registry = Registry("runtime")


@RUNTIMES.register("ort")
def open_ort(artifact: Artifact, *, threads: int | None = None, device: str = "cpu",
             execution_provider: str | None = None) -> Session:
    card = artifact.card
    return _ort(artifact.payload_path, card.model, card.sections.get("precision", "fp32"), execution_provider,
                threads, device, card.sections.get("batch_range"))


@RUNTIMES.register("tensorrt")
def open_tensorrt(artifact: Artifact, *, threads: int | None = None, device: str = "cpu") -> Session:
    try:
        from dlforge.runtime.tensorrt import TrtSession
    except ImportError as exc:
        raise MissingDependency("tensorrt", "tensorrt", "running a TensorRT engine") from exc
    return TrtSession.from_artifact(artifact)


def open_session(source: str | os.PathLike | Artifact, backend: str = "auto", *, threads: int | None = None,
                 device: str = "cpu") -> Session:
    """Open an engine or onnx artifact directory, or a plain ``.onnx`` file with no card.

    Args:
        source: an artifact directory (or :class:`Artifact`), or a path to an ``.onnx`` file.
        backend: ``"auto"`` (the runtime the card names; ONNX Runtime for ONNX), a registered runtime
            name (``"ort"``, ``"tensorrt"``, ...), or ``"ort-tensorrt"`` (ONNX Runtime's TensorRT
            execution provider, for ONNX payloads).
        threads: intra-op threads for CPU backends (default: the backend's own choice).
        device: ``"cpu"`` or ``"cuda"`` for ONNX Runtime.
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InputError(f"threads must be a positive integer, got {threads!r}")
    if backend not in ("auto", "ort-tensorrt") and backend not in RUNTIMES:
        raise InputError(f"unknown backend {backend!r}; expected auto, ort-tensorrt or one of "
                         f"{', '.join(RUNTIMES.names())}")
    if isinstance(source, Artifact):
        artifact = source
    else:
        path = Path(source)
        if path.is_file():
            if path.suffix != ".onnx":
                raise InputError(f"{path} is not an .onnx file or an artifact directory")
            provider = "tensorrt" if backend == "ort-tensorrt" else None
            if backend not in ("auto", "ort", "ort-tensorrt"):
                raise InputError(f"{path} is a plain ONNX file; open it with backend 'ort' or 'ort-tensorrt'")
            return _ort(path, None, None, provider, threads, device)
        artifact = open_artifact(path, ["engine", "onnx"])
    engine_backend = artifact.card.sections.get("backend", "ort")
    if backend == "ort-tensorrt":
        if not artifact.payload_path.suffix == ".onnx":
            raise InputError(f"{artifact.path} holds a {engine_backend} engine, not ONNX; backend 'ort-tensorrt' runs "
                             "ONNX payloads")
        return open_ort(artifact, threads=threads, device=device, execution_provider="tensorrt")
    if backend not in ("auto", engine_backend):
        raise InputError(f"{artifact.path} is a {engine_backend} engine, not {backend}; build one with "
                         f"`dlforge build {artifact.path} --backend {backend}`, or open it with backend='auto'")
    return RUNTIMES.get(engine_backend)(artifact, threads=threads, device=device)


def _ort(path: Path, model, precision, execution_provider, threads, device, batch_range=None) -> Session:
    try:
        from dlforge.runtime.ort import OrtSession
    except ImportError as exc:
        raise MissingDependency("onnxruntime", None, "running an ONNX model") from exc
    check_external_data(path)
    return OrtSession(path, model=model, precision=precision, threads=threads, device=device,
                      tensorrt=execution_provider == "tensorrt", batch_range=batch_range)
