import numpy as np
import pytest
import torch

from dlforge.errors import InputError
from dlforge.export import ExportOptions, onnx_from_checkpoint
from dlforge.export.onnx_export import verify_against_torch


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory):
    from dlforge.train import checkpoint_from_training

    return checkpoint_from_training("mlp", tmp_path_factory.mktemp("small") / "ckpt", epochs=1,
                                    overrides={"hidden": [32]}, progress=False)


def test_the_card_records_the_export_options(small_ckpt, tmp_path):
    options = ExportOptions(samples=40, opset=17)
    art = onnx_from_checkpoint(small_ckpt.path, tmp_path / "onnx", options, dynamic_batch=False)
    assert art.card.params == ExportOptions(samples=40, opset=17, dynamic_batch=False).params()
    assert art.card.sections["verification"]["samples"] == 40 and art.card.sections["graph"]["opset"] == 17


@pytest.mark.parametrize("settings, message", [
    ({"atol": float("nan")}, "--atol must be a finite number > 0, got nan"),
    ({"samples": 0}, "--samples must be a finite number >= 1, got 0"),
    ({"opset": 5}, "--opset must be a finite number >= 7 and <= 23, got 5"),
])
def test_bad_options_are_input_errors(small_ckpt, tmp_path, settings, message):
    with pytest.raises(InputError, match=message):
        onnx_from_checkpoint(small_ckpt.path, tmp_path / "onnx", **settings)
    assert list(tmp_path.iterdir()) == []


def test_a_model_with_nan_outputs_has_nothing_to_verify_against(tmp_path):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    with torch.no_grad():
        model[1].weight.fill_(float("nan"))
    x = np.zeros((3, 1, 2, 2), np.float32)
    torch.onnx.export(model, (torch.from_numpy(x),), str(tmp_path / "m.onnx"), dynamo=False, input_names=["input"],
                      dynamic_axes={"input": {0: "batch"}})
    with pytest.raises(InputError, match="NaN or infinite on 3 of 3 test images"):
        verify_against_torch(model, tmp_path / "m.onnx", x, atol=1e-4, dynamic_batch=True)
