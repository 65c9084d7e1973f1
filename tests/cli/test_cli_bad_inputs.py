"""Bad input to train / export / inspect: exit 2, one line saying what is wrong, nothing written."""

import pickle

import numpy as np
import pytest
from click.testing import CliRunner

from dlforge.cli import cli
from tests.cli.tamper import tampered_copy
from tests.cli.test_cli_errors import assert_clean_failure
from tests.helpers import shared_path


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def refused(result, tmp_path, message, code=2):
    """The command wrote nothing: no ``-o tmp_path/run/out``, no staging directory beside it."""
    assert_clean_failure(result, tmp_path / "run", message, code=code)
    assert not (tmp_path / "run" / "out").exists()


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory):
    """A small MLP on digits, one epoch: a checkpoint to export or tamper with."""
    from dlforge.train import checkpoint_from_training

    return checkpoint_from_training("mlp", tmp_path_factory.mktemp("small") / "ckpt", epochs=1,
                                    overrides={"hidden": [32]}, progress=False)


@pytest.mark.parametrize("flag, value, message", [
    ("--lr", "inf", "--lr must be a finite number > 0, got inf"),
    ("--lr", "nan", "--lr must be a finite number > 0, got nan"),
    ("--lr", "0", "--lr must be a finite number > 0"),
    ("--lr", "-1", "--lr must be a finite number > 0"),
    ("--epochs", "0", "--epochs must be a finite number >= 1"),
    ("--batch-size", "0", "--batch-size must be a finite number >= 1"),
    ("--weight-decay", "-1", "--weight-decay must be a finite number >= 0"),
    ("--adv-eps", "nan", "--adv-eps must be a finite number"),
    ("--device", "tpu", "--device: unknown value 'tpu'; expected one of cpu, cuda"),
])
def test_train_bad_numbers(tmp_path, flag, value, message):
    refused(run("train", "mlp", flag, value, "-o", tmp_path / "run" / "out"), tmp_path, message)


@pytest.mark.parametrize("model, setting, message", [
    ("mlp", "bogus=1", "--set bogus: model 'mlp' has no option 'bogus'"),
    ("lenet", "channels=abc", '--set channels="abc": lenet\'s channels must be a list of positive integers'),
    ("mlp", "hidden=-3", "--set hidden=-3: mlp's hidden must be a list of positive integers"),
    ("mlp", "hidden=[64,0]", "mlp's hidden must be a list of positive integers"),
    ("lenet", "hidden=-3", "cannot build lenet for digits (images (1, 8, 8), 10 classes) with --set hidden=-3"),
    ("lenet", "dropout=5", "with --set dropout=5: dropout probability has to be between 0 and 1"),
    ("lenet", "hidden=1.5", "--set hidden=1.5: lenet's hidden must be an integer"),
    ("mlp", "noequals", "--set expects KEY=VALUE"),
])
def test_train_bad_architecture_overrides(tmp_path, model, setting, message):
    result = run("train", model, "--epochs", "1", "--set", setting, "-o", tmp_path / "run" / "out")
    refused(result, tmp_path, message)


def _npz(tmp_path, name="d.npz", n=100, **arrays):
    rng = np.random.default_rng(0)
    arrays.setdefault("x", rng.integers(0, 256, (n, 8, 8), dtype=np.uint8))
    arrays.setdefault("y", np.arange(n) % 3)
    np.savez(tmp_path / name, **arrays)
    return tmp_path / name


def _stray(label):
    y = np.arange(100) % 3
    y[0] = label
    return y


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((0, 8, 8), np.uint8), "y": np.zeros(0, np.int64)}, "'x' holds no images"),
    ({"y": _stray(10**9)}, "y's largest label, 1000000000, implies 1000000001 classes; dlforge trains at most 10000"),
    ({"y": _stray(40)}, "y uses labels up to 40 but no image has label 3, 4, 5, 6, 7... (37 empty classes)"),
    ({"labels": np.array(["a", "b"])}, "y has label 2, but 'labels' names only 2 classes (labels must be 0..1)"),
    ({"labels": np.array([str(i) for i in range(200)])}, "'labels' names 200 classes but there are only 100 images"),
    ({"y": np.arange(50) % 3}, "'y' has shape (50,); expected (100,), one label per image"),
    ({"x": np.full((100, 8, 8), np.nan, np.float32)}, "'x' has 6400 NaN or infinite pixel values"),
    ({"x_test": np.zeros((0, 8, 8), np.uint8), "y_test": np.zeros(0, np.int64)}, "'x_test' holds no images"),
    ({"x": np.zeros((2, 8, 8), np.uint8), "y": np.array([0, 1])}, "has no train images"),
    ({"y": np.zeros(100, np.int64)}, "has 1 class(es); dlforge trains on 2 to 10000 classes"),
])
def test_train_bad_npz(tmp_path, arrays, message):
    path = _npz(tmp_path, **arrays)
    refused(run("train", "mlp", "--epochs", "1", "--data", path, "-o", tmp_path / "run" / "out"), tmp_path, message)


