"""Every zoo model through every stage on an RGB dataset: train, export (verified), INT8 build, engine predictions."""

from __future__ import annotations

import numpy as np
import pytest

from dlforge.build import engine_from_onnx
from dlforge.data import load_dataset
from dlforge.export import onnx_from_checkpoint
from dlforge.runtime import open_session
from dlforge.train import checkpoint_from_training
from dlforge_models import get_entry, list_models


@pytest.fixture(scope="module")
def rgb_npz(tmp_path_factory):
    """The digits, 16x16, each class drawn in its own colour on a tinted background: a 3-channel set whose
    classes depend on shape and colour together."""
    digits = load_dataset("digits")
    x = np.concatenate([digits.x_train, digits.x_val, digits.x_test])[:400, 0]  # 400 keep every model quick
    y = np.concatenate([digits.y_train, digits.y_val, digits.y_test])[:400]
    x = x.repeat(2, axis=1).repeat(2, axis=2)  # 16x16
    rng = np.random.default_rng(0)
    ink = rng.uniform(0.3, 1.0, (10, 3)).astype(np.float32)
    background = rng.uniform(0.0, 0.3, (len(y), 3, 1, 1)).astype(np.float32)
    rgb = background * (1 - x[:, None]) + ink[y][:, :, None, None] * x[:, None]
    path = tmp_path_factory.mktemp("rgb") / "rgb-digits.npz"
    np.savez(path, x=rgb.astype(np.float32), y=y)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("name", [m for m in list_models() if get_entry(m).modality == "image"])  # kws: test_audio
def test_every_zoo_model_takes_rgb_through_every_stage(name, rgb_npz, tmp_path):
    ckpt = checkpoint_from_training(name, tmp_path / "ckpt", data=str(rgb_npz), epochs=1, progress=False)
    assert ckpt.card.model.inputs[0].shape == ("batch", 3, 16, 16)
    onnx = onnx_from_checkpoint(ckpt.path, tmp_path / "onnx")
    assert onnx.card.sections["verification"]["passed"]
    engine = engine_from_onnx(onnx.path, tmp_path / "int8", precision="int8", calib_samples=64)
    classifier = get_entry(name).task == "classification"
    with open_session(engine.path) as session:
        out = session.predict(np.zeros((2, 3, 16, 16), np.float32))
    assert out.shape == ((2, 10) if classifier else (2, 3, 16, 16))
    if classifier:  # the card's accuracy is what the engine itself computes on the test split
        ds = load_dataset(str(rgb_npz))
        evaluation = engine.card.sections["evaluation"]
        with open_session(engine.path) as session:
            logits = session.predict(ds.x_test[:evaluation["samples"]])
        assert abs((logits.argmax(1) == ds.y_test[:evaluation["samples"]]).mean() - evaluation["accuracy"]) < 1e-9
