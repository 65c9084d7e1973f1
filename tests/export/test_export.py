import json

import numpy as np
import onnx
import pytest

from dlforge.errors import InputError, StageFailed
from dlforge.export import onnx_from_checkpoint
from dlforge.runtime import open_session
from dlforge.train import checkpoint_from_training
from dlforge_models import get_entry, list_models


@pytest.mark.parametrize("name", [m for m in list_models() if get_entry(m).modality == "image"])  # kws: test_audio
def test_every_zoo_model_exports_and_verifies(name, tmp_path):
    ckpt = checkpoint_from_training(name, tmp_path / "ckpt", epochs=1, progress=False)
    art = onnx_from_checkpoint(ckpt.path, tmp_path / "onnx")
    v = art.card.sections["verification"]
    classifier = ckpt.card.model.task == "classification"
    assert v["passed"] and v["max_abs_diff"] <= 1e-4
    assert v["top1_agreement"] == (1.0 if classifier else None)
    assert art.card.parent == ckpt.lineage()
    with open_session(art.path) as session:
        assert session.inputs[0].shape == ("batch", 1, 8, 8)
        out = session.predict(np.zeros((3, 1, 8, 8), np.float32))
        assert out.shape == ((3, 10) if classifier else (3, 1, 8, 8))


def test_graph_passes_checker_and_carries_model_facts(digits_onnx):
    proto = onnx.load(str(digits_onnx.payload_path))
    onnx.checker.check_model(proto, full_check=True)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["dlforge.model"] == "lenet"
    assert json.loads(meta["dlforge.labels"]) == list("0123456789")
    assert json.loads(meta["dlforge.value_range"]) == [0.0, 1.0]
    assert [o.name for o in proto.graph.output] == ["logits"]


def test_static_batch_export(digits_lenet, tmp_path):
    art = onnx_from_checkpoint(digits_lenet.path, tmp_path / "onnx", dynamic_batch=False)
    with open_session(art.path) as session:
        assert session.inputs[0].shape == (1, 1, 8, 8)
        with pytest.raises(InputError, match="dimension 0 must be 1"):
            session.predict(np.zeros((2, 1, 8, 8), np.float32))


def test_verification_beyond_atol_fails_and_saves_nothing(digits_lenet, tmp_path):
    with pytest.raises(StageFailed, match="differs from PyTorch"):
        onnx_from_checkpoint(digits_lenet.path, tmp_path / "onnx", atol=1e-12)
    assert list(tmp_path.iterdir()) == []


def test_torchscript_fallback_exporter(digits_lenet, tmp_path):
    art = onnx_from_checkpoint(digits_lenet.path, tmp_path / "onnx", exporter="torchscript", opset=17)
    assert art.card.sections["verification"]["max_abs_diff"] <= 1e-4


def test_bad_opset_is_input_error(digits_lenet, tmp_path):
    with pytest.raises(InputError, match="--opset must be a finite number >= 7 and <= 23, got 3"):
        onnx_from_checkpoint(digits_lenet.path, tmp_path / "onnx", opset=3)
