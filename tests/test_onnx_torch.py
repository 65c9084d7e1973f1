"""dlforge.onnx_torch: ONNX graphs as differentiable torch modules, proven against ONNX Runtime.

Fused and quantized ops, gradients, external data, batches and refusals; then whole engines: the digits
LeNet's fp32 and INT8 engines and the ONNX Model Zoo's MNIST models at a batch their graph was not
exported for. The op-by-op table is tests/test_onnx_torch_ops.py.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper

from dlforge.onnx_torch import UnsupportedGraph, check_matches_engine, match_engine, torch_module_from_onnx
from tests.helpers import shared_path
from tests.onnx_cases import F32, I64, assert_close, chain, make_model, node, rand, run_ort, run_torch


@pytest.mark.parametrize("activation", ["Relu", "LeakyRelu", "Clip", "HardSigmoid"])
def test_ort_extended_optimization_writes_fused_ops_that_convert(activation, tmp_path):
    """What ONNX Runtime's offline optimization writes into an fp32 engine: Conv + activation -> FusedConv,
    Gemm + activation -> FusedGemm, MatMul * scalar -> FusedMatMul."""
    attrs = {"LeakyRelu": {"alpha": 0.1}, "HardSigmoid": {"alpha": 0.3, "beta": 0.4}}.get(activation, {})
    extra = ["lo", "hi"] if activation == "Clip" else []
    x = rand(2, 3, 6, 6)
    model = make_model(
        [node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), node(activation, ["c", *extra], ["a"], **attrs),
         node("Flatten", ["a"], ["f"]), node("Gemm", ["f", "g", "gb"], ["h"], transB=1), node("Relu", ["h"], ["r"]),
         node("MatMul", ["r", "m"], ["mm"]), node("Mul", ["mm", "half"])], x,
        {"w": rand(4, 3, 3, 3), "b": rand(4), "lo": F32(-0.5), "hi": F32(0.7), "g": rand(8, 144), "gb": rand(8),
         "m": rand(8, 5), "half": F32(0.5)})
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    module = torch_module_from_onnx(tmp_path / "optimized.onnx")
    assert {"com.microsoft.FusedConv", "com.microsoft.FusedGemm", "com.microsoft.FusedMatMul"} <= set(module.op_counts)
    with torch.no_grad():
        ours = module(torch.from_numpy(x)).numpy()
    assert_close(ours, run_ort(model, x))


def test_gradients_are_straight_through_quantization():
    """BPDA for the rounding, exact for the saturation: DequantizeLinear(QuantizeLinear(x)) has the identity
    gradient inside the int8 range and 0 where it saturates (+-300 here); a lone QuantizeLinear has 1 / scale,
    so Q with scale s1 then DQ with scale s2 gives s2 / s1."""
    x = np.array([[-300.0, -0.013, 0.0, 0.004, 0.5, 300.0]], np.float32)
    inside = np.array([[0, 1, 1, 1, 1, 0]], np.float32)
    quantize = node("QuantizeLinear", ["x", "s", "z"], ["q"])
    fused = make_model([quantize, node("DequantizeLinear", ["q", "s", "z"], ["d"]), node("Mul", ["d", "three"])], x,
                       {"s": F32(0.01), "z": np.int8(0), "three": F32(3.0)})
    rescaled = make_model([quantize, node("DequantizeLinear", ["q", "s2", "z"])],
                          x, {"s": F32(0.01), "s2": F32(0.04), "z": np.int8(0)})
    for model, slope in ((fused, 3.0), (rescaled, 4.0)):
        module = torch_module_from_onnx(model)
        xt = torch.from_numpy(x).requires_grad_(True)
        out = module(xt)
        np.testing.assert_array_equal(out.detach().numpy(), run_ort(model, x))  # the forward stays exact
        (grad,) = torch.autograd.grad(out.sum(), xt)
        np.testing.assert_allclose(grad.numpy(), slope * inside, rtol=1e-6)


def test_folded_relu_stops_the_gradient_where_the_quantizer_clips():
    """ONNX Runtime's QDQ quantizer deletes a Relu before a uint8 QuantizeLinear with zero point 0: the clip
    at level 0 is the ReLU. The gradient must be the ReLU's (0 for negative inputs), as the graph with the Relu
    kept gives, not the identity's."""
    x = np.array([[-2.0, -0.5, -0.02, 0.2, 1.0, 2.4]], np.float32)
    q = {"s": F32(0.01), "z": np.uint8(0)}
    folded = make_model([node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                         node("DequantizeLinear", ["q", "s", "z"])], x, q)
    kept = make_model([node("Relu", ["x"], ["r"]), node("QuantizeLinear", ["r", "s", "z"], ["q"]),
                       node("DequantizeLinear", ["q", "s", "z"])], x, q)
    grads = []
    for model in (folded, kept):
        xt = torch.from_numpy(x).requires_grad_(True)
        out = torch_module_from_onnx(model)(xt)
        np.testing.assert_array_equal(out.detach().numpy(), run_ort(model, x))
        grads.append(torch.autograd.grad(out.sum(), xt)[0].numpy())
    np.testing.assert_array_equal(grads[0], [[0, 0, 0, 1, 1, 1]])
    np.testing.assert_array_equal(grads[0], grads[1])


