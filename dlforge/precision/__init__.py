"""Precision: backend-neutral ONNX -> ONNX transforms (INT8 QDQ, fp16) and their calibration.

Every backend that builds a lower precision uses these: ONNX Runtime compiles the QDQ graph as it is,
TensorRT reads its Q/DQ pairs as explicit quantization; the per-layer precision plan is a QDQ graph
with some nodes excluded (:mod:`dlforge.build.mixed`).
"""

from dlforge.precision.calibration import CALIBRATION_METHODS, Calibration
from dlforge.precision.fp16 import convert_fp16
from dlforge.precision.qdq import (prepare_for_quantization, quantizable_ops, quantize_calibrated, quantize_int8,
                                   quantize_prepared)

__all__ = ["CALIBRATION_METHODS", "Calibration", "convert_fp16", "prepare_for_quantization", "quantizable_ops",
           "quantize_calibrated", "quantize_int8", "quantize_prepared"]
