"""``Session``: the one inference contract every backend implements.

The public ``run`` checks the feeds against the model's input specs (names, dtypes, rank, static
dimensions) and says exactly what was expected; a backend writes only ``_run``, which receives
validated, contiguous arrays.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from dlforge.artifact import ModelInfo, TensorSpec
from dlforge.errors import InputError
from dlforge.runtime.dtypes import numpy_dtype


class Session:
    """A loaded model. Safe to call from several threads; use as a context manager to release it."""

    backend = "abstract"
    # What a backend can do beyond run(): "device-resident" (prepare/execute/fetch, so compute can
    # be timed without host copies) and "cuda-graph" (capture_graph/launch_graph). Callers check
    # capabilities, never backend names.
    capabilities: frozenset[str] = frozenset()

    def __init__(self, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...],
                 model: ModelInfo | None = None, precision: str | None = None):
        self.inputs = inputs
        self.outputs = outputs
        self.model = model
        self.precision = precision
        self._checks: list | None = None
        self._batch_limit: tuple[int, int | None] | None = None
        self._closed = False

    # -- the contract ---------------------------------------------------------------------------
    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on ``feeds`` (input name -> array); returns output name -> array."""
        if self._closed:
            raise InputError(f"this {self.backend} session was closed; open a new one to run the model")
        if not isinstance(feeds, Mapping):
            names = ", ".join(t.name for t in self.inputs)
            raise InputError(f"run() takes a dict of input name -> numpy array (inputs: {names}), got "
                             f"{type(feeds).__name__}; for a single-input model use predict(x)")
        return self._run(self.check_feeds(feeds))

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the backend's resources. The session cannot be used afterwards; closing twice is harmless."""
        if not self._closed:
            self._closed = True
            self._close()

    def _close(self) -> None:
        """Backend hook: release resources."""

    # -- conveniences ---------------------------------------------------------------------------
    def predict(self, x: np.ndarray) -> np.ndarray:
        """The first output for a single-input model's input ``x``."""
        if len(self.inputs) != 1:
            raise InputError(f"predict() needs a single-input model; this one has {len(self.inputs)} inputs "
                             f"({', '.join(t.name for t in self.inputs)}): use run()")
        return self.run({self.inputs[0].name: x})[self.outputs[0].name]

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        ins = ", ".join(map(str, self.inputs))
        outs = ", ".join(map(str, self.outputs))
        return f"<{type(self).__name__} {self.backend} ({ins}) -> ({outs})>"

    # -- validation -----------------------------------------------------------------------------
    def check_feeds(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate ``feeds`` against the input specs; return them as contiguous arrays.

        This runs on every call, so the common case (all correct) does only a few comparisons
        against expectations computed once per session.
        """
        checks = self._checks
        if checks is None:
            checks = self._checks = [(t, numpy_dtype(t.dtype), len(t.shape),
                                      tuple((i, d) for i, d in enumerate(t.shape) if isinstance(d, int) and d > 0))
                                     for t in self.inputs]
        if len(feeds) != len(checks):
            self._name_error(feeds)
        out = {}
        for spec, dtype, rank, static in checks:
            value = feeds.get(spec.name)
            if value is None:
                self._name_error(feeds)
            if not isinstance(value, np.ndarray):
                raise InputError(f"input {spec.name!r} must be a numpy array, got {type(value).__name__}")
            if value.dtype != dtype:
                raise InputError(f"input {spec.name!r} has dtype {value.dtype}, expected {dtype} "
                                 f"({spec}); convert with x.astype(np.{dtype})")
            shape = value.shape
            if len(shape) != rank:
                raise InputError(f"input {spec.name!r} has shape {shape} (rank {len(shape)}), expected "
                                 f"rank {rank}: {spec}")
            for axis, want in static:
                if shape[axis] != want:
                    raise InputError(f"input {spec.name!r} has shape {shape}, expected {spec} "
                                     f"(dimension {axis} must be {want})")
            if 0 in shape:
                raise InputError(f"input {spec.name!r} has an empty dimension (shape {shape})")
            self.check_shape(spec, shape)
            out[spec.name] = value if value.flags.c_contiguous else np.ascontiguousarray(value)
        return out

    def _name_error(self, feeds: Mapping) -> None:
        expected = {t.name for t in self.inputs}
        missing = [t.name for t in self.inputs if t.name not in feeds]
        unexpected = sorted(set(feeds) - expected)
        raise InputError(
            f"inputs {sorted(feeds)} do not match the model's ({', '.join(map(str, self.inputs))})"
            + (f"; missing {missing}" if missing else "") + (f"; unexpected {unexpected}" if unexpected else ""))

    @property
    def batch_range(self) -> tuple[int, int | None]:
        """Smallest and largest batch the first input accepts (None: no upper limit)."""
        limit = self._batch_limit
        if limit is not None:
            return limit
        first = self.inputs[0].shape[0] if self.inputs and self.inputs[0].shape else None
        return (first, first) if isinstance(first, int) else (1, None)

    def check_shape(self, spec: TensorSpec, shape: tuple[int, ...]) -> None:
        """Limits beyond the spec: a batch range (an engine built with one, as TensorRT profiles impose)."""
        limit = self._batch_limit
        if limit is None or not shape:
            return
        lo, hi = limit
        if shape[0] < lo or (hi is not None and shape[0] > hi):
            raise InputError(f"input {spec.name!r} has batch {shape[0]}; this engine accepts batches {lo} to "
                             f"{hi if hi is not None else 'any'} (its batch range): split the input, or use "
                             "dlforge.runtime.open_deployed(...).predict, which batches for you")