def test_external_data_is_read_from_beside_the_model(tmp_path):
    x = rand(2, 4)
    model = make_model([node("Gemm", ["x", "w", "b"], transB=1)], x, {"w": rand(3, 4), "b": rand(3)})
    expected = run_ort(model, x)
    onnx.save_model(model, tmp_path / "model.onnx", save_as_external_data=True, location="weights.bin",
                    size_threshold=0)
    assert (tmp_path / "weights.bin").is_file()
    np.testing.assert_allclose(run_torch(tmp_path / "model.onnx", x), expected, rtol=1e-6)


def test_weights_are_buffers_not_parameters():
    model = make_model([node("Gemm", ["x", "w", "b"], transB=1)], rand(2, 4), {"w": rand(3, 4), "b": rand(3)})
    module = torch_module_from_onnx(model)
    assert list(module.parameters()) == []
    buffers = list(module.buffers())
    assert len(buffers) == 2 and not any(b.requires_grad for b in buffers)
    assert module.input_name == "x" and module.output_name == "y" and module.op_counts == {"Gemm": 1}
    assert module.static_batch == 2 and not module.quantized


def test_static_batch_graph_runs_any_batch():
    """A batch fixed at 1 and baked into a Reshape target and a constant concatenated to every sample."""
    x = rand(1, 2, 3)
    model = make_model([node("Reshape", ["x", "s"], ["r"]), node("QuantizeLinear", ["r", "qs"], ["q"]),
                        node("DequantizeLinear", ["q", "qs"], ["d"]), node("Concat", ["d", "c"], ["y"], axis=1)], x,
                       {"s": np.array([1, 6], I64), "c": rand(1, 2), "qs": F32(0.01)})
    module = torch_module_from_onnx(model)
    assert module.static_batch == 1 and module.grouped  # the constant [1, 2] cannot take a batch: per-sample vmap
    batch = torch.from_numpy(rand(5, 2, 3)).requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. an op without a vmap batching rule, run in a slow loop
        out = module(batch)
        (grad,) = torch.autograd.grad(out[:, :6].sum(), batch)
    expected = np.concatenate([run_ort(model, batch[i:i + 1].detach().numpy()) for i in range(5)])
    np.testing.assert_allclose(out.detach().numpy(), expected, atol=1e-6)
    levels = np.round(batch.detach().numpy() / np.float32(0.01))  # uint8 (no zero point): 0..255 passes
    np.testing.assert_array_equal(grad.numpy(), ((levels >= 0) & (levels <= 255)).astype(np.float32))
    assert 0 < grad.sum() < grad.numel()  # both sides of the clip occur


def test_unsupported_ops_are_all_named():
    x = rand(2, 3)
    body = helper.make_graph([], "body", [], [])
    model = make_model([node("Relu", ["x"], ["a"]), node("Loop", ["", "", ""], ["l"], body=body),
                        node("NoSuchOp", ["a"], ["b"], domain="com.microsoft"), node("Add", ["b", "l"], ["c"]),
                        node("FusedMatMul", ["c", "c"], domain="com.microsoft", transBatchA=1)], x)
    with pytest.raises(UnsupportedGraph) as info:
        torch_module_from_onnx(model)
    message = str(info.value)
    assert "Loop (control flow)" in message and "com.microsoft.NoSuchOp" in message
    assert "Add" not in message  # it only reads unmappable outputs: not a culprit
    assert "\n" not in message and "attack the PyTorch checkpoint" in message


