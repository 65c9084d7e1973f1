"""dlforge drift: hop-by-hop figures equal the stages' own, and bad input is refused before any output."""

import json

import pytest
from click.testing import CliRunner

from dlforge.cli import cli
from dlforge.drift import DriftReport
from dlforge.errors import InputError


def test_drift_columns_are_the_stages_figures(digits_lenet, digits_onnx, digits_engines, tmp_path):
    out = tmp_path / "drift"
    paths = [digits_lenet.path, digits_onnx.path, digits_engines["fp32"].path, digits_engines["int8"].path]
    result = CliRunner().invoke(cli, ["drift", *map(str, paths), "--samples", "60", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("drift per hop") and "top-1 disagree" in result.output
    written = json.loads((out / "drift.json").read_text())
    assert DriftReport.from_json(written).to_json() == written and written["schema_version"] == 1
    with pytest.raises(InputError, match="not a drift report of schema 1"):
        DriftReport.from_json({k: v for k, v in written.items() if k != "schema_version"})  # a drift.json of before
    hops = written["hops"]
    assert [h["hop"] for h in hops] == ["pytorch", "onnx", "ort fp32", "ort int8"]
    fp32, int8 = (digits_engines[p].card.sections["evaluation"] for p in ("fp32", "int8"))
    assert abs(hops[0]["accuracy"] - digits_lenet.card.sections["metrics"]["test_accuracy"]) < 1e-6
    assert hops[1]["accuracy"] == fp32["parent_accuracy"] and hops[2]["accuracy"] == fp32["accuracy"]
    assert hops[3]["accuracy"] == int8["accuracy"]
    assert hops[1]["max_abs_diff"] < 1e-4 and hops[2]["top1_disagreement"] == 1 - fp32["top1_agreement"]
    assert hops[3]["max_abs_diff"] > 1e-3 and hops[3]["cosine"] < 1.0  # INT8 is a different computation
    assert all(0.0 <= h["robust_accuracy"] <= h["accuracy"] + 0.2 for h in hops)
    assert (out / "report.html").is_file()


def test_drift_refuses_other_models_and_writes_nothing(digits_onnx, tmp_path):
    import numpy as np

    from dlforge.train import checkpoint_from_training

    data = tmp_path / "wide.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.random((40, 12, 12), dtype=np.float32), y=np.arange(40) % 10)
    other = checkpoint_from_training("mlp", tmp_path / "other", data=str(data), epochs=1, progress=False)
    out = tmp_path / "drift"
    result = CliRunner().invoke(cli, ["drift", str(digits_onnx.path), str(other.path), "-o", str(out)])
    assert result.exit_code == 2 and "is not a stage of the same model" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def test_drift_refuses_a_model_of_the_same_shapes_and_a_nan_eps(digits_lenet, digits_onnx, tmp_path):
    """An MLP trained on the same digits has the LeNet's inputs and outputs: shapes alone cannot tell them apart."""
    from dlforge.train import checkpoint_from_training

    mlp = checkpoint_from_training("mlp", tmp_path / "mlp", epochs=1, progress=False)
    assert mlp.card.model.inputs == digits_lenet.card.model.inputs
    result = CliRunner().invoke(cli, ["drift", str(digits_onnx.path), str(mlp.path)])
    assert result.exit_code == 2 and "is not a stage of the same model" in result.output, result.output
    result = CliRunner().invoke(cli, ["drift", str(digits_lenet.path), str(digits_onnx.path), "--eps", "nan"])
    assert result.exit_code == 2 and "--eps must be a finite number" in result.output, result.output


def test_drift_options_are_an_options_class_shared_by_the_cli_and_the_api():
    """One declaration: the CLI's flags, defaults and checks come from DriftOptions, as the other stages'."""
    from dlforge.drift import DriftOptions, run_drift
    from dlforge.errors import InputError

    assert DriftOptions().samples == 200 and DriftOptions().eps == 0.1
    with pytest.raises(InputError, match="--pgd-steps must be a finite number >= 1, got 0"):
        run_drift(["a", "b"], pgd_steps=0)
    result = CliRunner().invoke(cli, ["drift", "--help"])
    assert "--seed" in result.output and "[default: 200]" in result.output
