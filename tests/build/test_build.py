import numpy as np
import pytest

from dlforge.build import engine_from_onnx
from dlforge.data import load_dataset
from dlforge.errors import InputError, StageFailed


def test_fp32_engine_matches_parent(digits_engines):
    ev = digits_engines["fp32"].card.sections["evaluation"]
    assert ev["max_abs_diff"] <= 1e-4 and ev["top1_agreement"] == 1.0 and ev["accuracy_drop"] == 0.0
    assert digits_engines["fp32"].card.sections["backend"] == "ort"


def test_int8_engine_is_quantized_and_close(digits_engines):
    card = digits_engines["int8"].card
    ev = card.sections["evaluation"]
    assert card.sections["precision"] == "int8" and card.sections["build"]["format"] == "QDQ"
    assert ev["accuracy_drop"] <= 1.0 and ev["top1_agreement"] >= 0.98
    assert 0 < ev["max_abs_diff"]  # it really is a different (quantized) computation
    assert ev["samples"] == len(load_dataset("digits").y_test)
    assert card.parent["sha256"] is not None


def test_calibration_on_dark_images_breaks_accuracy_and_the_gate_catches_it(digits_onnx, tmp_path):
    rng = np.random.default_rng(0)
    dark = tmp_path / "dark.npz"
    np.savez(dark, x=(rng.random((300, 8, 8)) * 0.02).astype(np.float32), y=rng.integers(0, 10, 300))
    with pytest.raises(StageFailed, match=r"points below its parent's .* \(> --max-accuracy-drop 0.5\)"):
        engine_from_onnx(digits_onnx.path, tmp_path / "e", precision="int8", calib_data=str(dark),
                         calib_samples=200, max_accuracy_drop=0.5)
    assert not (tmp_path / "e").exists()


def test_auto_picks_fastest_within_budget(digits_onnx, tmp_path):
    lines = []
    art = engine_from_onnx(digits_onnx.path, tmp_path / "auto", precision="auto", report=lines.append)
    sel = art.card.sections["selection"]
    eligible = [r for r in sel["candidates"] if r["within_budget"]]
    assert sel["chosen"] == min(eligible, key=lambda r: r["median_ms"])["precision"]
    assert art.card.sections["precision"] == sel["chosen"]
    assert any("median ms" in line for line in lines) and any("chosen" in line for line in lines)


def test_calibration_set_smaller_than_requested(digits_onnx, tmp_path):
    with pytest.raises(InputError, match="--calib-samples 5000 asks for more images than the calibration set"):
        engine_from_onnx(digits_onnx.path, tmp_path / "e", precision="int8", calib_samples=5000)
    assert not (tmp_path / "e").exists()


def test_checkpoint_is_not_an_onnx_artifact(digits_lenet, tmp_path):
    with pytest.raises(InputError, match="is a checkpoint artifact; expected an onnx artifact"):
        engine_from_onnx(digits_lenet.path, tmp_path / "e")


@pytest.mark.slow
def test_int8_lenet_on_mnist_loses_at_most_half_a_point(mnist_onnx, tmp_path):
    art = engine_from_onnx(mnist_onnx.path, tmp_path / "int8", precision="int8")
    ev = art.card.sections["evaluation"]
    assert ev["samples"] == 10000 and ev["accuracy_drop"] <= 0.5
