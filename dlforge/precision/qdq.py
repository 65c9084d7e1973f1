"""INT8 by static QDQ quantization (ONNX Runtime's quantizer): the graph transform every INT8 backend uses.

Weights are symmetric signed int8, per output channel by default. Activations differ by consumer:

* ONNX Runtime on x86 (``activations="uint8"``): asymmetric uint8, the U8S8 form its integer
  kernels are built for (``vpdpbusd`` multiplies unsigned by signed bytes; with signed activations
  ORT has to shift them to unsigned first). On the MNIST LeNet this is 1.25-1.4x faster than S8S8
  (``python bench/int8_speed.py``).
* TensorRT (``activations="int8"``): symmetric signed int8, zero point 0, the only form its explicit
  quantization accepts.

``exclude`` keeps the named nodes in fp32: no Q/DQ pairs are inserted around them, so the graph
itself carries a per-layer precision plan (see :mod:`dlforge.build.mixed`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from dlforge.errors import InputError, StageFailed, require
from dlforge.precision.calibration import CALIBRATION_METHODS, Calibration


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a numpy array."""

    def __init__(self, name: str, x: np.ndarray, batch_size: int):
        self._batches = iter([{name: x[i:i + batch_size]} for i in range(0, len(x), batch_size)])

    def get_next(self):
        return next(self._batches, None)


ACTIVATIONS = ("uint8", "int8")


def quantizable_ops() -> set[str]:
    """The op types ONNX Runtime's QDQ quantizer handles (and calibrates the inputs and outputs of)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return set(QDQRegistry) | set(QLinearOpsRegistry)


def prepare_for_quantization(src: Path, dst: Path) -> Path:
    """ONNX Runtime's quantization pre-processing (shape inference, graph clean-up) of ``src``.

    Returns ``dst``, or ``src`` itself when pre-processing fails (it is an optimization only).
    Node names are kept, so a plan naming the parent's nodes applies to the prepared graph.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
        return dst
    except Exception:
        return src


