"""ONNX Runtime engines: offline-optimized fp32, and INT8 by static QDQ quantization (:mod:`dlforge.precision`).

No bf16 precision: ONNX Runtime's CPU provider (1.32) has no bfloat16 MatMul or Gemm kernel and
ONNX's Conv takes no bfloat16 input, so a bf16 graph would not load, AVX-512 BF16 or not.
"""

from __future__ import annotations

from pathlib import Path

from dlforge.backends.base import BACKENDS, Backend
from dlforge.backends.ort.options import OrtBuildOptions


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


def _weight_levels(details: dict) -> int | None:
    """The build's record of the graph's uint8 x int8 weight levels: 0 for a graph without such products."""
    if "int8_arithmetic" in details:
        return details["int8_arithmetic"]["weight_levels"]
    return 0 if "graph_optimization" in details or "reduce_range" in details else None


def reduce_range(setting: str) -> bool:
    """``--reduce-range``: on, off, or auto (on where this CPU's U8S8 kernels saturate full-range weights)."""
    from dlforge.env import int8_saturates

    return setting == "on" or (setting == "auto" and int8_saturates())


@BACKENDS.register("ort")
class OrtBackend(Backend):
    """ONNX Runtime on CPU: the engine is an ONNX file (offline-optimized fp32, or INT8 QDQ).

    The batch range given with ``--min-batch`` / ``--max-batch`` is recorded in the card and enforced
    by the runtime, the same rule a TensorRT profile imposes.
    """

    precisions = ("fp32", "int8")
    payload = "model.onnx"
    triton_platform = "onnxruntime_onnx"
    options_class = OrtBuildOptions

    @classmethod
    def open_engine(cls, artifact, *, threads=None, device="cpu", execution_provider=None):
        from dlforge.backends.ort.session import open_onnx

        card = artifact.card
        return open_onnx(artifact.payload_path, card.model, card.sections.get("precision", "fp32"), execution_provider,
                         threads, device, card.sections.get("batch_range"),
                         _weight_levels(card.sections.get("build", {})))

    def compile(self, precision, src, dst, calibration):
        from dlforge.backends.ort.arithmetic import int8_arithmetic

        if precision == "fp32":  # an imported INT8 graph is compiled as it is, at "fp32"
            details = optimize_fp32(src, dst)
        else:
            from dlforge.precision import quantize_calibrated  # the build's side only: the runtime never needs it

            reduce = reduce_range(self.own.reduce_range)
            details = quantize_calibrated(src, dst, calibration.replace(reduce_range=reduce))
        arithmetic = int8_arithmetic(dst)
        if arithmetic is not None:
            details["int8_arithmetic"] = arithmetic
        return details

    def resolved_options(self, details):
        return {"reduce_range": "on" if details["reduce_range"] else "off"} if "reduce_range" in details else {}

    def batch_range(self, details):
        o = self.options
        if o.max_batch is None and o.min_batch == 1:
            return None
        return (o.min_batch, o.max_batch)

    def open(self, path, details, info):
        from dlforge.backends.ort.session import OrtSession

        from dlforge.backends.ort.session import needs_exact_kernels

        session = OrtSession(path, model=info, batch_range=self.batch_range(details), threads=self.options.threads,
                             int8_weight_levels=_weight_levels(details))
        arithmetic = details.get("int8_arithmetic")
        if arithmetic is not None and needs_exact_kernels(arithmetic["weight_levels"]) and not session.exact_int8_kernels:
            arithmetic["kernels"] = ("U8S8: ONNX Runtime's exact U8U8 kernels cannot load this graph, and U8S8 may "
                                     "saturate its weights on this CPU (no VNNI/AMX): its results may differ from "
                                     "the graph's arithmetic")
        return session
