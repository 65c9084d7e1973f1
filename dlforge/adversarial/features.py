"""The deployed engine's own intermediate values: what learned detectors (:mod:`dlforge.adversarial.learned`) read.

A detector trained on the PyTorch source's activations guards a model that is not the one shipped; an INT8 engine's
activations are quantized. :class:`EngineFeatures` reads them from the engine's own ONNX graph: the same file with
the chosen values added as graph outputs, run by ONNX Runtime with the engine's settings, and kept only when its
first output still agrees with the engine (fp32: max abs logit difference <= 1e-4; quantized: top-1 agreement >=
99.5%, the engine-graph criteria of :mod:`dlforge.adversarial.engine_graph`; exposing a value can keep ONNX Runtime
from fusing the node that produces it). The same values come differentiable from the engine's converted graph
(:meth:`dlforge.onnx_torch.OnnxTorchModule.values`), for the adaptive attacks.

Which values (:func:`feature_values`): ``penultimate`` is the input of the last linear layer before the first output
(a ``Gemm``/``MatMul``; through a ``DequantizeLinear`` in a QDQ graph), Lee et al.'s choice for the Mahalanobis
detector when one layer is used; ``layers`` adds the input of every later convolution or linear layer after the
first and the logits (Ma et al. 2018 estimate LID at every layer).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlforge.errors import InputError

LINEAR = {"Gemm", "MatMul", "FusedMatMul", "MatMulInteger", "QLinearMatMul"}
LAYERS = LINEAR | {"Conv", "FusedConv", "ConvInteger", "QLinearConv", "NhwcConv"}


def _producers(graph) -> dict:
    return {o: n for n in graph.node for o in n.output if o}


def _float_input(name: str, producers: dict, constants: set[str]) -> str:
    """``name``, or the float value behind it where it is a quantized one (the input of its ``QuantizeLinear``)."""
    node = producers.get(name)
    if node is not None and node.op_type == "QuantizeLinear" and node.input[0] not in constants:
        return node.input[0]
    return name


def feature_values(proto, which: str = "penultimate") -> list[str]:
    """The ONNX value names of ``which`` (``penultimate`` or ``layers``; see the module docstring), in graph order."""
    graph = proto.graph
    constants = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant"
                                                         for o in n.output}
    graph_input = next(i.name for i in graph.input if i.name not in constants)
    producers = _producers(graph)
    # the nodes on the way to the first output, in graph order
    needed, on_path = {graph.output[0].name}, set()
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            on_path.add(id(node))
            needed.update(i for i in node.input if i)
    layers = [n for n in graph.node if id(n) in on_path and n.op_type in LAYERS]
    linear = [n for n in layers if n.op_type in LINEAR]
    if not linear:
        raise InputError("the engine's graph has no linear layer (Gemm/MatMul) before its output; feature detectors "
                         "read the input of the last one")

    def data_input(node) -> str:
        first = next(i for i in node.input if i and i not in constants)
        return _float_input(first, producers, constants)

    penultimate = data_input(linear[-1])
    if which == "penultimate":
        return [penultimate]
    if which != "layers":
        raise ValueError(f"unknown feature choice {which!r}")
    names = [data_input(n) for n in layers[1:]]
    names = [n for n in dict.fromkeys(names) if n != graph_input]
    return names + [graph.output[0].name]


class EngineFeatures:
    """``features(x)``: the engine's values ``names`` on ``x`` (numpy, one array per value, flattened per sample),
    from its own graph run by ONNX Runtime; ``agreement``: how its first output compares with the engine's."""

    def __init__(self, engine, which: str = "penultimate", check: np.ndarray | None = None):
        import onnx

        from dlforge.backends.ort.session import inference_session

        path = getattr(engine.session, "path", None)
        if engine.backend != "ort" or path is None or Path(path).suffix != ".onnx":
            raise InputError(f"{engine.label}: feature detectors read the engine's own ONNX graph; a {engine.backend} "
                             "engine has none to read (audit its ONNX Runtime build)")
        proto = onnx.load(str(path))
        self.names = feature_values(proto, which)
        self.output = proto.graph.output[0].name
        present = {o.name for o in proto.graph.output}
        for name in self.names:
            if name not in present:
                proto.graph.output.append(onnx.ValueInfoProto(name=name))
        exact = getattr(engine.session, "exact_int8_kernels", False)
        self.session, _ = inference_session(proto.SerializeToString(), providers=("CPUExecutionProvider",),
                                            weight_levels=10**6 if exact else 0)
        self.input = self.session.get_inputs()[0].name
        self.quantized = engine.precision == "int8" or any(n.op_type == "QuantizeLinear" for n in proto.graph.node)
        self.agreement = None
        if check is not None:
            self.agreement = self._agreement(engine, check)

    def run(self, x: np.ndarray, batch_size: int = 256) -> tuple[list[np.ndarray], np.ndarray]:
        """``(values, logits)`` on ``x``."""
        parts, logits = [[] for _ in self.names], []
        for start in range(0, len(x), batch_size):
            out = self.session.run([*self.names, self.output], {self.input: np.ascontiguousarray(
                x[start:start + batch_size], dtype=np.float32)})
            for acc, value in zip(parts, out[:-1]):
                acc.append(value.reshape(len(value), -1).astype(np.float32))
            logits.append(out[-1])
        return [np.concatenate(p) for p in parts], np.concatenate(logits)

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return self.run(x)[0]

    def _agreement(self, engine, x: np.ndarray) -> dict:
        from dlforge.onnx_torch.verify import judge_match

        match = judge_match(self.run(x)[1], np.asarray(engine.predict(x), dtype=np.float32), self.quantized)
        if not match["passed"]:
            raise InputError(f"{engine.label}: its graph with the feature values exposed no longer computes what the "
                             f"engine does (max abs logit difference {match['max_abs_diff']:.3g}, top-1 agreement "
                             f"{match['top1_agreement']:.4f}; needs {match['criterion']}); feature detectors cannot "
                             "read this engine")
        return match

    def close(self) -> None:
        self.session = None


def torch_values(forward, names: list[str], x):
    """The same values from the engine's differentiable graph (``forward``: an
    :class:`~dlforge.onnx_torch.OnnxTorchModule`, or a :class:`TorchModel` holding one), flattened per sample."""
    from dlforge.onnx_torch import OnnxTorchModule, UnsupportedGraph

    module = getattr(forward, "model", forward)
    if not isinstance(module, OnnxTorchModule):
        raise InputError("a feature detector's adaptive attack needs the engine's own graph (the white-box (engine) "
                         "route): the PyTorch source does not name the engine's values")
    try:
        return [v.reshape(len(v), -1) for v in module.values(x, names)]
    except UnsupportedGraph as exc:
        raise InputError(f"a feature detector's adaptive attack cannot read the engine's graph: {exc}") from exc
