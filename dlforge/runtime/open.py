"""``open_session``: one call from an artifact directory (or a bare ``.onnx``) to a running Session.

Engines are opened by the backend their card names (:data:`dlforge.backends.BACKENDS`, its
``open_engine``): a new backend's folder holds its opener beside its compiler.
"""

from __future__ import annotations

import os
from pathlib import Path

from dlforge.artifact import Artifact, open_artifact
from dlforge.errors import InputError, MissingDependency
from dlforge.runtime.base import Session

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
    from dlforge.backends import BACKENDS

    if backend not in ("auto", "ort-tensorrt") and backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; expected auto, ort-tensorrt or one of "
                         f"{', '.join(BACKENDS.names())}")
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
            return _onnx(path, None, None, provider, threads, device)
        artifact = open_artifact(path, ["engine", "onnx"])
    engine_backend = artifact.card.sections.get("backend", "ort")
    if backend == "ort-tensorrt":
        if not artifact.payload_path.suffix == ".onnx":
            raise InputError(f"{artifact.path} holds a {engine_backend} engine, not ONNX; backend 'ort-tensorrt' runs "
                             "ONNX payloads")
        return BACKENDS.get("ort").open_engine(artifact, threads=threads, device=device, execution_provider="tensorrt")
    if backend not in ("auto", engine_backend):
        raise InputError(f"{artifact.path} is a {engine_backend} engine, not {backend}; build one with "
                         f"`dlforge build {artifact.path} --backend {backend}`, or open it with backend='auto'")
    return BACKENDS.get(engine_backend).open_engine(artifact, threads=threads, device=device)


def _onnx(path: Path, *args) -> Session:
    try:
        from dlforge.backends.ort.session import open_onnx
    except ImportError as exc:
        raise MissingDependency("onnxruntime", None, "running an ONNX model") from exc
    return open_onnx(path, *args)
