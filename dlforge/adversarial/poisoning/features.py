"""Last-hidden-layer features, the representation activation clustering and spectral signatures read:
from a PyTorch model (:func:`penultimate`) and from a deployed engine's own graph (:func:`engine_features`).

An engine's features are what *its* arithmetic computes: the ONNX file it runs is loaded, the tensor
feeding its final Gemm/MatMul is exposed as an extra graph output, and ONNX Runtime runs it. In an
INT8 QDQ engine that tensor is the output of a DequantizeLinear: the int8 activations, dequantized,
exactly as the last layer consumes them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dlforge.errors import InputError

_LINEAR = {("", "Gemm"), ("", "MatMul"), ("com.microsoft", "FusedGemm"), ("com.microsoft", "FusedMatMul")}
# Between the last linear layer and the output: quantization, a bias Add, a softmax, a reshape.
_PASS_THROUGH = {"QuantizeLinear", "DequantizeLinear", "Identity", "Add", "Softmax", "LogSoftmax", "Reshape",
                 "Flatten", "Squeeze", "Cast"}


def penultimate(model, x: np.ndarray, *, batch_size: int = 512, device: str = "cpu") -> np.ndarray:
    """Activations entering a PyTorch model's last linear layer (its last hidden representation)."""
    import torch

    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    captured = []
    hook = last.register_forward_hook(lambda mod, inp, out: captured.append(inp[0].detach().float().cpu().numpy()))
    model.eval()
    try:
        with torch.inference_mode():
            for i in range(0, len(x), batch_size):
                model(torch.from_numpy(x[i:i + batch_size]).to(device))
    finally:
        hook.remove()
    return np.concatenate(captured)


def last_hidden_tensor(graph) -> str:
    """Name of the tensor feeding the final Gemm/MatMul on the way to the graph's first output.

    Walks back from the output through the ops that may follow a last linear layer; the linear op's
    one input that does not come from initializers alone is the last hidden representation.
    """
    constants = {t.name for t in graph.initializer}
    for node in graph.node:  # ONNX nodes are topologically sorted
        if node.op_type == "Constant" or all(i in constants for i in node.input if i):
            constants.update(node.output)
    producer = {out: node for node in graph.node for out in node.output}
    name = graph.output[0].name
    while True:
        node = producer.get(name)
        if node is None:
            raise InputError(f"reached graph input {name!r} without finding a Gemm/MatMul before output "
                             f"{graph.output[0].name!r}; engine features need a model whose last layer is linear")
        dynamic = [i for i in node.input if i and i not in constants]
        if (node.domain or "", node.op_type) in _LINEAR and len(dynamic) == 1:
            return dynamic[0]
        if node.op_type not in _PASS_THROUGH or len(dynamic) != 1:
            raise InputError(f"output {graph.output[0].name!r} comes from {node.op_type} node {node.name!r}, not "
                             "from a Gemm/MatMul (through quantize, bias, softmax or reshape ops); engine features "
                             "need a model whose last layer is linear")
        name = dynamic[0]


def engine_onnx(source) -> Path:
    """The ONNX file an engine runs: an ORT engine or onnx artifact directory, a DeployedModel, or a ``.onnx``."""
    from dlforge.artifact import is_artifact, open_artifact
    from dlforge.runtime.deployed import DeployedModel

    if isinstance(source, DeployedModel):
        path = source.artifact.payload_path if source.artifact else source.path
    else:
        path = Path(source)
        if path.is_dir() and is_artifact(path):
            path = open_artifact(path, ["engine", "onnx"]).payload_path
    if not (path.is_file() and path.suffix == ".onnx"):
        raise InputError(f"{path} is not an ONNX file; engine features read an ONNX Runtime engine or onnx artifact "
                         "directory, or an .onnx file (a TensorRT plan's activations cannot be exposed this way)")
    return path


def engine_features(source: str | os.PathLike, x: np.ndarray, *, batch_size: int = 512) -> np.ndarray:
    """The engine's last hidden representation of ``x``, computed by ONNX Runtime on the engine's graph.

    Args:
        source: an ORT engine or onnx artifact directory, a :class:`~dlforge.runtime.deployed.DeployedModel`,
            or an ``.onnx`` file.
        x: inputs ``(N, ...)`` as the engine takes them.
        batch_size: samples per run (a static batch dimension in the graph overrides it).

    Returns:
        ``(N, D)`` float32 features (flattened past the batch dimension).
    """
    import onnx
    import onnxruntime as ort

    from dlforge.backends.ort.session import inference_session
    from dlforge.runtime.deployed import batch_plan

    path = engine_onnx(source)
    model = onnx.load(str(path))
    name = last_hidden_tensor(model.graph)
    if name not in {o.name for o in model.graph.output}:
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    def make_options():
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return options

    session, _ = inference_session(model.SerializeToString(), make_options)  # the engine's arithmetic, exactly
    feed = session.get_inputs()[0]
    static = feed.shape[0] if isinstance(feed.shape[0], int) else None
    plan = batch_plan(len(x), static or batch_size, (static or 1, static))
    out = []
    for start, stop, padded in plan:
        chunk = np.ascontiguousarray(x[start:stop], dtype=np.float32)
        if padded > len(chunk):
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], padded - len(chunk), axis=0)])
        out.append(session.run([name], {feed.name: chunk})[0][:stop - start])
    features = np.concatenate(out)
    return features.reshape(len(features), -1).astype(np.float32, copy=False)
