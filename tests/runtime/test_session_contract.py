"""The Session contract, run against every backend. Backends missing here skip with the reason."""

import importlib.util
import threading

import numpy as np
import pytest

from dlforge.data import load_dataset
from dlforge.errors import InputError
from dlforge.runtime import open_session

BACKENDS = [
    "ort",
    pytest.param("tensorrt", marks=[pytest.mark.tensorrt, pytest.mark.skipif(
        importlib.util.find_spec("tensorrt") is None, reason="TensorRT is not installed on this machine")]),
]


@pytest.fixture(params=BACKENDS)
def session(request, digits_engines, digits_onnx, tmp_path_factory):
    if request.param == "ort":
        s = open_session(digits_engines["fp32"].path)
    else:
        from dlforge.build import engine_from_onnx

        engine = engine_from_onnx(digits_onnx.path, tmp_path_factory.mktemp("trt") / "e", backend="tensorrt")
        s = open_session(engine.path)
    yield s
    s.close()


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_specs_come_from_the_card(session):
    assert [t.name for t in session.inputs] == ["input"] and session.inputs[0].shape == ("batch", 1, 8, 8)
    assert session.outputs[0].name == "logits" and session.model.labels == tuple("0123456789")


def test_outputs_match_the_card_accuracy(session, digits, digits_engines):
    logits = session.predict(digits.x_test)
    acc = float((logits.argmax(1) == digits.y_test).mean())
    assert acc == pytest.approx(digits_engines["fp32"].card.sections["evaluation"]["accuracy"], abs=1e-9)


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_dynamic_batch(session, digits, batch):
    out = session.run({"input": digits.x_test[:batch]})
    assert out["logits"].shape == (batch, 10) and np.isfinite(out["logits"]).all()


@pytest.mark.parametrize("feeds, message", [
    ({"images": np.zeros((1, 1, 8, 8), np.float32)}, r"missing \['input'\]; unexpected \['images'\]"),
    ({"input": np.zeros((1, 1, 8, 8), np.float64)}, r"dtype float64, expected float32 .*x.astype\(np.float32\)"),
    ({"input": np.zeros((1, 8, 8), np.float32)}, r"rank 3\), expected rank 4"),
    ({"input": np.zeros((1, 1, 28, 28), np.float32)}, r"dimension 2 must be 8"),
    ({"input": [[0.0]]}, "must be a numpy array"),
])
def test_bad_feeds_say_what_was_expected(session, feeds, message):
    with pytest.raises(InputError, match=message):
        session.run(feeds)


def test_threads_get_the_same_answers(session, digits):
    expected = [session.predict(digits.x_test[i::4]) for i in range(4)]
    got = [None] * 4

    def work(i):
        for _ in range(20):
            got[i] = session.predict(digits.x_test[i::4])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(e, g)
