import json
import shutil

from click.testing import CliRunner

from dlforge.cli import cli
from tests.cli.test_cli_errors import assert_clean_failure


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_export_and_build_json(digits_lenet, tmp_path):
    result = run("export", digits_lenet.path, "-o", tmp_path / "onnx", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["verification"]["max_abs_diff"] <= 1e-4
    result = run("build", tmp_path / "onnx", "-o", tmp_path / "int8", "--precision", "int8", "--json")
    assert result.exit_code == 0, result.output
    card = json.loads(result.stdout)
    for key in ("accuracy", "parent_accuracy", "accuracy_drop", "top1_agreement"):
        assert key in card["evaluation"]


def test_export_beyond_atol_exits_1_and_writes_nothing(digits_lenet, tmp_path):
    result = run("export", digits_lenet.path, "-o", tmp_path / "onnx", "--atol", "1e-12")
    assert_clean_failure(result, tmp_path, "differs from PyTorch", code=1)
    assert not (tmp_path / "onnx").exists()


def test_build_refuses_a_tampered_onnx(digits_onnx, tmp_path):
    copy = tmp_path / "onnx"
    shutil.copytree(digits_onnx.path, copy)
    (copy / "model.onnx").write_bytes(b"\x00" * 100)
    result = run("build", copy, "-o", tmp_path / "e")
    assert_clean_failure(result, tmp_path / "e", "does not match its card")


def test_build_calibration_set_too_small(digits_onnx, tmp_path):
    result = run("build", digits_onnx.path, "-o", tmp_path / "e", "--precision", "int8", "--calib-samples", "99999")
    assert_clean_failure(result, tmp_path, "asks for more images than the calibration set")


def test_build_tensorrt_without_tensorrt_names_the_extra(digits_onnx, tmp_path):
    result = run("build", digits_onnx.path, "-o", tmp_path / "e", "--backend", "tensorrt")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1


def test_doctor_json():
    result = run("doctor", "--json")
    assert result.exit_code == 0
    d = json.loads(result.stdout)
    assert "CPUExecutionProvider" in d["onnxruntime"]["providers"] and "tensorrt" in d


def test_inspect_third_party_onnx():
    from tests.helpers import shared_path

    result = run("inspect", shared_path("onnx-models", "mobilenetv2-12-int8.onnx"), "--json")
    info = json.loads(result.stdout)
    assert info["ops"]["com.microsoft.QLinearAdd"] == 11 and info["inputs"][0]["shape"][0] == "batch_size"