def test_npz_with_names_trains_and_records_them(tmp_path):
    path = _npz(tmp_path, labels=np.array(["cat", "dog", "eel"]))
    result = run("train", "mlp", "--epochs", "1", "--set", "hidden=[16]", "--data", path, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    from dlforge.artifact import open_artifact

    card = open_artifact(tmp_path / "out").card
    assert card.model.labels == ("cat", "dog", "eel") and card.model.outputs[0].shape == ("batch", 3)
    assert card.params["overrides"] == {"hidden": [16]} and card.params["adv_eps"] is None


def test_empty_idx_test_set(tmp_path, mnist_dir):
    import gzip
    import shutil
    import struct

    d = tmp_path / "mnist"
    shutil.copytree(mnist_dir, d)
    (d / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(struct.pack(">IIII", 2051, 0, 28, 28)))
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(struct.pack(">II", 2049, 0)))
    result = run("train", "mlp", "--data", "mnist", "--data-dir", d, "-o", tmp_path / "run" / "out")
    refused(result, tmp_path, "has no test images")


@pytest.mark.parametrize("flag, value, message", [
    ("--atol", "nan", "--atol must be a finite number > 0, got nan"),
    ("--atol", "-1", "--atol must be a finite number > 0, got -1.0"),
    ("--samples", "0", "--samples must be a finite number >= 1, got 0"),
    ("--opset", "5", "--opset must be a finite number >= 7 and <= 23, got 5"),
    ("--opset", "99", "--opset must be a finite number >= 7 and <= 23, got 99"),
    ("--exporter", "tf", "--exporter: unknown value 'tf'; expected one of dynamo, torchscript"),
    ("--data", "", "--data must not be empty"),
])
def test_export_bad_flags(small_ckpt, tmp_path, flag, value, message):
    refused(run("export", small_ckpt.path, flag, value, "-o", tmp_path / "run" / "out"), tmp_path, message)


@pytest.mark.parametrize("payload", [b"this is not a tensor file", pickle.dumps({"weight": [1.0, 2.0]})])
def test_export_of_weights_that_are_not_safetensors(small_ckpt, tmp_path, payload):
    bad = tampered_copy(small_ckpt.path, tmp_path / "bad", payload=payload)
    refused(run("export", bad, "-o", tmp_path / "run" / "out"), tmp_path, "is not a safetensors weights file")


def test_export_of_an_all_nan_model_is_refused_not_verified(small_ckpt, tmp_path):
    import torch
    from safetensors.torch import load_file, save

    state = {k: torch.full_like(v, float("nan")) for k, v in load_file(str(small_ckpt.payload_path)).items()}
    bad = tampered_copy(small_ckpt.path, tmp_path / "nan", payload=save(state))
    result = run("export", bad, "-o", tmp_path / "run" / "out")
    refused(result, tmp_path, "the checkpoint's own PyTorch outputs are NaN or infinite on")


def test_export_of_a_card_that_promises_another_output(small_ckpt, tmp_path):
    def reconstruction(card):
        card["model"]["task"] = "reconstruction"
        card["model"]["outputs"][0]["shape"] = ["batch", 1, 8, 8]

    bad = tampered_copy(small_ckpt.path, tmp_path / "bad", card=reconstruction)
    refused(run("export", bad, "-o", tmp_path / "run" / "out"), tmp_path, "but it produces [10]")


def test_nan_difference_never_passes(small_ckpt, tmp_path):
    from dlforge.errors import StageFailed
    from dlforge.export.onnx_export import _judge

    with pytest.raises(StageFailed, match="NaN or infinite"):
        _judge({"passed": False, "onnx_finite": False, "max_abs_diff": None, "top1_agreement": 0.1}, 1e-4)


@pytest.mark.parametrize("name", ["mnist-8.onnx", "mnist-12.onnx"])
def test_inspect_plain_onnx(name):
    path = shared_path("onnx-models", name)
    result = run("inspect", path)
    assert result.exit_code == 0, result.output
    assert "onnx (no card)" in result.stdout and "opset " in result.stdout and "Conv x2" in result.stdout
    assert "input      Input3: float32[1, 1, 28, 28]" in result.stdout and "KiB" in result.stdout


def test_inspect_garbage(tmp_path):
    (tmp_path / "g.onnx").write_bytes(b"\x08\xff garbage")
    assert_clean_failure(run("inspect", tmp_path / "g.onnx"), tmp_path, "is not a readable ONNX model")
    (tmp_path / "g.bin").write_bytes(b"garbage")
    assert_clean_failure(run("inspect", tmp_path / "g.bin"), tmp_path, "is not a dlforge artifact")
