"""The exit-code contract of build, bench, audit, poison and pipeline: 2 for bad input (one line, no
traceback, nothing written), 1 when a gate judges the model, 3 for an internal error."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from dlforge.artifact import sha256_file
from tests.cli.test_cli_errors import assert_clean_failure
from tests.helpers import dlforge


def _invoke(args):
    return dlforge(*args)


def _assert_bad_input(result, message, out):
    """Exit 2, one ``Error:`` line naming the problem, no traceback, and no ``out`` (or partial artifact)."""
    assert_clean_failure(result, out.parent, message)
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--max-accuracy-drop", "nan"], "--max-accuracy-drop must be a finite number"),
    (["--eval-samples", "-3"], "--eval-samples must be a finite number >= 1"),
    (["--calib-samples", "0"], "--calib-samples must be"),
    (["--precision", "banana"], "unknown value 'banana'"),
    (["--backend", "tvm"], "unknown value 'tvm'"),
    (["--min-batch", "8", "--max-batch", "4"], "--min-batch <= --opt-batch <= --max-batch"),
    (["--workspace", "64"], "--workspace is an option of --backend tensorrt, not ort"),
    (["--reduce-range", "sometimes"], "'sometimes' is not one of 'auto', 'on', 'off'"),
    (["--min-shapes", "input:1x1x8x8"], "--min-shapes/--opt-shapes/--max-shapes is an option of --backend tensorrt"),
    (["--backend", "tensorrt", "--min-shapes", "input:1x1x8x8"], "--min-shapes, --opt-shapes and --max-shapes go "
                                                                  "together"),
])
def test_build_bad_flags(digits_onnx, tmp_path, args, message):
    out = tmp_path / "deep" / "engine"
    _assert_bad_input(_invoke(["build", digits_onnx.path, "-o", out, *args]), message, out.parent)


def test_build_of_garbage_onnx(digits_onnx, tmp_path):
    import shutil

    bad = tmp_path / "onnx"
    shutil.copytree(digits_onnx.path, bad)
    (bad / "model.onnx").write_bytes(b"\x08garbage" * 50)
    card = json.loads((bad / "card.json").read_text())
    card["sha256"] = sha256_file(bad / "model.onnx")
    (bad / "card.json").write_text(json.dumps(card))
    out = tmp_path / "out" / "e"
    _assert_bad_input(_invoke(["build", bad, "-o", out]), "not a readable ONNX model", out)


@pytest.mark.parametrize("args, message", [
    (["--eps", "nan"], "--eps must be a finite number >= 0"),
    (["--eps", "0.1,-1"], "--eps must be a finite number >= 0"),
    (["--attacks", ""], "--attacks must not be empty"),
    (["--attacks", "deepfool"], "unknown attack 'deepfool'"),
    (["--attacks", "pgd:steps=0"], "steps=0 is out of range (must be >= 1)"),
    (["--attacks", "pgd:stepz=3"], "has no option 'stepz'"),
    (["--samples", "0"], "--samples must be"),
    (["--detectors", "magic"], "unknown detector 'magic'"),
    (["--detectors", "feature-squeezing:bits=0"], "bits=0 is out of range (must be >= 1)"),
    (["--detectors", "strip:fpr=x"], "fpr='x' is not float"),
    (["--attacks", "fooling:steps=2.5"], "probe 'fooling:steps=2.5': steps=2.5 is not int"),
    (["--fail-under", "nan:0.5"], "--fail-under expects [NORM:]EPS:ACC"),
    (["--fail-under", "0.25:0.5"], "is not among the audited --eps"),
])
def test_audit_bad_flags(digits_engines, tmp_path, args, message):
    out = tmp_path / "audit"
    _assert_bad_input(_invoke(["audit", digits_engines["fp32"].path, "-o", out, *args]), message, out)


def _onnx(path, output_shape, nodes, initializers=()):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, output_shape)], list(initializers))
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return path


def test_audit_refuses_models_that_are_not_classifiers(tmp_path):
    image = _onnx(tmp_path / "image.onnx", ["N", 1, 8, 8], [helper.make_node("Identity", ["input"], ["out"])])
    _assert_bad_input(_invoke(["audit", image, "--attacks", "square", "--data", "digits"]), "not (batch, classes) logits",
                      tmp_path / "out")
    axes = numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes")
    rank1 = _onnx(tmp_path / "rank1.onnx", ["N"], [helper.make_node("ReduceSum", ["input", "axes"], ["out"],
                                                                   keepdims=0)], [axes])
    _assert_bad_input(_invoke(["audit", rank1, "--attacks", "square", "--data", "digits"]), "not (batch, classes)",
                      tmp_path / "out")


def test_audit_refuses_a_model_with_nan_outputs(tmp_path):
    w = numpy_helper.from_array(np.full((64, 10), np.nan, np.float32), "W")
    shape = numpy_helper.from_array(np.array([-1, 64], np.int64), "shape")
    nan = _onnx(tmp_path / "nan.onnx", ["N", 10], [helper.make_node("Reshape", ["input", "shape"], ["flat"]),
                                                    helper.make_node("MatMul", ["flat", "W"], ["out"])], [w, shape])
    _assert_bad_input(_invoke(["audit", nan, "--attacks", "square", "--data", "digits"]), "outputs NaN or inf",
                      tmp_path / "out")


@pytest.mark.parametrize("args, message", [
    (["--trigger-size", "0"], "--trigger-size must be a finite number >= 1"),
    (["--rate", "1.5"], "--rate must be"),
    (["--rate", "nan"], "--rate must be"),
    (["--defences", "prayer"], "unknown value 'prayer'"),
    (["--strip-fpr", "0"], "--strip-fpr must be"),
])
def test_poison_validates_before_writing(tmp_path, args, message):
    out = tmp_path / "run"
    _assert_bad_input(_invoke(["poison", "lenet", "-o", out, *args]), message, out)


def test_pipeline_validates_before_writing(tmp_path):
    out = tmp_path / "run"
    _assert_bad_input(_invoke(["pipeline", "resnet", "-o", out]), "unknown model 'resnet'", out)
    _assert_bad_input(_invoke(["pipeline", "lenet", "--epochs", "0", "-o", out]), "--epochs must be", out)


def test_internal_error_exits_3_without_traceback(digits_engines, monkeypatch):
    import dlforge.adversarial.audit as audit

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(audit, "_prepare", broken)
    result = _invoke(["audit", digits_engines["fp32"].path, "--attacks", "square"])
    assert result.exit_code == 3
    assert "internal error: RuntimeError: a bug" in result.stderr and "Traceback" not in result.output


def test_a_device_failure_exits_4_not_as_bad_input(digits_engines, monkeypatch):
    """A CUDA call that fails (the TensorRT runtime's device layer raises CudaError) is neither bad input (2) nor a
    bug (3). It cannot be provoked without a GPU, so the session's run is replaced by one that fails as it would."""
    import ast
    import inspect

    import dlforge.adversarial.audit as audit
    from dlforge.errors import CudaError, DeviceError, DlforgeError

    def device_lost(*args, **kwargs):
        raise CudaError("cudaMemcpyAsync failed: cudaErrorLaunchFailure")

    monkeypatch.setattr(audit, "_prepare", device_lost)
    result = _invoke(["audit", digits_engines["fp32"].path, "--attacks", "square"])
    assert result.exit_code == 4 and "cudaErrorLaunchFailure" in result.stderr and "Traceback" not in result.output
    assert issubclass(CudaError, DeviceError) and issubclass(DeviceError, DlforgeError)
    import torch  # torch's own CUDA out-of-memory error (raised on a GPU by a gradient attack) is a device failure too

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(audit, "_prepare", out_of_memory)
    result = _invoke(["audit", digits_engines["fp32"].path, "--attacks", "square"])
    assert result.exit_code == 4 and "the device failed: OutOfMemoryError" in result.stderr
    # the TensorRT runtime (not importable here) raises the device error on a failed enqueue, not InputError
    from pathlib import Path

    source = (Path(inspect.getfile(audit)).parents[1] / "backends" / "tensorrt" / "session.py").read_text()
    raised = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Raise) and "enqueue" in ast.unparse(n)]
    assert raised and all(ast.unparse(n.exc).startswith("DeviceError(") for n in raised)


def test_exit_codes_are_documented():
    result = _invoke(["--help"])
    assert "Exit codes: 0 ok; 1 " in result.output and "2 bad input; 3 internal error" in result.output
    assert "4 the device" in result.output


def test_more_bad_input_exits_2_before_any_work(digits_onnx, tmp_path):
    """Each of these once exited 0, 1 or 3 (an empty .onnx inspected, a dangling -o link after the whole build,
    a non-classifier poisoned after training, a download that failed)."""
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    result = _invoke(["inspect", empty])
    assert result.exit_code == 2 and "is empty" in result.output
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "no" / "such" / "dir")
    result = _invoke(["build", digits_onnx.path, "-o", link])
    assert result.exit_code == 2 and "does not exist" in result.output and not (tmp_path / "no").exists()
    out = tmp_path / "poison"
    _assert_bad_input(_invoke(["poison", "autoencoder", "--data", "digits", "-o", out]), "not a classifier", out)
    result = _invoke(["download", "mnist", "--data-dir", tmp_path / "dl"])  # no network here, or a refused host
    if result.exit_code != 0:  # where the network is reachable the download may succeed: nothing to judge then
        assert result.exit_code == 2 and "could not download" in result.output
