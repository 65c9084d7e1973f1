"""ONNX Runtime backend: CPU by default, CUDA or TensorRT execution providers with onnxruntime-gpu."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _state

from dlforge.artifact import ModelInfo, TensorSpec
from dlforge.errors import InputError
from dlforge.onnx_external import check_external_data
from dlforge.runtime.base import Session
from dlforge.runtime.dtypes import ORT_TO_NUMPY

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def provider_chain(device: str, tensorrt: bool, cache_dir: str | os.PathLike) -> list:
    """The execution providers to request, most preferred first, with their options."""
    if device not in ("cpu", "cuda"):
        raise InputError(f"unknown device {device!r}; expected cpu or cuda")
    chain: list = []
    if tensorrt:
        chain.append((PROVIDERS["tensorrt"], {
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache_dir),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache_dir),
        }))
    if tensorrt or device == "cuda":
        chain.append(PROVIDERS["cuda"])
    chain.append(PROVIDERS["cpu"])
    return chain


def check_providers(chain: list, available: list[str]) -> None:
    for entry in chain:
        name = entry[0] if isinstance(entry, tuple) else entry
        if name not in available:
            raise InputError(f"ONNX Runtime provider {name} is not available here (available: "
                             f"{', '.join(available)}); install onnxruntime-gpu with a matching CUDA, or use "
                             "device='cpu'")


def _spec(node) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) and d > 0 else ("batch" if i == 0 else (d if isinstance(d, str) else "?"))
                  for i, d in enumerate(node.shape))
    return TensorSpec(node.name, shape, ORT_TO_NUMPY.get(node.type, node.type))


def model_info_from_metadata(meta: dict[str, str], inputs, outputs) -> ModelInfo | None:
    """Rebuild the card's model facts from the ``dlforge.*`` metadata an export writes into the graph."""
    if "dlforge.model" not in meta:
        return None
    return ModelInfo(
        name=meta["dlforge.model"], task=meta.get("dlforge.task", "classification"),
        inputs=tuple(inputs), outputs=tuple(outputs),
        value_range=tuple(json.loads(meta.get("dlforge.value_range", "[0, 1]"))),
        labels=tuple(json.loads(meta.get("dlforge.labels", "[]"))),
        preprocessing=meta.get("dlforge.preprocessing") or None,
        audio=json.loads(meta.get("dlforge.audio", "{}")),
    )


class OrtSession(Session):
    backend = "ort"

    def __init__(self, path: str | os.PathLike, *, model: ModelInfo | None = None, precision: str | None = None,
                 threads: int | None = None, device: str = "cpu", tensorrt: bool = False,
                 cache_dir: str | os.PathLike | None = None, batch_range: tuple[int, int | None] | None = None,
                 int8_weight_levels: int | None = None):
        """``int8_weight_levels``: the largest |int8 weight level| of the graph's uint8 x int8 products, when
        known (the card records it); on a CPU where ONNX Runtime's U8S8 kernels saturate
        (:func:`dlforge.env.int8_saturates`) a graph with more than 64 levels, or an unknown one, runs on its
        exact U8U8 kernels instead (``session.x64quantprecision``; slower), so the engine computes its graph."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path} does not exist or is not a file; expected an .onnx model")
        if path.stat().st_size == 0:
            raise InputError(f"{path} is empty; re-export or rebuild it")
        if threads is not None and threads < 1:
            raise InputError(f"threads must be >= 1, got {threads}")
        cache_dir = cache_dir or path.parent / "trt-cache"
        chain = provider_chain(device, tensorrt, cache_dir)
        check_providers(chain, ort.get_available_providers())
        def make_options():
            options = ort.SessionOptions()
            options.log_severity_level = 3  # errors only: old exporters' initializer-in-inputs warnings are noise
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if threads:
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
            return options

        levels = int8_weight_levels if device == "cpu" and not tensorrt else 0
        try:
            self._session, self.exact_int8_kernels = inference_session(str(path), make_options, chain, levels)
        except Exception as exc:  # onnxruntime raises its own exception types, not exported stably
            text = str(exc)
            if "escapes model directory" in text or "outside" in text and "external" in text.lower():
                raise InputError(f"refusing {path}: its external data points outside the model's directory") from exc
            first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
            raise InputError(f"{path} could not be loaded by ONNX Runtime ({first}); is it a valid ONNX model?") from exc
        inputs = tuple(_spec(i) for i in self._session.get_inputs())
        outputs = tuple(_spec(o) for o in self._session.get_outputs())
        if model is None:
            model = model_info_from_metadata(self._session.get_modelmeta().custom_metadata_map, inputs, outputs)
        super().__init__(inputs, outputs, model=model, precision=precision)
        self.path = path
        self.providers = self._session.get_providers()
        self._output_names = [o.name for o in outputs]
        if batch_range is not None:
            self._batch_limit = (int(batch_range[0]), None if batch_range[1] is None else int(batch_range[1]))
        if tensorrt:
            self.backend = "ort-tensorrt"
        elif device == "cuda":
            self.backend = "ort-cuda"

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._output_names, self._session.run(self._output_names, feeds)))

    def _close(self) -> None:
        self._session = None


def needs_exact_kernels(weight_levels: int | None) -> bool:
    """Whether ONNX Runtime's U8S8 kernels would saturate this graph's products on this CPU: weights beyond
    7 bits (or unknown) on an x86 CPU without VNNI/AMX."""
    from dlforge.env import int8_saturates

    return int8_saturates() and (weight_levels is None or weight_levels > SAFE_LEVELS)


SAFE_LEVELS = 64  # |int8 level| at or below which a uint8 x int8 pair sum fits int16 (255 * 64 * 2 = 32640)


def inference_session(model, make_options=None, providers=("CPUExecutionProvider",),
                      weight_levels: int | None = None) -> tuple[ort.InferenceSession, bool]:
    """An ``ort.InferenceSession`` over ``model`` (a path or bytes) with ``make_options()``'s options, on ONNX
    Runtime's exact U8U8 kernels where its U8S8 ones would saturate (:func:`needs_exact_kernels`; they act with
    graph optimizations on); and whether it is on them. A graph those kernels cannot load (int8 activations:
    no S8S8 QGemm among them) is opened as it is. Every CPU session dlforge opens comes from here."""
    make_options = make_options or ort.SessionOptions
    if needs_exact_kernels(weight_levels):
        options = make_options()
        options.add_session_config_entry("session.x64quantprecision", "1")
        try:
            return ort.InferenceSession(model, sess_options=options, providers=list(providers)), True
        except _NO_EXACT_KERNEL:  # e.g. no U8U8 QGemm: opened below as it is; any other error is raised
            pass
    return ort.InferenceSession(model, sess_options=make_options(), providers=list(providers)), False


# what ONNX Runtime raises when its U8U8 mode has no kernel for a node
_NO_EXACT_KERNEL = tuple(t for t in (getattr(_state, "NotImplemented", None),) if isinstance(t, type)) or (RuntimeError,)


def open_onnx(path: Path, model, precision, execution_provider, threads, device, batch_range=None,
              int8_weight_levels: int | None = None) -> OrtSession:
    """An :class:`OrtSession` over an ONNX file, its external data checked to stay in its directory."""
    check_external_data(path)
    return OrtSession(path, model=model, precision=precision, threads=threads, device=device,
                      tensorrt=execution_provider == "tensorrt", batch_range=batch_range,
                      int8_weight_levels=int8_weight_levels)
