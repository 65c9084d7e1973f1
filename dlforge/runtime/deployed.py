"""The deployed-model layer: one object for "a compiled model and what it is", used by every stage.

:func:`open_deployed` opens an engine directory, an onnx directory or a plain ``.onnx`` file and
returns a :class:`DeployedModel` that

- predicts in batches that respect the engine's batch range (a static batch, a TensorRT
  optimization profile, or an ONNX Runtime engine built with a batch range), padding a short last
  batch and dropping the padding's outputs;
- knows its labels, input value range, preprocessing and task;
- resolves its lineage with every parent's sha256 compared to what the child recorded;
- finds the dataset it was trained on by one rule (:func:`dlforge.artifact.training_data`).

Build evaluation, bench, audit and poison all use it. numpy + the backend only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlforge.artifact import Artifact, DatasetSpec, dataset_spec, is_artifact, lineage, open_artifact
from dlforge.artifact import source_checkpoint, training_data
from dlforge.errors import InputError
from dlforge.runtime.base import Session
from dlforge.runtime.dtypes import numpy_dtype

DEFAULT_BATCH = 256


def batch_plan(n: int, want: int, batch_range: tuple[int, int | None]) -> list[tuple[int, int, int]]:
    """Split ``n`` samples into ``(start, stop, padded_size)`` batches within ``batch_range``.

    The batch is ``want`` clipped to the range; a last batch smaller than the range's minimum is
    padded up to it (the caller repeats its last sample and drops the extra outputs).
    """
    lo, hi = batch_range
    if n < 1:
        raise InputError("no samples to run the model on")
    if want < 1:
        raise InputError(f"batch size must be >= 1, got {want}")
    size = max(lo, min(want, hi) if hi is not None else want)
    plan = []
    for start in range(0, n, size):
        stop = min(start + size, n)
        plan.append((start, stop, max(stop - start, lo)))
    return plan


@dataclass
class DeployedModel:
    """A compiled model under test or in use: a Session plus the facts its card holds."""

    path: Path
    session: Session
    artifact: Artifact | None = None
    name: str | None = None  # how reports call it (default: the directory or file name)

    # -- what it is -----------------------------------------------------------------------------
    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return self.path.name if self.path.is_dir() else self.path.stem

    @property
    def kind(self) -> str:
        return self.artifact.kind if self.artifact else "onnx-file"

    @property
    def backend(self) -> str:
        return self.artifact.card.sections.get("backend", "ort") if self.artifact else "ort"

    @property
    def precision(self) -> str:
        if self.artifact is None:
            return "as-is"
        return self.artifact.card.sections.get("precision", "fp32")

    @property
    def info(self):
        return self.session.model

    @property
    def task(self) -> str | None:
        return self.info.task if self.info else None

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.info.labels) if self.info and self.info.labels else ()

    @property
    def value_range(self) -> tuple[float, float]:
        return tuple(self.info.value_range) if self.info else (0.0, 1.0)

    @property
    def preprocessing(self) -> str | None:
        return self.info.preprocessing if self.info else None

    @property
    def input_shape(self) -> tuple:
        """The input's shape without the batch dimension."""
        return tuple(self.session.inputs[0].shape[1:])

    @property
    def batch_range(self) -> tuple[int, int | None]:
        return self.session.batch_range

    # -- where it came from ---------------------------------------------------------------------
    def lineage(self) -> list[Artifact]:
        """This artifact and its verified ancestors, nearest first (empty for a plain ``.onnx``)."""
        return lineage(self.artifact) if self.artifact else []

    def source_checkpoint(self) -> Artifact | None:
        return source_checkpoint(self.artifact) if self.artifact else None

    def training_data(self) -> tuple[str, str | None] | None:
        """``(dataset, data_dir)`` the model was trained on, or None when nothing says."""
        return training_data(self.artifact) if self.artifact else None

    def dataset_spec(self) -> DatasetSpec | None:
        """:meth:`training_data` with how to read an image folder again (:func:`dlforge.artifact.dataset_spec`)."""
        return dataset_spec(self.artifact) if self.artifact else None

    # -- running it -----------------------------------------------------------------------------
    def predict(self, x: np.ndarray, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
        """The first output over ``x``, in batches the engine accepts (float32 in, as the model takes)."""
        if not isinstance(x, np.ndarray) or x.ndim != len(self.session.inputs[0].shape):
            raise InputError(f"{self.label} expects a numpy array of shape (N, {', '.join(map(str, self.input_shape))}), "
                             f"got {getattr(x, 'shape', type(x).__name__)}")
        name = self.session.inputs[0].name
        out_name = self.session.outputs[0].name
        dtype = numpy_dtype(self.session.inputs[0].dtype)
        outs = []
        for start, stop, padded in batch_plan(len(x), batch_size, self.batch_range):
            chunk = np.ascontiguousarray(x[start:stop], dtype=dtype)
            if padded > len(chunk):
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], padded - len(chunk), axis=0)])
            outs.append(self.session.run({name: chunk})[out_name][:stop - start])
        return np.concatenate(outs)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> DeployedModel:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def open_deployed(source: str | os.PathLike | Artifact, *, backend: str = "auto", threads: int | None = None,
                  device: str = "cpu", single_input: bool = True) -> DeployedModel:
    """Open an engine or onnx artifact directory, or a plain ``.onnx`` file, as a :class:`DeployedModel`.

    The artifact's payload (and external data) is verified against its card; its lineage is
    verified when asked for. ``single_input`` refuses models with several inputs (what the stages
    that feed images need), with an error saying so.
    """
    from dlforge.runtime.open import open_session

    if isinstance(source, Artifact):
        artifact, path = source, source.path
    else:
        path = Path(source)
        if path.is_dir() and is_artifact(path):
            artifact = open_artifact(path, ["engine", "onnx"])
        elif path.is_file() and path.suffix == ".onnx":
            artifact = None
        else:
            raise InputError(f"{path} is neither an engine/onnx artifact directory nor an .onnx file; pass the "
                             "output of `dlforge build` or `dlforge export`, or an .onnx file")
    session = open_session(artifact or path, backend, threads=threads, device=device)
    if single_input and len(session.inputs) != 1:
        session.close()
        raise InputError(f"{path} has {len(session.inputs)} inputs ({', '.join(t.name for t in session.inputs)}); "
                         "dlforge feeds single-input models")
    return DeployedModel(path=path, session=session, artifact=artifact)
