"""The deployed-model layer: batches within the engine's range, facts from the card, verified lineage."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest

from dlforge.errors import InputError
from dlforge.runtime import batch_plan, open_deployed


@pytest.mark.parametrize("n, want, limits, expected", [
    (10, 4, (1, None), [(0, 4, 4), (4, 8, 4), (8, 10, 2)]),
    (10, 256, (1, 4), [(0, 4, 4), (4, 8, 4), (8, 10, 2)]),
    (3, 256, (1, 1), [(0, 1, 1), (1, 2, 1), (2, 3, 1)]),
    (5, 2, (4, 8), [(0, 4, 4), (4, 5, 4)]),  # below the minimum: padded up to it
])
def test_batch_plan(n, want, limits, expected):
    assert batch_plan(n, want, limits) == expected


def test_batch_plan_rejects_nothing_to_do():
    with pytest.raises(InputError):
        batch_plan(0, 4, (1, None))


def _narrow_copy(engine_dir, tmp_path, batch_range):
    dst = tmp_path / "narrow"
    shutil.copytree(engine_dir, dst)
    card = json.loads((dst / "card.json").read_text())
    card["batch_range"] = list(batch_range)
    (dst / "card.json").write_text(json.dumps(card))
    return dst


def test_predict_respects_a_batch_range_and_matches_onnxruntime(digits_engines, tmp_path):
    from dlforge.data import load_dataset

    x = load_dataset("digits").x_test
    reference = ort.InferenceSession(str(digits_engines["fp32"].payload_path)).run(None, {"input": x})[0]
    with open_deployed(_narrow_copy(digits_engines["fp32"].path, tmp_path, (4, 64))) as model:
        assert model.batch_range == (4, 64)
        with pytest.raises(InputError, match="batches 4 to 64"):
            model.session.predict(x[:100])
        np.testing.assert_allclose(model.predict(x, batch_size=256), reference, atol=1e-5)
        np.testing.assert_allclose(model.predict(x[:3]), reference[:3], atol=1e-5)  # padded to 4, cut to 3


def test_facts_and_lineage(digits_engines, digits_lenet):
    with open_deployed(digits_engines["int8"].path) as model:
        assert model.precision == "int8" and model.backend == "ort" and model.task == "classification"
        assert model.labels == tuple(str(i) for i in range(10)) and model.value_range == (0.0, 1.0)
        assert model.input_shape == (1, 8, 8)
        assert [a.kind for a in model.lineage()] == ["engine", "onnx", "checkpoint"]
        assert model.source_checkpoint().card.sha256 == digits_lenet.card.sha256
        assert model.training_data() == ("digits", None)


def test_plain_onnx_file(digits_onnx):
    with open_deployed(digits_onnx.payload_path) as model:
        assert model.artifact is None and model.lineage() == [] and model.precision == "as-is"
        assert model.predict(np.zeros((2, 1, 8, 8), np.float32)).shape == (2, 10)


def test_session_misuse_is_bad_input(digits_engines):
    with open_deployed(digits_engines["fp32"].path) as model:
        session = model.session
        for feeds in (np.zeros((1, 1, 8, 8), np.float32), None):
            with pytest.raises(InputError, match="dict of input name"):
                session.run(feeds)
    with pytest.raises(InputError, match="closed"):
        session.predict(np.zeros((1, 1, 8, 8), np.float32))
