"""TensorRT backend: ``TrtSession`` runs a serialized engine behind the Session contract.

The card is checked against the running TensorRT and GPU *before* the engine is deserialized.
Buffers (pinned host, device) are allocated once at the profile's maximum shapes and reused; each
call sets the input shapes, copies in, enqueues, copies out and synchronizes on one stream. An
execution context is not thread-safe, so calls are serialized with a lock.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import tensorrt as trt

from dlforge.artifact import Artifact, TensorSpec
from dlforge.backends.tensorrt.decisions import ShapeProfile, check_engine_compatibility
from dlforge.errors import DeviceError, InputError
from dlforge.runtime.base import Session
from dlforge.backends.tensorrt.cuda_mem import (CudaGraph, DeviceBuffer, PinnedBuffer, Stream, copy_to_device, copy_to_host,
                                      device_info)
from dlforge.runtime.dtypes import TRT_TO_NUMPY

_LOGGER = trt.Logger(trt.Logger.WARNING)


class TrtSession(Session):
    backend = "tensorrt"
    capabilities = frozenset({"device-resident", "cuda-graph"})

    def __init__(self, engine_path, *, model=None, precision: str | None = None, profiles: list[dict] = (),
                 env: dict | None = None, source: str = "ONNX_DIR", device: int = 0):
        """Open a serialized engine; ``env`` (the card's) is checked against this machine first."""
        running = device_info(device)
        check_engine_compatibility(env or {}, trt_version=trt.__version__, gpu=running["gpu"],
                                   compute_capability=running["compute_capability"], source=source)
        runtime = trt.Runtime(_LOGGER)
        self._engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self._engine is None:
            raise InputError(f"TensorRT could not deserialize {engine_path}; rebuild it with "
                             f"dlforge build {source} --backend tensorrt")
        self._context = self._engine.create_execution_context()
        if self._context is None:  # TensorRT returns None, e.g. when the device is out of memory
            raise DeviceError(f"TensorRT could not create an execution context for {engine_path} (device memory?)")
        self.profiles = {p["name"]: ShapeProfile.from_dict(p) for p in profiles}
        inputs, outputs = [], []
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            dims = tuple(self._engine.get_tensor_shape(name))
            spec = TensorSpec(name, tuple("batch" if d < 0 and j == 0 else d for j, d in enumerate(dims)),
                              TRT_TO_NUMPY[self._engine.get_tensor_dtype(name).name])
            (inputs if self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(spec)
        super().__init__(tuple(inputs), tuple(outputs), model=model, precision=precision)
        first = self.profiles.get(inputs[0].name) if inputs else None
        if first is not None:
            self._batch_limit = (first.min[0], first.max[0])
        self._stream = Stream()
        self._lock = threading.Lock()
        self._host: dict[str, PinnedBuffer] = {}
        self._device: dict[str, DeviceBuffer] = {}
        max_shapes = {name: p.max for name, p in self.profiles.items()}
        for spec in inputs:
            shape = max_shapes.get(spec.name) or tuple(d for d in spec.shape)
            self._context.set_input_shape(spec.name, shape)
        for spec in (*inputs, *outputs):
            shape = tuple(self._context.get_tensor_shape(spec.name))
            self._host[spec.name] = PinnedBuffer(shape, spec.dtype)
            self._device[spec.name] = DeviceBuffer(self._host[spec.name].nbytes)
            self._context.set_tensor_address(spec.name, self._device[spec.name].ptr)
        self._graph = None

    def check_shape(self, spec: TensorSpec, shape: tuple[int, ...]) -> None:
        profile = self.profiles.get(spec.name)
        if profile is not None and not profile.contains(shape):
            raise InputError(f"input {spec.name!r} shape {shape} is outside the engine's optimization profile "
                             f"(min {profile.min}, max {profile.max}); rebuild with a wider --min-batch/--max-batch")

    @classmethod
    def from_artifact(cls, artifact: Artifact, device: int = 0) -> TrtSession:
        card = artifact.card
        return cls(artifact.payload_path, model=card.model, precision=card.sections.get("precision"),
                   profiles=card.sections.get("profiles", []), env=card.env,
                   source=(card.parent or {}).get("path", "ONNX_DIR"), device=device)

    # -- the three steps, public so bench can time compute alone (device-resident I/O) ----------
    def prepare(self, feeds: dict[str, np.ndarray]) -> None:
        """Set input shapes and copy inputs to the device (feeds already validated)."""
        for name, x in feeds.items():
            if not self._context.set_input_shape(name, x.shape):
                raise InputError(f"input {name!r} shape {x.shape} is not one this TensorRT engine accepts")
            host = self._host[name]
            flat = host.array.reshape(-1)
            flat[: x.size] = x.reshape(-1)
            copy_to_device(self._device[name], host.ptr, x.nbytes, self._stream)

    def execute(self, synchronize: bool = True) -> None:
        if not self._context.execute_async_v3(self._stream.ptr):
            raise DeviceError("TensorRT failed to enqueue the inference (see the TensorRT log)")
        if synchronize:
            self._stream.synchronize()

    def capture_graph(self) -> None:
        """Capture ``execute`` for the current input shapes as a CUDA graph (replayed by ``launch_graph``)."""
        self.execute()  # TensorRT needs one run before capture to settle shape-dependent state
        self._graph = CudaGraph(self._stream, lambda: self.execute(synchronize=False))

    def launch_graph(self) -> None:
        self._graph.launch(self._stream)
        self._stream.synchronize()

    def fetch(self) -> dict[str, np.ndarray]:
        """Copy the outputs of the last execution to the host."""
        out = {}
        for spec in self.outputs:
            shape = tuple(self._context.get_tensor_shape(spec.name))
            host = self._host[spec.name]
            nbytes = int(np.prod(shape)) * host.dtype.itemsize
            copy_to_host(host.ptr, self._device[spec.name], nbytes, self._stream)
            out[spec.name] = (shape, host)
        self._stream.synchronize()
        return {name: host.array.reshape(-1)[: int(np.prod(shape))].reshape(shape).copy()
                for name, (shape, host) in out.items()}

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            self.prepare(feeds)
            self.execute(synchronize=False)
            return self.fetch()

    def _close(self) -> None:
        for buf in (*self._host.values(), *self._device.values()):
            buf.free()
        self._host, self._device = {}, {}
        self._stream.destroy()
        self._context = self._engine = None
