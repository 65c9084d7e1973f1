"""ONNX Runtime engines: offline-optimized fp32, and INT8 by static QDQ quantization.

INT8 uses symmetric signed int8 for weights and activations (S8S8) in QDQ format: the same graph
TensorRT compiles with explicit quantization, and one that ONNX Runtime on a CPU can run and
measure. Whether INT8 is faster than fp32 depends on the CPU (VNNI / AMX); dlforge measures it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from dlforge.build.backends import BACKENDS, Backend
from dlforge.build.options import CALIBRATION_METHODS
from dlforge.errors import InputError, StageFailed, require


def optimize_fp32(src: Path, dst: Path) -> dict:
    """Save ONNX Runtime's offline graph optimization of ``src`` as ``dst``.

    The extended level (constant folding, node fusions) is saved; layout transforms specific to
    one CPU's instruction set are left to load time so the file stays portable between CPUs.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(dst)
    options.log_severity_level = 3
    ort.InferenceSession(str(src), sess_options=options, providers=["CPUExecutionProvider"])
    return {"graph_optimization": "ORT_ENABLE_EXTENDED (offline)"}


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a numpy array."""

    def __init__(self, name: str, x: np.ndarray, batch_size: int):
        self._batches = iter([{name: x[i:i + batch_size]} for i in range(0, len(x), batch_size)])

    def get_next(self):
        return next(self._batches, None)


def quantize_int8(src: Path, dst: Path, calib_x: np.ndarray, *, method: str = "minmax",
                  per_channel: bool = True, static_batch: int | None = None) -> dict:
    """Static INT8 QDQ quantization of ``src`` calibrated on ``calib_x``; written to ``dst``."""
    if method not in CALIBRATION_METHODS:
        raise InputError(f"unknown calibration method {method!r}; expected one of {', '.join(CALIBRATION_METHODS)}")
    require("onnx", "toolkit", "INT8 quantization")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    import onnxruntime as ort

    name = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
    with tempfile.TemporaryDirectory(prefix="dlforge-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        except Exception:  # pre-processing is an optimization; quantize the original if it fails
            prepared = src
        try:
            quantize_static(
                str(prepared), str(dst), _Reader(name, calib_x, static_batch or 64),
                quant_format=QuantFormat.QDQ, per_channel=per_channel,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=calibrate,
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                               "CalibTensorRangeSymmetric": True},
            )
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StageFailed(f"INT8 quantization failed: {first}") from exc
    return {"format": "QDQ", "activations": "int8 symmetric", "weights": "int8 symmetric",
            "per_channel": per_channel, "method": method, "samples": int(len(calib_x))}


def quantize_calibrated(src: Path, dst: Path, calibration: dict) -> dict:
    """:func:`quantize_int8` with the build's calibration settings (see :meth:`Backend.compile`)."""
    return quantize_int8(src, dst, calibration["calib_x"], method=calibration["calib_method"],
                         per_channel=calibration["per_channel"], static_batch=calibration["static_batch"])


@BACKENDS.register("ort")
class OrtBackend(Backend):
    """ONNX Runtime on CPU: the engine is an ONNX file (offline-optimized fp32, or INT8 QDQ).

    The batch range given with ``--min-batch`` / ``--max-batch`` is recorded in the card and enforced
    by the runtime, the same rule a TensorRT profile imposes.
    """

    precisions = ("fp32", "int8")
    payload = "model.onnx"

    def compile(self, precision, src, dst, calibration):
        if precision == "fp32":
            return optimize_fp32(src, dst)
        return quantize_calibrated(src, dst, calibration)

    def batch_range(self, details):
        o = self.options
        if o.max_batch is None and o.min_batch == 1:
            return None
        return (o.min_batch, o.max_batch)

    def open(self, path, details, info):
        from dlforge.runtime.ort import OrtSession

        return OrtSession(path, model=info, batch_range=self.batch_range(details))