def quantize_prepared(prepared: Path, dst: Path, calib_x: np.ndarray, *, method: str = "minmax",
                      per_channel: bool = True, static_batch: int | None = None, activations: str = "uint8",
                      exclude: tuple[str, ...] = (), cache: Path | None = None, reduce_range: bool = False) -> dict:
    """Static INT8 QDQ quantization of an already prepared graph (see :func:`quantize_int8`).

    ``reduce_range``: weights in 7 bits ([-64, 63]), so that a uint8 activation times an int8 weight, summed
    in pairs, fits int16: what ONNX Runtime's U8S8 kernels need on x86 CPUs without VNNI, where full-range
    weights saturate (:func:`dlforge.env.int8_saturates`) and the engine computes something other than its
    graph.

    ``cache``: a file for the calibrated tensor ranges; when it exists they are read instead of
    calibrating again (what makes trying many plans on one model cheap).
    """
    if method not in CALIBRATION_METHODS:
        raise InputError(f"unknown calibration method {method!r}; expected one of {', '.join(CALIBRATION_METHODS)}")
    if activations not in ACTIVATIONS:
        raise InputError(f"unknown activation type {activations!r}; expected one of {', '.join(ACTIVATIONS)}")
    require("onnx", "toolkit", "INT8 quantization")
    import inspect

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    import onnxruntime as ort

    name = ort.InferenceSession(str(prepared), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
    signed = activations == "int8"
    extra = {"ActivationSymmetric": signed, "WeightSymmetric": True, "CalibTensorRangeSymmetric": signed}
    cached: dict[str, str] = {}
    can_cache = "calibration_cache_path" in inspect.signature(quantize_static).parameters
    if method == "entropy" and not can_cache:
        raise InputError("--calib-method entropy needs onnxruntime with calibration caches (1.32 or newer); "
                         "upgrade it or use minmax / percentile")
    scratch = tempfile.TemporaryDirectory(prefix="dlforge-ranges-")
    if method == "entropy" and cache is None:
        cache = Path(scratch.name) / "ranges.json"
    if cache is not None and can_cache:
        cached = {"calibration_cache_path": str(cache)}
    def reader() -> _Reader:
        return _Reader(name, calib_x, static_batch or 64)

    logging.disable(logging.WARNING)  # the quantizer logs per-tensor notes on the root logger
    try:
        if method == "entropy" and cache is not None and not cache.exists():  # entropy always has a cache here
            _entropy_ranges(prepared, reader(), signed, cache)
        with contextlib.redirect_stdout(io.StringIO()):  # histogram calibrators print progress; stdout may be --json
            quantize_static(
                str(prepared), str(dst), reader(),
                quant_format=QuantFormat.QDQ, per_channel=per_channel,
                activation_type=QuantType.QInt8 if signed else QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=calibrate, nodes_to_exclude=list(exclude), extra_options=extra,
                reduce_range=reduce_range, **cached)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StageFailed(f"INT8 quantization failed: {first}") from exc
    finally:
        logging.disable(logging.NOTSET)
        scratch.cleanup()
    details: dict[str, Any] = {"format": "QDQ", "activations": "int8 symmetric" if signed else "uint8 asymmetric",
               "weights": "int8 symmetric" + (", 7-bit range (reduce_range)" if reduce_range else ""),
               "reduce_range": reduce_range, "per_channel": per_channel, "method": method,
               "samples": int(len(calib_x))}
    if exclude:
        details["kept_fp32"] = sorted(exclude)
    return details


ENTROPY_BINS, ENTROPY_QUANTIZED_BINS = 2048, 128


def _entropy_ranges(prepared: Path, reader, signed: bool, cache: Path) -> None:
    """KL-divergence (entropy) calibration with a 2048-bin histogram searched for the 128-level threshold
    that loses least information (Migacz, "8-bit Inference with TensorRT", GTC 2017), saved as a cache.

    ``quantize_static`` cannot do this itself: it passes no bin counts to its entropy calibrator, whose
    defaults (128 bins, 128 quantized bins) leave one candidate threshold, the full range, so its
    "entropy" ranges equal MinMax's.
    """
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data

    with tempfile.TemporaryDirectory(prefix="dlforge-calib-") as tmp:
        calibrator = create_calibrator(
            str(prepared), list(quantizable_ops()),
            augmented_model_path=str(Path(tmp) / "augmented.onnx"), calibrate_method=CalibrationMethod.Entropy,
            extra_options={"symmetric": signed, "num_bins": ENTROPY_BINS, "num_quantized_bins": ENTROPY_QUANTIZED_BINS})
        with contextlib.redirect_stdout(io.StringIO()):
            calibrator.collect_data(reader)
            save_tensors_data(calibrator.compute_data(), cache)


def quantize_int8(src: Path, dst: Path, calib_x: np.ndarray, **settings) -> dict:
    """Static INT8 QDQ quantization of ``src`` calibrated on ``calib_x``; written to ``dst``.

    ``settings``: see :func:`quantize_prepared` (method, per_channel, static_batch, activations, exclude).
    """
    with tempfile.TemporaryDirectory(prefix="dlforge-quant-") as tmp:
        prepared = prepare_for_quantization(src, Path(tmp) / "prepared.onnx")
        return quantize_prepared(prepared, dst, calib_x, **settings)


def quantize_calibrated(src: Path, dst: Path, calibration: Calibration, *, activations: str = "uint8") -> dict:
    """:func:`quantize_int8` with a build's :class:`Calibration` (its ``exclude``, ``cache`` and ``prepared``
    make compiling many plans of one model cheap)."""
    settings: dict[str, Any] = {"method": calibration.method, "per_channel": calibration.per_channel,
                "static_batch": calibration.static_batch, "activations": activations,
                "exclude": tuple(sorted({*calibration.exclude, *calibration.keep})), "cache": calibration.cache,
                "reduce_range": calibration.reduce_range}
    if calibration.prepared is not None:
        return quantize_prepared(calibration.prepared, dst, calibration.calib_x, **settings)
    return quantize_int8(src, dst, calibration.calib_x, **settings)
