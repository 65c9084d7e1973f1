"""dlforge.onnx_torch.qoperator: the QOperator form of INT8 graphs as differentiable torch, proven against ONNX Runtime.

Small fp32 nets quantized by ONNX Runtime's own quantizer (``quantize_static`` with ``QuantFormat.QOperator``,
which writes QLinearConv, QGemm / QLinearMatMul and com.microsoft's QLinearAdd, QLinearMul, QLinearSigmoid,
QLinearLeakyRelu, QLinearConcat, QLinearAveragePool and QLinearGlobalAveragePool), hand-built nodes for the
variants that quantizer does not write, and the ONNX Model Zoo's INT8 MobileNetV2 on ImageNet photographs.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)

from dlforge.backends.ort.session import inference_session
from dlforge.env import int8_saturates
from dlforge.onnx_torch import UnsupportedGraph, match_engine, torch_module_from_onnx
from tests.helpers import shared_path
from tests.onnx_cases import make_model, ms, node, run_ort

RNG = np.random.default_rng(7)
F32, U8, I8, I32 = np.float32, np.uint8, np.int8, np.int32


def rand(*shape, low=-2.0, high=2.0) -> np.ndarray:
    return RNG.uniform(low, high, size=shape).astype(np.float32)


def ort_session(path, optimize: bool, exact: bool = True) -> ort.InferenceSession:
    """ONNX Runtime on the CPU, as dlforge opens it: with ``exact``, its U8U8 kernels where its U8S8 ones would
    saturate full-range weights (x86 without VNNI; see dlforge.backends.ort.arithmetic), which act only with graph
    optimizations on: the nets below are quantized with 7-bit weights on such a CPU, exact either way."""
    def make_options():
        options = ort.SessionOptions()
        if not optimize:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return options

    return inference_session(str(path), make_options, weight_levels=None if exact else 0)[0]


def output_step(model: onnx.ModelProto) -> float:
    """The scale of the DequantizeLinear that writes the graph's output: one quantization step of the logits."""
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    (dq,) = [n for n in model.graph.node if n.output[0] == model.graph.output[0].name]
    assert dq.op_type == "DequantizeLinear"
    return float(consts[dq.input[1]])


# -- graphs quantized by ONNX Runtime's quantizer ------------------------------------------------------------