def test_two_real_inputs_are_refused():
    model = make_model([node("Add", ["x", "x2"])], rand(2, 3), inputs=("x", "x2"))
    with pytest.raises(UnsupportedGraph, match=r"2 inputs \(x, x2\)"):
        torch_module_from_onnx(model)


def test_check_matches_engine_refuses_a_mismatch():
    model = make_model(chain("Relu"), rand(4, 3))
    module = torch_module_from_onnx(model)
    x = rand(4, 3)
    assert check_matches_engine(module, lambda a: np.maximum(a, 0), x, what="relu")["passed"]
    with pytest.raises(UnsupportedGraph, match="relu: the converted graph does not match the engine"):
        check_matches_engine(module, lambda a: np.maximum(a, 0) + 1e-3, x, what="relu")


# -- whole engines ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_test_x():
    from dlforge.data import load_dataset

    return load_dataset("digits").x_test[:300]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_digits_lenet_engine_matches_onnxruntime(digits_engines, digits_test_x, precision):
    from dlforge.runtime.deployed import open_deployed

    module = torch_module_from_onnx(digits_engines[precision].path)
    with open_deployed(digits_engines[precision]) as engine:
        result = match_engine(module, engine.predict, digits_test_x)
    assert result["passed"], result
    if precision == "fp32":
        assert "com.microsoft.FusedConv" in module.op_counts and not module.quantized
        assert result["criterion"] == "max_abs_diff<=1e-4" and result["max_abs_diff"] <= 1e-4
    else:
        assert module.quantized and result["criterion"] == "top1_agreement>=0.995"
        assert result["top1_agreement"] >= 0.995 and result["samples"] == len(digits_test_x)


def test_fp32_engine_gradients_are_the_source_models(digits_lenet, digits_engines, digits_test_x):
    """Attacking the converted fp32 engine uses the gradients of the model it was compiled from."""
    from dlforge.train.checkpoint import attack_model

    x, y = digits_test_x[:64], np.arange(64) % 10
    source = attack_model(digits_lenet).input_gradients(x, y)
    module = torch_module_from_onnx(digits_engines["fp32"].path)
    xt = torch.from_numpy(x).requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(module(xt), torch.from_numpy(y), reduction="sum")
    (ours,) = torch.autograd.grad(loss, xt)
    np.testing.assert_allclose(ours.numpy(), source, rtol=1e-3, atol=1e-5 * np.abs(source).max())


def test_int8_engine_input_gradient_flows(digits_engines, digits_test_x):
    """Straight-through gradients of the INT8 engine point where the fp32 engine's do (same weights, up to rounding)."""
    x = torch.from_numpy(digits_test_x[:64])
    y = torch.arange(64) % 10
    grads = {}
    for precision in ("fp32", "int8"):
        module = torch_module_from_onnx(digits_engines[precision].path)
        xg = x.clone().requires_grad_(True)
        (grads[precision],) = torch.autograd.grad(torch.nn.functional.cross_entropy(module(xg), y), xg)
    int8, fp32 = grads["int8"].flatten(1), grads["fp32"].flatten(1)
    assert (int8.abs().sum(1) > 0).all()
    assert torch.nn.functional.cosine_similarity(int8, fp32).mean() > 0.8


@pytest.fixture(scope="module")
def mnist_images():
    from dlforge.data.idx import IMAGES_MAGIC, find_idx_file, read_idx

    path = find_idx_file(shared_path("mnist"), "t10k-images-idx3-ubyte")
    return (read_idx(path, IMAGES_MAGIC)[:64].astype(np.float32) / 255.0)[:, None]


@pytest.mark.parametrize("name", ["mnist-8.onnx", "mnist-12.onnx"])
def test_model_zoo_mnist_runs_at_batch_64(name, mnist_images):
    """Their graphs fix the batch at 1 (input [1, 1, 28, 28], Reshape to [1, 256]); one batch of 64 through the
    module matches ONNX Runtime run on one image at a time, both by the Reshape rewrite and by per-sample vmap."""
    path = shared_path("onnx-models", name)
    module = torch_module_from_onnx(path)
    assert module.static_batch == 1 and not module.grouped and module.input_name == "Input3"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def one_at_a_time(x):
        return np.concatenate([session.run(None, {"Input3": x[i:i + 1]})[0] for i in range(len(x))])

    assert match_engine(module, one_at_a_time, mnist_images, batch_size=64)["passed"]
    module.grouped = True
    assert match_engine(module, one_at_a_time, mnist_images, batch_size=64)["passed"]
