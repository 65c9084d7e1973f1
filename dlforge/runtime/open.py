"""``open_session``: one call from an artifact directory (or a bare ``.onnx``) to a running Session."""

from __future__ import annotations

import os
from pathlib import Path

from dlforge.artifact import Artifact, open_artifact
from dlforge.errors import InputError, MissingDependency
from dlforge.runtime.base import Session
from dlforge.onnx_external import check_external_data

BACKENDS = ("auto", "ort", "ort-tensorrt", "tensorrt")


def open_session(source: str | os.PathLike | Artifact, backend: str = "auto", *, threads: int | None = None,
                 device: str = "cpu") -> Session:
    """Open an engine or onnx artifact directory, or a plain ``.onnx`` file with no card.

    Args:
        source: an artifact directory (or :class:`Artifact`), or a path to an ``.onnx`` file.
        backend: ``"auto"`` (what the card says; ONNX Runtime for ONNX), ``"ort"``, ``"ort-tensorrt"``
            (ONNX Runtime's TensorRT execution provider) or ``"tensorrt"``.
        threads: intra-op threads for CPU backends (default: the backend's own choice).
        device: ``"cpu"`` or ``"cuda"`` for ONNX Runtime.
    """
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if isinstance(source, Artifact):
        artifact = source
    else:
        path = Path(source)
        if path.is_file():
            if path.suffix != ".onnx":
                raise InputError(f"{path} is not an .onnx file or an artifact directory")
            return _ort(path, None, None, backend, threads, device)
        artifact = open_artifact(path, ["engine", "onnx"])
    card = artifact.card
    engine_backend = card.sections.get("backend", "ort")
    if backend == "auto":
        backend = "tensorrt" if engine_backend == "tensorrt" else "ort"
    if engine_backend == "tensorrt" or backend == "tensorrt":
        if engine_backend != "tensorrt":
            raise InputError(f"{artifact.path} is an ONNX Runtime artifact, not a TensorRT engine; build one with "
                             f"`dlforge build {artifact.path} --backend tensorrt` or open it with backend='ort'")
        try:
            from dlforge.runtime.tensorrt import TrtSession
        except ImportError as exc:
            raise MissingDependency("tensorrt", "tensorrt", "running a TensorRT engine") from exc
        return TrtSession(artifact)
    return _ort(artifact.payload_path, card.model, card.sections.get("precision", "fp32"), backend, threads, device,
                card.sections.get("batch_range"))


def _ort(path: Path, model, precision, backend: str, threads, device, batch_range=None) -> Session:
    try:
        from dlforge.runtime.ort import OrtSession
    except ImportError as exc:
        raise MissingDependency("onnxruntime", None, "running an ONNX model") from exc
    check_external_data(path)
    return OrtSession(path, model=model, precision=precision, threads=threads, device=device,
                      tensorrt=backend == "ort-tensorrt", batch_range=batch_range)