def conv_net(head: str) -> onnx.ModelProto:
    """Conv+Relu, strided Conv+Relu, depthwise Conv, residual Add, x*Sigmoid(x), 1x1 Conv + LeakyRelu, Concat,
    AveragePool, GlobalAveragePool, Flatten, then Gemm or MatMul + Add: 10 logits of a [N, 3, 16, 16] input."""
    rng = np.random.default_rng(0)

    def he(*shape):
        return (rng.standard_normal(shape) * np.sqrt(2 / np.prod(shape[1:]))).astype(F32)

    def small(n):
        return (0.1 * rng.standard_normal(n)).astype(F32)

    nodes = [
        node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]), node("Relu", ["c1"], ["r1"]),
        node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]), node("Relu", ["c2"], ["r2"]),
        node("Conv", ["r2", "w3", "b3"], ["c3"], pads=[1, 1, 1, 1], group=8),
        node("Add", ["c3", "r2"], ["a1"]),
        node("Sigmoid", ["a1"], ["s1"]), node("Mul", ["a1", "s1"], ["m1"]),
        node("Conv", ["m1", "w4", "b4"], ["c4"]), node("LeakyRelu", ["c4"], ["l4"], alpha=0.1),
        node("Concat", ["m1", "l4"], ["cat"], axis=1),
        node("AveragePool", ["cat"], ["ap"], kernel_shape=[2, 2], strides=[2, 2]),
        node("GlobalAveragePool", ["ap"], ["gap"]), node("Flatten", ["gap"], ["f"]),
    ]
    consts = {"w1": he(8, 3, 3, 3), "b1": small(8), "w2": he(8, 8, 3, 3), "b2": small(8), "w3": he(8, 1, 3, 3),
              "b3": small(8), "w4": he(8, 8, 1, 1), "b4": small(8), "bf": small(10)}
    if head == "gemm":
        nodes.append(node("Gemm", ["f", "wf", "bf"], ["y"], transB=1))
        consts["wf"] = he(10, 16)
    else:
        nodes += [node("MatMul", ["f", "wf"], ["mm"]), node("Add", ["mm", "bf"], ["y"])]
        consts["wf"] = he(10, 16).T.copy()
    graph = helper.make_graph(nodes, "conv_net",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
                              [numpy_helper.from_array(v, k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


class RandomImages(CalibrationDataReader):
    def __init__(self, seed: int):
        rng = np.random.default_rng(seed)
        self.batches = iter([{"x": rng.standard_normal((4, 3, 16, 16)).astype(F32)} for _ in range(4)])

    def get_next(self):
        return next(self.batches, None)


# (head, per_channel, activation type): ONNX Runtime's recommended QUInt8 activations, and QInt8 once.
NETS = [("gemm", False, QuantType.QUInt8), ("gemm", True, QuantType.QUInt8), ("gemm", True, QuantType.QInt8),
        ("matmul", False, QuantType.QUInt8), ("matmul", True, QuantType.QUInt8)]


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """(fp32 path, INT8 QOperator path) by (head, per_channel, activation type)."""
    out = tmp_path_factory.mktemp("qoperator")
    paths = {}
    for head, per_channel, activations in NETS:
        fp32 = out / f"{head}.onnx"
        if not fp32.exists():
            onnx.save(conv_net(head), fp32)
        int8 = out / f"{head}-{per_channel}-{activations.name}.onnx"
        quantize_static(fp32, int8, RandomImages(1), quant_format=QuantFormat.QOperator, activation_type=activations,
                        weight_type=QuantType.QInt8, per_channel=per_channel,
                        reduce_range=int8_saturates())  # exact without graph optimizations too (see ort_session)
        paths[head, per_channel, activations] = (fp32, int8)
    return paths


NET_PARAMS = [pytest.param(*net, id=f"{net[0]}-{'per_channel' if net[1] else 'per_tensor'}-{net[2].name}")
              for net in NETS]


@pytest.mark.parametrize("head, per_channel, activations", NET_PARAMS)
def test_quantized_net_matches_onnxruntime(nets, head, per_channel, activations):
    """Every logit within one output quantization step of ONNX Runtime's (exact on this machine), the same top-1
    wherever ONNX Runtime's top two differ by more than that step, with and without its graph optimizations
    (which run the convolutions as com.microsoft's channels-last QLinearConv between Transposes)."""
    _, path = nets[head, per_channel, activations]
    module = torch_module_from_onnx(path)
    ops = set(module.op_counts)
    assert {"QLinearConv", "com.microsoft.QLinearAdd", "com.microsoft.QLinearMul", "com.microsoft.QLinearSigmoid",
            "com.microsoft.QLinearLeakyRelu", "com.microsoft.QLinearConcat", "com.microsoft.QLinearAveragePool",
            "com.microsoft.QLinearGlobalAveragePool"} <= ops
    assert ("com.microsoft.QGemm" if head == "gemm" else "QLinearMatMul") in ops
    assert module.quantized and module.op_counts["DequantizeLinear"] == 1  # the QOperator form: no QDQ pairs
    step = output_step(onnx.load(path))
    x = np.random.default_rng(2).standard_normal((64, 3, 16, 16)).astype(F32)
    with torch.no_grad():
        ours = module(torch.from_numpy(x)).numpy()
    for optimize in (False, True):
        theirs = ort_session(path, optimize).run(None, {"x": x})[0]
        diff = np.abs(ours - theirs)
        assert diff.max() <= step * 1.0001, f"max |diff| {diff.max():.4g} = {diff.max() / step:.2f} steps"
        top2 = np.sort(theirs, axis=1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > step * 1.0001
        assert clear.mean() > 0.8 and (ours.argmax(1) == theirs.argmax(1))[clear].all()
    assert match_engine(module, lambda a: ort_session(path, True).run(None, {"x": a})[0], x)["passed"]
    assert inference_session(str(path))[1] == int8_saturates()  # the exact kernels where U8S8 would saturate


def test_weight_levels_of_dynamic_and_static_graphs_and_the_worst_case_for_what_is_unreadable(tmp_path):
    """What decides the exact kernels: the int8 weights' levels beside uint8 activations, also where the
    activations' zero point is computed (quantize_dynamic: DynamicQuantizeLinear -> MatMulInteger) and 127, the
    worst case, for weights stored outside the file."""
    from onnxruntime.quantization import quantize_dynamic

    from dlforge.backends.ort.arithmetic import u8s8_weight_levels

    fp32 = tmp_path / "matmul.onnx"
    onnx.save(conv_net("matmul"), fp32)
    assert u8s8_weight_levels(fp32) is None  # no integer products
    dynamic = tmp_path / "dynamic.onnx"
    quantize_dynamic(fp32, dynamic, weight_type=QuantType.QInt8)
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= {n.op_type for n in onnx.load(dynamic).graph.node}
    assert u8s8_weight_levels(dynamic) > 64
    seven = tmp_path / "seven.onnx"
    quantize_static(fp32, seven, RandomImages(1), quant_format=QuantFormat.QOperator,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True)
    assert u8s8_weight_levels(seven) <= 64
    external = tmp_path / "external" / "model.onnx"
    external.parent.mkdir()
    onnx.save(onnx.load(seven), external, save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    assert u8s8_weight_levels(external) == 127


def test_a_graph_the_exact_int8_kernels_cannot_load_opens_as_it_is(tmp_path, monkeypatch):
    """ONNX Runtime's U8U8 mode (asked for on a CPU without VNNI) has no kernel for some nodes (an S8S8
    com.microsoft.QGemm with full-range weights, on ONNX Runtime 1.32) and refuses the graph: dlforge's sessions
    then open it as it is, and say so; any other error is raised. The CPU is made to look saturating and the
    refusal is made certain, so this holds on a CPU with VNNI too (where ONNX Runtime ignores the option)."""
    import onnxruntime.capi.onnxruntime_pybind11_state as state

    import dlforge.env

    fp32 = tmp_path / "gemm.onnx"
    onnx.save(conv_net("gemm"), fp32)
    real = ort.InferenceSession
    opened = []

    def refusing(model, sess_options=None, providers=None, error=state.NotImplemented):
        try:
            exact = sess_options.get_session_config_entry("session.x64quantprecision") == "1"
        except RuntimeError:  # not set
            exact = False
        opened.append(exact)
        if exact:
            raise error("Failed to find kernel for com.microsoft.QGemm(1)")
        return real(model, sess_options=sess_options, providers=providers)

    monkeypatch.setattr(dlforge.env, "int8_saturates", lambda: True)
    monkeypatch.setattr(ort, "InferenceSession", refusing)
    session, exact = inference_session(str(fp32))
    assert (exact, opened) == (False, [True, False])  # tried the exact kernels, then opened it as it is
    assert np.isfinite(session.run(None, {"x": rand(2, 3, 16, 16)})[0]).all()
    monkeypatch.setattr(ort, "InferenceSession", lambda *a, **k: refusing(*a, **k, error=state.InvalidGraph))
    with pytest.raises(state.InvalidGraph):  # not a missing kernel: raised, not hidden
        inference_session(str(fp32))


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
def test_quantized_net_gradients_follow_the_fp32_graph(nets, per_channel):
    """The clipped straight-through gradient of the INT8 graph reaches the input (all but a few saturated pixels)
    and points where the fp32 graph's does: cosine > 0.8 on each input (0.85 to 0.998 here, most above 0.97)."""
    fp32_path, int8_path = nets["gemm", per_channel, QuantType.QUInt8]
    x = np.random.default_rng(3).standard_normal((6, 3, 16, 16)).astype(F32)
    weights = torch.from_numpy(np.random.default_rng(4).standard_normal((6, 10)).astype(F32))
    grads = []
    for path in (fp32_path, int8_path):
        xt = torch.from_numpy(x).requires_grad_(True)
        (grad,) = torch.autograd.grad((torch_module_from_onnx(path)(xt) * weights).sum(), xt)
        grads.append(grad.flatten(1))
    fp32, int8 = grads
    assert torch.isfinite(int8).all() and (int8 != 0).float().mean() > 0.5 and (int8.abs().sum(1) > 0).all()
    cosine = F.cosine_similarity(int8, fp32)
    assert (cosine > 0.8).all(), cosine


# -- hand-built nodes: the variants the quantizer does not write -------------------------------------------------

def quantize_x(scale=0.05, zero_point=U8(128)):
    return [node("QuantizeLinear", ["x", "xs", "xz"], ["xq"])], {"xs": F32(scale), "xz": zero_point}


def dequantize_y(source="yq"):
    return [node("DequantizeLinear", [source, "ys", "yz"], ["y"])]


def qcase(name, op_nodes, consts, x, *, x_zero_point=U8(128), x_scale=0.05):
    q, qc = quantize_x(x_scale, x_zero_point)
    return pytest.param(q + op_nodes + (dequantize_y() if "ys" in consts else []), {**qc, **consts}, x, id=name)


def levels(dtype, *shape):
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max + 1, size=shape).astype(dtype)


HAND_BUILT = [
    qcase("QLinearConv uint8 weights, SAME_UPPER stride 2, no kernel_shape, no bias",
          [node("QLinearConv", ["xq", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["yq"], auto_pad="SAME_UPPER",
                strides=[2, 2])],
          {"w": levels(U8, 4, 3, 3, 3), "ws": F32(0.004), "wz": U8(121), "ys": F32(0.3), "yz": U8(100)},
          rand(2, 3, 7, 7)),
    qcase("QLinearConv grouped, dilated, asymmetric pads, per-channel int8 weights, bias",
          [node("QLinearConv", ["xq", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["yq"], pads=[0, 1, 2, 1],
                strides=[2, 1], dilations=[1, 2], group=2, kernel_shape=[3, 3])],
          {"w": levels(I8, 6, 2, 3, 3), "ws": rand(6, low=0.002, high=0.01), "wz": np.zeros(6, I8),
           "b": RNG.integers(-3000, 3000, 6).astype(I32), "ys": F32(0.25), "yz": U8(128)},
          rand(2, 4, 9, 9)),
    qcase("QLinearMatMul batched a, per-column int8 b",
          [node("QLinearMatMul", ["xq", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["yq"])],
          {"w": levels(I8, 5, 4), "ws": rand(4, low=0.002, high=0.01), "wz": np.zeros(4, I8), "ys": F32(0.05),
           "yz": U8(120)},
          rand(2, 3, 5)),
    qcase("QGemm float output (no y_scale), transB, alpha, per-column b, int32 C",
          [ms("QGemm", ["xq", "xs", "xz", "w", "ws", "wz", "c"], ["y"], transB=1, alpha=0.5)],
          {"w": levels(I8, 4, 6), "ws": rand(4, low=0.002, high=0.01), "wz": np.zeros(4, I8),
           "c": RNG.integers(-500, 500, 4).astype(I32)},
          rand(3, 6)),
    qcase("QGemm quantized output, uint8 b with a zero point",
          [ms("QGemm", ["xq", "xs", "xz", "w", "ws", "wz", "", "ys", "yz"], ["yq"])],
          {"w": levels(U8, 6, 4), "ws": F32(0.01), "wz": U8(130), "ys": F32(0.06), "yz": U8(128)},
          rand(3, 6)),
    qcase("QLinearAdd broadcast to a constant, then QLinearMul by a constant",
          [ms("QLinearAdd", ["xq", "xs", "xz", "a", "as", "az", "cs", "cz"], ["c"]),
           ms("QLinearMul", ["c", "cs", "cz", "m", "ms", "mz", "ys", "yz"], ["yq"])],
          {"a": levels(U8, 4), "as": F32(0.01), "az": U8(128), "cs": F32(0.06), "cz": U8(125),
           "m": levels(U8, 3, 1), "ms": F32(0.02), "mz": U8(110), "ys": F32(0.1), "yz": U8(128)},
          rand(2, 3, 4)),
    qcase("QLinearAdd int8 without C_zero_point (0, the inputs' type)",
          [ms("QLinearAdd", ["xq", "xs", "xz", "a", "as", "az", "ys"], ["yq"])],
          {"a": levels(I8, 4), "as": F32(0.01), "az": I8(-3), "ys": F32(0.03), "yz": I8(0)},
          rand(2, 3, 4), x_zero_point=I8(4)),
    qcase("QLinearSigmoid and QLinearLeakyRelu, int8",
          [ms("QLinearLeakyRelu", ["xq", "xs", "xz", "ls", "lz"], ["l"], alpha=0.2),
           ms("QLinearSigmoid", ["l", "ls", "lz", "ys", "yz"], ["yq"])],
          {"ls": F32(0.04), "lz": I8(-20), "ys": F32(1 / 256), "yz": I8(-128)},
          rand(2, 3, 4, low=-5, high=5), x_zero_point=I8(3)),
    qcase("QLinearConcat: one input copied, one requantized",
          [node("QuantizeLinear", ["x", "s2", "z2"], ["x2q"]),
           ms("QLinearConcat", ["ys", "yz", "xq", "xs", "xz", "x2q", "s2", "z2"], ["yq"], axis=1)],
          {"s2": F32(0.013), "z2": U8(60), "ys": F32(0.05), "yz": U8(128)},
          rand(2, 3, 4)),
    qcase("QLinearAveragePool pads, ceil_mode, count_include_pad 0",
          [ms("QLinearAveragePool", ["xq", "xs", "xz", "ys", "yz"], ["yq"], kernel_shape=[3, 3], strides=[2, 2],
              pads=[1, 1, 1, 1], ceil_mode=1)],
          {"ys": F32(0.03), "yz": U8(128)}, rand(2, 3, 8, 8)),
    qcase("QLinearAveragePool count_include_pad 1, then the whole image (run as the global pool)",
          [ms("QLinearAveragePool", ["xq", "xs", "xz", "ps", "pz"], ["p"], kernel_shape=[2, 2], pads=[0, 0, 1, 1],
              count_include_pad=1),
           ms("QLinearAveragePool", ["p", "ps", "pz", "ys", "yz"], ["yq"], kernel_shape=[6, 6])],
          {"ps": F32(0.04), "pz": U8(128), "ys": F32(0.007), "yz": U8(128)}, rand(2, 3, 6, 6)),
    qcase("QLinearGlobalAveragePool int8",
          [ms("QLinearGlobalAveragePool", ["xq", "xs", "xz", "ys", "yz"], ["yq"], channels_last=0)],
          {"ys": F32(0.004), "yz": I8(-5)}, rand(2, 3, 5, 5), x_zero_point=I8(0)),
    qcase("ConvInteger (int32 accumulator)",
          [node("ConvInteger", ["xq", "w", "xz", "wz"], ["acc"], pads=[1, 1, 1, 1]),
           node("Cast", ["acc"], ["y"], to=TensorProto.FLOAT)],
          {"w": levels(U8, 4, 3, 3, 3), "wz": U8(131)}, rand(2, 3, 5, 5)),
    qcase("MatMulInteger",
          [node("MatMulInteger", ["xq", "w", "xz", "wz"], ["acc"]), node("Cast", ["acc"], ["y"], to=TensorProto.FLOAT)],
          {"w": levels(U8, 5, 3), "wz": U8(117)}, rand(4, 5)),
]


@pytest.mark.parametrize("nodes, consts, x", HAND_BUILT)
def test_hand_built_qoperator_node_matches_onnxruntime(nodes, consts, x):
    """Within one output step of ONNX Runtime where the output is quantized (exact on this machine); exact integer
    accumulators; float QGemm output to float32 rounding."""
    model = make_model(nodes, x, consts)
    expected = run_ort(model, x)
    xt = torch.from_numpy(x).requires_grad_(True)
    out = torch_module_from_onnx(model)(xt)
    ours = out.detach().numpy()
    assert ours.shape == expected.shape
    if "ys" in consts:
        assert np.abs(ours - expected).max() <= float(consts["ys"]) * 1.0001
    elif any(n.op_type == "QGemm" for n in nodes):
        np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    else:
        np.testing.assert_array_equal(ours, expected)
    (grad,) = torch.autograd.grad(out.sum(), xt)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


STE_X = np.array([[[[-7.0, -5.0, -1.0, 0.3, 2.0, 5.0]]]], F32)  # levels of scale 0.05, zero point 128: +-6.4
TWO = {"b": np.full((1, 1, 1, 1), 168, U8), "bs": F32(0.05), "bz": U8(128)}  # 2.0 as a uint8 level


@pytest.mark.parametrize("op_nodes, consts, expected", [
    pytest.param([node("QLinearConv", ["xq", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["yq"])],
                 {"w": np.full((1, 1, 1, 1), 18, I8), "ws": F32(0.125), "wz": I8(2)}, [0, 0, 2, 2, 2, 0],
                 id="1x1 QLinearConv by 2: the weight"),
    pytest.param([ms("QLinearMul", ["xq", "xs", "xz", "b", "bs", "bz", "ys", "yz"], ["yq"])], TWO, [0, 0, 2, 2, 2, 0],
                 id="QLinearMul by 2: the factor"),
    pytest.param([ms("QLinearAdd", ["xq", "xs", "xz", "b", "bs", "bz", "ys", "yz"], ["yq"])], TWO, [0, 1, 1, 1, 1, 0],
                 id="QLinearAdd of 2: one"),
])
def test_straight_through_gradient_is_the_real_slope_where_nothing_saturates(op_nodes, consts, expected):
    """QuantizeLinear -> op -> DequantizeLinear, all with scale 0.05 and zero point 128 (range about +-6.4): the
    gradient is the real op's slope where neither the input (|x| > 6.4: -7) nor the output saturated (2x = 10,
    x + 2 = 7), 0 where one did; the forward equals ONNX Runtime's."""
    q, qc = quantize_x()
    model = make_model(q + op_nodes + dequantize_y(), STE_X, {**qc, **consts, "ys": F32(0.05), "yz": U8(128)})
    xt = torch.from_numpy(STE_X).requires_grad_(True)
    out = torch_module_from_onnx(model)(xt)
    np.testing.assert_array_equal(out.detach().numpy(), run_ort(model, STE_X))
    (grad,) = torch.autograd.grad(out.sum(), xt)
    np.testing.assert_allclose(grad.numpy().ravel(), expected, rtol=1e-6)


def _x86_with_avx2() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        return " avx2" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not _x86_with_avx2(), reason="ONNX Runtime's float order reproduced is that of its x86 AVX2 "
                                                 "kernels; another CPU's may put a near-tie on the other level")
@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
@pytest.mark.parametrize("b_shape", [(4, 16, 32, 32), (16, 1, 1)], ids=["elementwise", "per_channel"])
def test_elementwise_levels_equal_onnxruntimes_x86_kernels(op, b_shape):
    """With scales whose ratios are short decimals many values land within float rounding of a half: the
    textbook formula puts up to 2.5% (QLinearAdd) and 1% (QLinearMul) of these 65536 outputs on the other level;
    the kernels' own float order, none."""
    x = rand(4, 16, 32, 32)
    q, qc = quantize_x()
    consts = {**qc, "b": levels(U8, *b_shape), "bs": F32(0.02), "bz": U8(110), "ys": F32(0.1), "yz": U8(128)}
    model = make_model(q + [ms(op, ["xq", "xs", "xz", "b", "bs", "bz", "ys", "yz"], ["yq"])] + dequantize_y(), x,
                       consts)
    with torch.no_grad():
        ours = torch_module_from_onnx(model)(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(ours, run_ort(model, x))


def test_unmappable_variants_are_named():
    x = rand(1, 2, 3, 3)
    q, consts = quantize_x()
    model = make_model(q + [ms("QLinearGlobalAveragePool", ["xq", "xs", "xz", "xs", "xz"], ["p"], channels_last=1),
                            ms("QGemm", ["xq", "xs", "xz", "w", "xs", "xz", "", "xs"], ["y"])], x,
                       {**consts, "w": levels(U8, 3, 3)})
    with pytest.raises(UnsupportedGraph) as info:
        torch_module_from_onnx(model)
    message = str(info.value)
    assert "QLinearGlobalAveragePool with channels_last=1" in message
    assert "QGemm with only one of y_scale and y_zero_point" in message


# -- the ONNX Model Zoo's INT8 MobileNetV2 ---------------------------------------------------------------------

IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406], F32), np.array([0.229, 0.224, 0.225], F32)


# Six of the 20 sample photographs: two that both engines get wrong (06: 479 for 609, 19: 302 for 305) and three
# whose top two logits ONNX Runtime separates by only one to three output steps (02, 12, 17).
PHOTOGRAPHS = ["imagenet_00_243.jpg", "imagenet_02_438.jpg", "imagenet_06_609.jpg", "imagenet_12_741.jpg",
               "imagenet_17_22.jpg", "imagenet_19_305.jpg"]


def imagenet_photographs(names) -> tuple[np.ndarray, np.ndarray]:
    """Photographs from imagenet-samples as MobileNetV2 takes them: shorter side resized to 256 (bilinear), the
    center 224 x 224, /255, ImageNet mean / std, NCHW float32; and their labels (the number ending the name)."""
    from PIL import Image

    from dlforge.data.evaluation import pixels

    files = [shared_path("imagenet-samples", name) for name in names]
    x = np.stack([pixels(Image, f, f.read_bytes(), (3, 224, 224), {"resize": 256, "crop": [224, 224]})
                  for f in files])
    x = (x - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]
    return x.astype(F32), np.array([int(f.stem.rsplit("_", 1)[1]) for f in files])


def test_model_zoo_int8_mobilenetv2_matches_onnxruntime():
    """QuantizeLinear, 52 QLinearConv, 11 com.microsoft QLinearAdd, QLinearGlobalAveragePool, Shape / Gather /
    Unsqueeze / Concat / Reshape, QLinearMatMul, DequantizeLinear: the same logits as ONNX Runtime (identical on
    this machine, on all 20 sample photographs; allowed: one output step, 0.16), the same top-1 on each photograph;
    and an FGSM step along the module's gradient raises ONNX Runtime's own loss.

    On an x86 CPU without VNNI, ONNX Runtime's default U8S8 kernels saturate this model's full-range weights: its
    logits there differ by up to 5.1 on these six photographs (up to 7.4 on all 20, 15 of them right instead of 17), and only its exact U8U8 kernels,
    which dlforge's sessions ask for on such a CPU, give the graph's arithmetic. Asserted on either kind of CPU."""
    path = shared_path("onnx-models", "mobilenetv2-12-int8.onnx")
    x, labels = imagenet_photographs(PHOTOGRAPHS)
    module = torch_module_from_onnx(path)
    assert module.op_counts["QLinearConv"] == 52 and module.op_counts["com.microsoft.QLinearAdd"] == 11
    session = ort_session(path, optimize=True)
    theirs = session.run(None, {"input": x})[0]
    with torch.no_grad():
        ours = module(torch.from_numpy(x)).numpy()
    step = output_step(onnx.load(str(path), load_external_data=False))
    max_abs_diff = float(np.abs(ours - theirs).max())
    assert max_abs_diff <= step * 1.0001, f"max |logit diff| {max_abs_diff:.4g} (step {step:.4g})"
    np.testing.assert_array_equal(ours.argmax(1), theirs.argmax(1))
    assert (ours.argmax(1) == labels).tolist() == [True, True, False, True, True, False]
    assert inference_session(str(path))[1] == int8_saturates()
    default = ort_session(path, optimize=True, exact=False).run(None, {"input": x})[0]
    saturated = float(np.abs(ours - default).max())
    if int8_saturates():
        assert saturated > 10 * step, "U8S8 should saturate this model's full-range weights on a CPU without VNNI"
    else:
        assert saturated <= step * 1.0001

    picked = [0, 1]
    xt = torch.from_numpy(x[picked]).requires_grad_(True)
    target = torch.from_numpy(labels[picked])
    (grad,) = torch.autograd.grad(F.cross_entropy(module(xt), target, reduction="sum"), xt)
    assert torch.isfinite(grad).all() and (grad != 0).float().mean() > 0.5
    adversarial = (xt + (2 / 255) / torch.from_numpy(IMAGENET_STD)[:, None, None] * grad.sign()).detach().numpy()

    def ort_loss(images):
        logits = torch.from_numpy(session.run(None, {"input": images})[0])
        return F.cross_entropy(logits, target, reduction="none")
    assert (ort_loss(adversarial) > ort_loss(x[picked])).all()
