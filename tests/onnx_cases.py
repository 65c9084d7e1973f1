"""Hand-built ONNX graphs for the ONNX -> torch converter's tests: builders, the ONNX Runtime and torch runners,
and the op table (``CASES``: every op and attribute variant the converter maps, on small inputs)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

from dlforge.onnx_torch import torch_module_from_onnx

RNG = np.random.default_rng(0)


def rand(*shape, low=-2.0, high=2.0) -> np.ndarray:
    return RNG.uniform(low, high, size=shape).astype(np.float32)


def make_model(nodes, x: np.ndarray, consts: dict | None = None, *, opset: int = 18, ir_version: int = 9,
               inputs: tuple[str, ...] = ("x",)) -> onnx.ModelProto:
    """A graph reading the float input ``x`` (plus ``inputs``), with ``consts`` as initializers, output ``y``."""
    values = [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(x.shape)) for name in inputs]
    graph = helper.make_graph(nodes, "g", values, [helper.make_empty_tensor_value_info("y")],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in (consts or {}).items()])
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = ir_version
    return model


def run_ort(model: onnx.ModelProto, x: np.ndarray, optimize: bool = False) -> np.ndarray:
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def run_torch(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch_module_from_onnx(model)(torch.from_numpy(x)).numpy()


def assert_close(ours: np.ndarray, expected: np.ndarray):
    """Equal up to float32 summation order: 1e-5 relative, and absolute on the scale of the output."""
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(expected).max())))


def node(op, inputs, outputs=("y",), domain="", **attrs):
    return helper.make_node(op, list(inputs), list(outputs), domain=domain or None, **attrs)


def chain(op, **attrs):
    """One unary op from x to y."""
    return [node(op, ["x"], **attrs)]


def ms(op, inputs, outputs=("y",), **attrs):
    """A com.microsoft node (ONNX Runtime's contrib ops)."""
    return node(op, inputs, outputs, domain="com.microsoft", **attrs)


def ints(*values) -> np.ndarray:
    return np.array(values, np.int64)


@dataclass
class Case:
    name: str
    nodes: list
    x: np.ndarray = field(default_factory=lambda: rand(2, 3, 4))
    consts: dict = field(default_factory=dict)
    opset: int = 18


I64, F32, FLOAT = np.int64, np.float32, TensorProto.FLOAT
CASES = [
    *[Case(op, chain(op, **attrs)) for op, attrs in [
        ("Relu", {}), ("LeakyRelu", {"alpha": 0.2}), ("Sigmoid", {}), ("Tanh", {}), ("Erf", {}), ("Exp", {}),
        ("Neg", {}), ("Abs", {}), ("Elu", {"alpha": 0.5}), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}),
        ("Selu", {}), ("Softplus", {}), ("HardSwish", {}), ("Softsign", {}), ("Identity", {}), ("Floor", {}),
        ("Round", {}), ("Sign", {}), ("Mish", {}), ("Celu", {"alpha": 0.7}), ("ThresholdedRelu", {"alpha": 0.5}),
        ("Sin", {}), ("Cos", {}), ("Ceil", {}), ("Flatten", {"axis": 0})]],
    Case("Reciprocal", chain("Reciprocal"), x=rand(2, 3, low=0.2)),
    Case("Round half to even", chain("Round"), x=np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5], F32)),
    Case("Gelu", chain("Gelu"), opset=20),
    Case("Gelu tanh", chain("Gelu", approximate="tanh"), opset=20),
    Case("Sqrt", chain("Sqrt"), x=rand(2, 3, low=0.1)),
    Case("Log", chain("Log"), x=rand(2, 3, low=0.1)),
    Case("arithmetic",
         [node("Add", ["x", "a"], ["t1"]), node("Sub", ["t1", "b"], ["t2"]), node("Mul", ["t2", "a"], ["t3"]),
          node("Div", ["t3", "b"], ["t4"]), node("Pow", ["t4", "two"], ["t5"]), node("Max", ["t5", "x", "a"], ["t6"]),
          node("Min", ["t6", "b"])],
         consts={"a": rand(4), "b": rand(3, 1, low=0.5), "two": F32(2.0)}),
    Case("PRelu", [node("PRelu", ["x", "s"])], consts={"s": rand(3, 1)}),
    Case("Softmax opset 11 (coerced to 2-D)", chain("Softmax", axis=1), opset=11),
    Case("Softmax opset 13", chain("Softmax", axis=1), opset=13),
    Case("LogSoftmax opset 11", chain("LogSoftmax", axis=1), opset=11),
    Case("LogSoftmax", chain("LogSoftmax")),
    Case("MatMul batched", [node("MatMul", ["x", "w"])], consts={"w": rand(4, 5)}),
    Case("Gemm", [node("Gemm", ["x", "w", "c"], transB=1)], x=rand(3, 4), consts={"w": rand(5, 4), "c": rand(5)}),
    Case("Gemm transA alpha beta 2-D C", [node("Gemm", ["x", "w", "c"], transA=1, alpha=0.5, beta=2.0)],
         x=rand(4, 3), consts={"w": rand(4, 5), "c": rand(3, 5)}),
    Case("Gemm without C", [node("Gemm", ["x", "w"])], x=rand(3, 4), consts={"w": rand(4, 5)}),
    Case("Conv asymmetric pads, stride, dilation, groups",
         [node("Conv", ["x", "w", "b"], pads=[0, 1, 2, 1], strides=[2, 1], dilations=[1, 2], group=2)],
         x=rand(2, 4, 9, 9), consts={"w": rand(6, 2, 3, 3), "b": rand(6)}),
    Case("Conv SAME_UPPER stride 2", [node("Conv", ["x", "w"], auto_pad="SAME_UPPER", strides=[2, 2])],
         x=rand(1, 2, 8, 7), consts={"w": rand(3, 2, 4, 4)}),
    Case("Conv SAME_LOWER", [node("Conv", ["x", "w"], auto_pad="SAME_LOWER", kernel_shape=[2, 2])],
         x=rand(1, 2, 5, 5), consts={"w": rand(3, 2, 2, 2)}),
    Case("Conv 1-D VALID", [node("Conv", ["x", "w", "b"], auto_pad="VALID")], x=rand(2, 3, 10),
         consts={"w": rand(4, 3, 3), "b": rand(4)}),
    Case("ConvTranspose stride, pads, output_padding",
         [node("ConvTranspose", ["x", "w", "b"], strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])],
         x=rand(2, 3, 4, 4), consts={"w": rand(3, 2, 3, 3), "b": rand(2)}),
    Case("ConvTranspose asymmetric pads, groups, dilation",
         [node("ConvTranspose", ["x", "w"], strides=[2, 1], pads=[0, 1, 2, 0], group=3, dilations=[1, 2])],
         x=rand(1, 6, 4, 5), consts={"w": rand(6, 1, 3, 3)}),
    Case("ConvTranspose output_shape", [node("ConvTranspose", ["x", "w"], strides=[2, 2], output_shape=[9, 10])],
         x=rand(1, 2, 4, 4), consts={"w": rand(2, 3, 3, 3)}),
    Case("ConvTranspose output_shape cropping",
         [node("ConvTranspose", ["x", "w", "b"], strides=[2, 2], output_shape=[8, 7])],
         x=rand(1, 2, 4, 4), consts={"w": rand(2, 3, 3, 3), "b": rand(3)}),
    Case("ConvTranspose SAME_UPPER", [node("ConvTranspose", ["x", "w"], strides=[2, 2], auto_pad="SAME_UPPER")],
         x=rand(1, 2, 4, 4), consts={"w": rand(2, 3, 3, 3)}),
    Case("MaxPool pads stride", [node("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])],
         x=rand(2, 3, 7, 7)),
    Case("MaxPool ceil_mode", [node("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)],
         x=rand(1, 2, 8, 8)),
    Case("MaxPool asymmetric pads, dilation",
         [node("MaxPool", ["x"], kernel_shape=[2, 2], pads=[0, 1, 1, 0], dilations=[2, 1])], x=rand(1, 2, 6, 6)),
    Case("MaxPool SAME_UPPER", [node("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")],
         x=rand(1, 2, 6, 7)),
    Case("MaxPool pads beyond half the kernel", [node("MaxPool", ["x"], kernel_shape=[3, 3], pads=[2, 2, 2, 2])],
         x=rand(1, 2, 5, 5)),
    Case("AveragePool pads beyond half the kernel",
         [node("AveragePool", ["x"], kernel_shape=[3, 3], pads=[2, 2, 2, 2])], x=rand(1, 2, 5, 5)),
    Case("AveragePool pads excluded", [node("AveragePool", ["x"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
         x=rand(1, 2, 5, 5)),
    Case("AveragePool pads included",
         [node("AveragePool", ["x"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1)], x=rand(1, 2, 5, 5)),
    Case("AveragePool asymmetric pads",
         [node("AveragePool", ["x"], kernel_shape=[2, 3], strides=[2, 2], pads=[1, 0, 0, 2])], x=rand(1, 2, 6, 6)),
    Case("AveragePool SAME_LOWER", [node("AveragePool", ["x"], kernel_shape=[2, 2], auto_pad="SAME_LOWER")],
         x=rand(1, 2, 5, 5)),
    Case("GlobalAveragePool", chain("GlobalAveragePool"), x=rand(2, 3, 4, 5)),
    Case("GlobalMaxPool", chain("GlobalMaxPool"), x=rand(2, 3, 4, 5)),
    Case("Flatten axis 2", chain("Flatten", axis=2)),
    Case("Flatten axis -1", chain("Flatten", axis=-1)),
    Case("Reshape 0 and -1", [node("Reshape", ["x", "s"])], consts={"s": ints(0, -1)}),
    Case("Transpose", chain("Transpose", perm=[2, 0, 1])),
    Case("Transpose default", chain("Transpose")),
    Case("Squeeze/Unsqueeze opset 11 attributes",
         [node("Unsqueeze", ["x"], ["u"], axes=[0, -1]), node("Squeeze", ["u"], axes=[0])], opset=11),
    Case("Squeeze/Unsqueeze opset 13 inputs", [node("Unsqueeze", ["x", "a"], ["u"]), node("Squeeze", ["u", "b"])],
         consts={"a": ints(1, 4), "b": ints(-1)}, opset=13),
    Case("Squeeze all", [node("Squeeze", ["x"])], x=rand(1, 3, 1, 2)),
    Case("Concat", [node("Concat", ["x", "c", "x"], axis=1)], consts={"c": rand(2, 1, 4)}),
    Case("Split opset 11 attribute",
         [node("Split", ["x"], ["s1", "s2"], axis=2, split=[1, 3]), node("Concat", ["s2", "s1"], axis=2)], opset=11),
    Case("Split opset 13 input",
         [node("Split", ["x", "s"], ["s1", "s2"], axis=2), node("Concat", ["s2", "s1"], axis=2)],
         consts={"s": ints(3, 1)}, opset=13),
    Case("Split opset 18 num_outputs",
         [node("Split", ["x"], ["s1", "s2", "s3"], axis=2, num_outputs=3), node("Concat", ["s3", "s1", "s2"], axis=2)],
         x=rand(2, 3, 5)),
    Case("Slice opset 9 attributes", [node("Slice", ["x"], starts=[1, -3], ends=[100, -1], axes=[1, 2])], opset=9),
    Case("Slice negative step", [node("Slice", ["x", "st", "en", "ax", "sp"])],
         consts={"st": ints(-1, 3), "en": ints(-100, 0), "ax": ints(1, 2), "sp": ints(-1, -2)}),
    Case("Slice step 2 clamped", [node("Slice", ["x", "st", "en", "ax", "sp"])],
         consts={"st": ints(0), "en": ints(2**62), "ax": ints(-1), "sp": ints(2)}),
    Case("Gather 2-D negative indices", [node("Gather", ["x", "i"], axis=1)],
         consts={"i": np.array([[0, -1], [2, 1]], I64)}),
    Case("Gather scalar", [node("Gather", ["x", "i"], axis=2)], consts={"i": I64(-2)}),
    Case("Shape arithmetic",
         [node("Shape", ["x"], ["s"]), node("Slice", ["s", "z", "o"], ["b"]), node("Concat", ["b", "m"], ["t"], axis=0),
          node("Reshape", ["x", "t"])],
         consts={"z": ints(0), "o": ints(1), "m": ints(-1)}),
    Case("Shape start/end, Gather, Mul",
         [node("Shape", ["x"], ["s"], start=1), node("Gather", ["s", "i"], ["g"]), node("Mul", ["g", "g"], ["n"]),
          node("Concat", ["o", "n"], ["t"], axis=0), node("Reshape", ["x", "t"])],
         x=rand(3, 4, 4), consts={"i": ints(0), "o": ints(-1)}),
    Case("ConstantOfShape, Expand, Where, Equal",
         [node("Shape", ["x"], ["s"]),
          node("ConstantOfShape", ["s"], ["zeros"], value=numpy_helper.from_array(np.array([0.5], F32))),
          node("Expand", ["c", "s"], ["e"]), node("Greater", ["x", "e"], ["m"]),
          node("Where", ["m", "x", "zeros"], ["w"]),
          node("Equal", ["w", "zeros"], ["q"]), node("Cast", ["q"], ["qf"], to=FLOAT), node("Add", ["w", "qf"])],
         consts={"c": rand(1, 4)}),
    Case("Cast to int64 and back", [node("Cast", ["x"], ["i"], to=TensorProto.INT64), node("Cast", ["i"], to=FLOAT)]),
    Case("Clip opset 6 attributes", chain("Clip", min=-0.5, max=1.0), opset=6),
    Case("Clip opset 12 min input only", [node("Clip", ["x", "lo"])], consts={"lo": F32(-0.3)}, opset=12),
    Case("Constant", [node("Constant", [], ["c"], value=numpy_helper.from_array(rand(4))), node("Add", ["x", "c"])]),
    Case("Constant value_floats",
         [node("Constant", [], ["c"], value_floats=[1.0, 2.0, 3.0, 4.0]), node("Mul", ["x", "c"])]),
    Case("Dropout", chain("Dropout")),
    Case("BatchNormalization", [node("BatchNormalization", ["x", "s", "b", "m", "v"], epsilon=1e-3)],
         x=rand(2, 3, 4, 4), consts={"s": rand(3), "b": rand(3), "m": rand(3), "v": rand(3, low=0.5)}),
    Case("LayerNormalization", [node("LayerNormalization", ["x", "s", "b"])], consts={"s": rand(4), "b": rand(4)}),
    Case("LayerNormalization axis 1", [node("LayerNormalization", ["x", "s"], axis=1, epsilon=1e-3)],
         consts={"s": rand(3, 4)}),
    Case("InstanceNormalization", [node("InstanceNormalization", ["x", "s", "b"])], x=rand(2, 3, 5),
         consts={"s": rand(3), "b": rand(3)}),
    Case("ReduceMean opset 13 attribute", chain("ReduceMean", axes=[1, -1]), opset=13),
    Case("ReduceMean opset 18 input, keepdims 0", [node("ReduceMean", ["x", "a"], keepdims=0)], consts={"a": ints(1)}),
    Case("ReduceMean all axes", chain("ReduceMean", keepdims=0)),
    Case("ReduceSum opset 13 input", [node("ReduceSum", ["x", "a"])], consts={"a": ints(0, 2)}, opset=13),
    Case("ReduceSum noop_with_empty_axes", chain("ReduceSum", noop_with_empty_axes=1), opset=13),
    Case("ReduceMax, ReduceL2",
         [node("ReduceMax", ["x", "a"], ["m"]), node("ReduceL2", ["x", "a"], ["l"]), node("Add", ["m", "l"])],
         consts={"a": ints(2)}),
    Case("Reduce L1, Prod, Min, LogSumExp, SumSquare",
         [node("ReduceL1", ["x", "a"], ["r1"]), node("ReduceProd", ["x", "a"], ["r2"]),
          node("ReduceMin", ["x", "a"], ["r3"]), node("ReduceLogSumExp", ["x", "a"], ["r4"]),
          node("ReduceSumSquare", ["x", "a"], ["r5"]), node("Sum", ["r1", "r2", "r3", "r4", "r5"])],
         consts={"a": ints(0, -1)}),
    Case("Pad constant", [node("Pad", ["x", "p", "v"])], consts={"p": ints(0, 1, 2, 0, 0, 1), "v": F32(0.5)}),
    Case("Pad reflect", [node("Pad", ["x", "p"], mode="reflect")], x=rand(1, 2, 4, 5),
         consts={"p": ints(0, 0, 1, 2, 0, 0, 2, 1)}),
    Case("Pad edge", [node("Pad", ["x", "p"], mode="edge")], x=rand(1, 2, 4, 5),
         consts={"p": ints(0, 0, 1, 2, 0, 0, 2, 1)}),
    Case("Pad opset 10 attributes", chain("Pad", pads=[0, 1, 0, 0, 2, 1], value=0.25), opset=10),
    Case("MatMul + Add bias (run as one F.linear)", [node("MatMul", ["x", "w"], ["m"]), node("Add", ["b", "m"])],
         consts={"w": rand(4, 5), "b": rand(5)}),
    Case("MatMul + Add whose product is also read elsewhere",
         [node("MatMul", ["x", "w"], ["m"]), node("Add", ["m", "b"], ["a"]), node("Mul", ["a", "m"])],
         consts={"w": rand(4, 5), "b": rand(5)}),
    Case("GELU written with Erf (run as F.gelu)",
         [node("Div", ["x", "r2"], ["d"]), node("Erf", ["d"], ["e"]), node("Add", ["e", "one"], ["a"]),
          node("Mul", ["half", "a"], ["h"]), node("Mul", ["x", "h"])],
         consts={"r2": F32(np.sqrt(2)), "one": F32(1.0), "half": F32(0.5)}),
    Case("Mod fmod on floats", [node("Mod", ["x", "m"], fmod=1)], consts={"m": F32(0.7)}),
    Case("Mod on integers",
         [node("Cast", ["x"], ["i"], to=TensorProto.INT64), node("Mod", ["i", "m"], ["r"]),
          node("Cast", ["r"], to=FLOAT)],
         x=rand(3, 4, low=-20, high=20), consts={"m": I64(3)}),
    Case("Range of a run-time length",
         [node("Shape", ["x"], ["s"]), node("Gather", ["s", "last"], ["n"]), node("Range", ["zero", "n", "one"], ["r"]),
          node("Cast", ["r"], ["f"], to=FLOAT), node("Add", ["x", "f"])],
         consts={"last": I64(-1), "zero": I64(0), "one": I64(1)}),
    Case("Tile", [node("Tile", ["x", "r"])], consts={"r": ints(1, 2, 3)}),
    Case("Expand broadcasting both ways", [node("Expand", ["x", "s"])], x=rand(2, 1, 4),
         consts={"s": ints(3, 1, 5, 1)}),
    Case("GatherElements", [node("GatherElements", ["x", "i"], axis=1)],
         consts={"i": RNG.integers(-3, 3, (2, 2, 4)).astype(I64)}),
    Case("ArgMax, ArgMin select_last_index",
         [node("ArgMax", ["x"], ["a"], axis=1, keepdims=0),
          node("ArgMin", ["x"], ["b"], axis=1, keepdims=0, select_last_index=1), node("Add", ["a", "b"])],
         x=np.round(rand(3, 6, 2))),
    Case("CastLike, Size",
         [node("Cast", ["x"], ["i"], to=TensorProto.INT64), node("CastLike", ["i", "x"], ["f"]),
          node("Size", ["x"], ["n"]), node("CastLike", ["n", "x"], ["nf"]), node("Add", ["f", "nf"])]),
    Case("comparisons, logic, Sum, Mean",
         [node("Greater", ["x", "z"], ["g"]), node("Less", ["x", "h"], ["l"]),
          node("GreaterOrEqual", ["x", "h"], ["ge"]),
          node("LessOrEqual", ["x", "z"], ["le"]), node("And", ["g", "l"], ["a"]), node("Or", ["a", "ge"], ["o"]),
          node("Xor", ["o", "le"], ["xo"]), node("Not", ["xo"], ["n"]),
          *[node("Cast", [v], [v + "f"], to=FLOAT) for v in ("a", "o", "xo", "n")],
          node("Sum", ["af", "of", "xof"], ["s"]), node("Mean", ["s", "nf", "x"])],
         consts={"z": F32(0.0), "h": F32(0.5)}),
    Case("Einsum", [node("Einsum", ["x", "w"], equation="bij,jk->bik")], consts={"w": rand(4, 2)}),
    Case("IR 3: initializers listed as inputs", [node("Add", ["x", "c"])], consts={"c": rand(4)}, opset=8),
    Case("LSTM forward", [node("LSTM", ["x", "w", "r", "b", "", "h", "c"], hidden_size=5)], x=rand(6, 2, 3),
         consts={"w": rand(1, 20, 3), "r": rand(1, 20, 5), "b": rand(1, 40), "h": rand(1, 2, 5), "c": rand(1, 2, 5)}),
    Case("LSTM bidirectional, Y_h",
         [node("LSTM", ["x", "w", "r"], ["", "y"], hidden_size=4, direction="bidirectional")],
         x=rand(5, 3, 2), consts={"w": rand(2, 16, 2), "r": rand(2, 16, 4)}),
    Case("LSTM reverse, Y_c", [node("LSTM", ["x", "w", "r", "b"], ["", "", "y"], hidden_size=4, direction="reverse")],
         x=rand(5, 3, 2), consts={"w": rand(1, 16, 2), "r": rand(1, 16, 4), "b": rand(1, 32)}),
    # Quantization: ties (0.5 and 1.5 levels) round to even; values beyond the range saturate.
    Case("QuantizeLinear int8 per tensor, lone (integer levels)", [node("QuantizeLinear", ["x", "s", "z"])],
         x=np.array([[-300.0, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.0, 126.5, 300.0]], F32),
         consts={"s": F32(1.0), "z": np.int8(0)}),
    Case("QuantizeLinear uint8 zero point -> DequantizeLinear",
         [node("QuantizeLinear", ["x", "s", "z"], ["q"]), node("DequantizeLinear", ["q", "s", "z"])],
         x=rand(4, 6, low=-3, high=3), consts={"s": F32(0.02), "z": np.uint8(128)}),
    Case("Q/DQ per axis int8 with zero points",
         [node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1), node("DequantizeLinear", ["q", "s", "z"], axis=1)],
         x=rand(2, 3, 4), consts={"s": np.array([0.01, 0.05, 0.1], F32), "z": np.array([-3, 0, 7], np.int8)}),
    Case("Q/DQ per axis uint8, different scales (not fused)",
         [node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=-1), node("DequantizeLinear", ["q", "s2", "z"], axis=-1)],
         consts={"s": np.array([0.01, 0.02, 0.05, 0.1], F32), "s2": np.array([0.1, 0.2, 0.3, 0.4], F32),
                 "z": np.array([100, 128, 0, 255], np.uint8)}),
    Case("QuantizeLinear without zero point (uint8)",
         [node("QuantizeLinear", ["x", "s"], ["q"]), node("DequantizeLinear", ["q", "s"])], consts={"s": F32(0.01)}),
    Case("DequantizeLinear of int8 weights, int32 bias",
         [node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=0), node("DequantizeLinear", ["bq", "bs"], ["b"]),
          node("Gemm", ["x", "w", "b"], transB=1)],
         x=rand(3, 4), consts={"wq": RNG.integers(-128, 128, (5, 4)).astype(np.int8), "ws": rand(5, low=0.01, high=0.1),
                               "wz": np.zeros(5, np.int8), "bq": RNG.integers(-10**6, 10**6, 5).astype(np.int32),
                               "bs": F32(1e-4)}),
    Case("com.microsoft QuantizeLinear/DequantizeLinear",
         [ms("QuantizeLinear", ["x", "s", "z"], ["q"]), ms("DequantizeLinear", ["q", "s", "z"])],
         consts={"s": F32(0.02), "z": np.int8(3)}),
    # ONNX Runtime's own fused ops, as its offline optimization writes them.
    *[Case(f"FusedConv {act}",
           [ms("FusedConv", ["x", "w", "b"], pads=[1, 1, 1, 1], activation=act,
               **({"activation_params": params} if params else {}))],
           x=rand(2, 3, 6, 6), consts={"w": rand(4, 3, 3, 3), "b": rand(4)})
      for act, params in [("Relu", None), ("LeakyRelu", [0.2]), ("Sigmoid", None), ("Tanh", None),
                          ("Clip", [-0.5, 0.7]), ("HardSigmoid", [0.3, 0.4])]],
    Case("FusedConv with Z (fused residual add)",
         [ms("FusedConv", ["x", "w", "", "z"], pads=[1, 1, 1, 1], activation="Relu")],
         x=rand(1, 3, 5, 5), consts={"w": rand(3, 3, 3, 3), "z": rand(1, 3, 5, 5)}),
    *[Case(f"FusedGemm {act}", [ms("FusedGemm", ["x", "w", "b"], transB=1, activation=act, **attrs)],
           x=rand(3, 6), consts={"w": rand(5, 6), "b": rand(5)})
      for act, attrs in [("Relu", {}), ("LeakyRelu", {"activation_alpha": 0.2}), ("Sigmoid", {}), ("Tanh", {}),
                         ("HardSigmoid", {"activation_alpha": 0.3, "activation_beta": 0.4}),
                         ("Elu", {"activation_alpha": 0.5})]],
    Case("FusedMatMul transA transB alpha", [ms("FusedMatMul", ["x", "w"], transA=1, transB=1, alpha=0.25)],
         x=rand(2, 4, 3), consts={"w": rand(2, 5, 4)}),
    Case("SkipLayerNormalization", [ms("SkipLayerNormalization", ["x", "k", "g", "b", "c"], epsilon=1e-5)],
         consts={"k": rand(2, 3, 4), "g": rand(4), "b": rand(4), "c": rand(4)}),
    Case("SkipLayerNormalization without bias", [ms("SkipLayerNormalization", ["x", "k", "g", "b"])],
         consts={"k": rand(2, 3, 4), "g": rand(4), "b": rand(4)}),
    Case("SkipSimplifiedLayerNormalization",
         [ms("SkipSimplifiedLayerNormalization", ["x", "k", "g", "c"], epsilon=1e-5)],
         consts={"k": rand(2, 3, 4), "g": rand(4), "c": rand(4)}),
    Case("SimplifiedLayerNormalization (RMS)", [node("SimplifiedLayerNormalization", ["x", "s"], epsilon=1e-3)],
         consts={"s": rand(4)}),
    Case("com.microsoft Gelu, FastGelu, BiasGelu",
         [ms("Gelu", ["x"], ["g"]), ms("FastGelu", ["g", "b"], ["f"]), ms("BiasGelu", ["f", "b"])],
         consts={"b": rand(4)}),
    Case("com.microsoft QuickGelu", [ms("QuickGelu", ["x"], alpha=1.5)]),
]
