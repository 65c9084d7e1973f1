"""Facts read from an ONNX file: opset, producer, op histogram, inputs and outputs."""

from __future__ import annotations

import os
from collections import Counter

from dlforge.errors import InputError, require

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
# Ops whose presence makes a graph quantized: QDQ pairs and the QOperator ops (dlforge.onnx_torch.qoperator maps them).
QUANTIZED_OPS = QDQ_OPS | {"QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearMul",
                           "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearSigmoid", "QLinearLeakyRelu",
                           "QLinearConcat", "ConvInteger", "MatMulInteger"}


def onnx_summary(path: str | os.PathLike) -> dict:
    onnx = require("onnx", "toolkit", "inspecting an ONNX graph")
    if not os.path.isfile(path):
        raise InputError(f"{path} does not exist or is not a file; give an .onnx model or an artifact directory")
    if os.path.getsize(path) == 0:
        raise InputError(f"{path} is empty (0 bytes); it is not an ONNX model: re-export it")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several unrelated types on garbage
        raise InputError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc}); "
                         "re-export it") from exc
    graph = model.graph
    if not graph.node and not graph.output:
        raise InputError(f"{path} parses as an ONNX model with no graph (no nodes, no outputs): it is not a model; "
                         "re-export it")
    initializers = {i.name for i in graph.initializer}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    ops = Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}" for n in graph.node)

    def spec(v) -> dict:
        t = v.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name if t.elem_type else "?"
        return {"name": v.name, "shape": shape, "dtype": dtype}

    return {
        "opset": opset,
        "ir_version": model.ir_version,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "nodes": len(graph.node),
        "ops": dict(ops.most_common()),
        "inputs": [spec(v) for v in graph.input if v.name not in initializers],
        "outputs": [spec(v) for v in graph.output],
        "metadata": {p.key: p.value for p in model.metadata_props},
        "size_bytes": os.path.getsize(path),
    }
