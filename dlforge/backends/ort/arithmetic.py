"""How ONNX Runtime multiplies an INT8 graph's uint8 activations by its int8 weights on this CPU.

ONNX Runtime's CPU kernels multiply uint8 activations by int8 weights (U8S8). On an x86-64 CPU without a
VNNI or AMX INT8 dot product they use ``vpmaddubsw``, which adds the products of neighbouring pairs into
an int16 and saturates it: with weights in the full 8-bit range a pair can exceed 32767, and the engine
computes something other than its graph's integer arithmetic (onnxruntime's quantization guide prescribes
7-bit weights, ``reduce_range``, for such CPUs). 7-bit weights (|level| <= 64) never saturate:
255 * 64 * 2 = 32640.

dlforge keeps every engine exact: ``dlforge build`` quantizes with 7-bit weights on such a CPU by default
(``--reduce-range auto``: fast and exact), and a graph with full-range weights (an imported INT8 model)
runs there on ONNX Runtime's U8U8 kernels (``session.x64quantprecision``: exact, slower; see
:class:`~dlforge.backends.ort.session.OrtSession`). The card records which, from :func:`int8_arithmetic`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlforge.backends.ort.session import SAFE_LEVELS, needs_exact_kernels
from dlforge.env import int8_saturates

# integer-arithmetic ops: (index of the activation's zero point, index of the weight)
_QOPERATOR = {"QLinearConv": (2, 3), "QLinearMatMul": (2, 3), "QGemm": (2, 3), "ConvInteger": (2, 1),
              "MatMulInteger": (2, 1)}
_FLOAT_CONSUMERS = ("Conv", "Gemm", "MatMul")


def u8s8_weight_levels(path: str | Path) -> int | None:
    """The largest |level| of the int8 weights that multiply uint8 activations in ``path``'s graph (QOperator
    ops, or QDQ weights dequantized into Conv/Gemm/MatMul in a graph with uint8 activations); None when it
    has none. What it cannot read counts as the worst case, 127: weights stored as external data or computed
    in the graph, and an activation zero point that is computed (``DynamicQuantizeLinear``'s is uint8) or
    absent."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name: i for i in graph.initializer}

    def array(name: str) -> np.ndarray | None:
        init = inits.get(name)
        return None if init is None or init.data_location == onnx.TensorProto.EXTERNAL else numpy_helper.to_array(init)

    def levels(name: str) -> int | None:
        """The weight's largest |level|; 127 when unreadable; None when it is not int8 (no U8S8 product)."""
        init = inits.get(name)
        if init is not None and init.data_type != onnx.TensorProto.INT8:
            return None
        w = array(name)
        return int(np.abs(w.astype(np.int32)).max()) if w is not None and w.size else 127

    def uint8_activations(zp: str | None) -> bool:
        if not zp or zp not in inits:  # absent or computed: DynamicQuantizeLinear's zero point is uint8
            return True
        return inits[zp].data_type == onnx.TensorProto.UINT8

    found: list[int] = []
    for n in graph.node:
        if n.op_type in _QOPERATOR:
            zp_index, w_index = _QOPERATOR[n.op_type]
            if len(n.input) <= w_index:
                continue
            zp = n.input[zp_index] if len(n.input) > zp_index else None
            if uint8_activations(zp) and (v := levels(n.input[w_index])) is not None:
                found.append(v)
    quantizes_to_uint8 = any(n.op_type == "QuantizeLinear" and len(n.input) > 2 and (z := array(n.input[2])) is not None
                             and z.dtype == np.uint8 for n in graph.node)
    if quantizes_to_uint8:  # a QDQ graph with uint8 activations
        consumers = {i for n in graph.node if n.op_type in _FLOAT_CONSUMERS for i in n.input}
        found += [v for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0] in consumers
                  and n.input[0] in inits  # a stored weight; a computed input is an activation
                  and (v := levels(n.input[0])) is not None]
    return max(found) if found else None


def int8_arithmetic(path: str | Path) -> dict | None:
    """What the card records about ``path``'s uint8 x int8 products on this CPU; None for a graph without any."""
    weight_levels = u8s8_weight_levels(path)
    if weight_levels is None:
        return None
    exact_kernels = needs_exact_kernels(weight_levels)
    return {"weight_levels": weight_levels, "cpu_saturates_u8s8": int8_saturates(),
            "kernels": ("U8U8 (session.x64quantprecision): exact, slower; U8S8 would saturate weights beyond "
                        f"{SAFE_LEVELS} levels on this CPU (no VNNI/AMX)") if exact_kernels else "U8S8"}


__all__ = ["SAFE_LEVELS", "int8_arithmetic", "u8s8_weight_levels"]
