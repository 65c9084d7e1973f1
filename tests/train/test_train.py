import numpy as np
import pytest
import torch

from dlforge.data import load_dataset
from dlforge.train import checkpoint_from_training, load_checkpoint


def test_lenet_on_digits_reaches_97_percent(digits_lenet):
    metrics = digits_lenet.card.sections["metrics"]
    assert metrics["test_accuracy"] >= 0.97
    assert len(metrics["history"]) == digits_lenet.card.params["epochs"]
    assert {"train_loss", "val_accuracy"} <= set(metrics["history"][0])
    assert metrics["history"][-1]["train_loss"] < metrics["history"][0]["train_loss"]


def test_same_seed_gives_byte_identical_weights(tmp_path):
    runs = [checkpoint_from_training("mlp", tmp_path / name, epochs=2, seed=seed, progress=False)
            for name, seed in (("a", 7), ("b", 7), ("c", 8))]
    assert runs[0].card.sha256 == runs[1].card.sha256
    assert runs[0].card.sha256 != runs[2].card.sha256


def test_checkpoint_loads_back_with_the_same_predictions(digits_lenet):
    model, artifact = load_checkpoint(digits_lenet.path)
    ds = load_dataset("digits")
    with torch.no_grad():
        acc = float((model(torch.from_numpy(ds.x_test)).argmax(1).numpy() == ds.y_test).mean())
    assert acc == pytest.approx(artifact.card.sections["metrics"]["test_accuracy"], abs=1e-6)


def test_checkpoint_card_describes_the_model(digits_lenet):
    info = digits_lenet.card.model
    assert info.inputs[0].shape == ("batch", 1, 8, 8) and info.outputs[0].shape == ("batch", 10)
    assert info.value_range == (0.0, 1.0) and info.labels == tuple("0123456789")
    assert digits_lenet.card.params["seed"] == 0 and "torch" in digits_lenet.card.env["packages"]


@pytest.mark.slow
def test_lenet_on_mnist_reaches_99_percent_in_3_epochs(mnist_lenet):
    assert mnist_lenet.card.sections["metrics"]["test_accuracy"] >= 0.990


def test_weights_file_holds_only_tensors(digits_lenet):
    from safetensors import safe_open

    with safe_open(str(digits_lenet.payload_path), "pt") as f:
        keys = list(f.keys())
    model, _ = load_checkpoint(digits_lenet.path)
    assert sorted(keys) == sorted(model.state_dict())
    assert np.isfinite(model.state_dict()[keys[0]].numpy()).all()


def test_dbn_pretrains_its_rbms_and_records_reconstruction_error(tmp_path):
    ckpt = checkpoint_from_training("dbn", tmp_path / "dbn", progress=False)
    pre = ckpt.card.sections["metrics"]["pretraining"]
    assert [layer["hidden"] for layer in pre["layers"]] == [500, 500] and pre["cd_k"] == 1
    for layer in pre["layers"]:
        errors = layer["reconstruction_error"]
        assert len(errors) == 3 and errors[-1] < errors[0]
    assert ckpt.card.sections["metrics"]["test_accuracy"] >= 0.93


def test_autoencoder_beats_the_mean_image_by_5x(tmp_path):
    ckpt = checkpoint_from_training("autoencoder", tmp_path / "ae", epochs=30, progress=False)
    m = ckpt.card.sections["metrics"]
    assert ckpt.card.model.task == "reconstruction" and m["test_accuracy"] is None
    assert m["test_mse"] * 5 < m["mean_image_mse"]
    assert "val_mse" in m["history"][-1] and "val_accuracy" not in m["history"][-1]
