import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from dlforge.data import load_dataset
from dlforge.errors import InputError
from dlforge.runtime import open_session
from tests.helpers import shared_path


def test_third_party_onnx_without_card_scores_its_known_accuracy():
    path = shared_path("onnx-models", "mnist-12.onnx")
    ds = load_dataset("mnist", shared_path("mnist"))
    with open_session(path) as session:
        assert session.model is None and session.inputs[0].shape == (1, 1, 28, 28)
        preds = np.array([session.predict(ds.x_test[i:i + 1]).argmax() for i in range(len(ds.y_test))])
    assert float((preds == ds.y_test).mean()) == pytest.approx(0.989, abs=0.001)


def test_runtime_imports_no_torch_click_or_onnx(digits_engines):
    code = (
        "import sys, numpy as np\n"
        "from dlforge.runtime import open_session\n"
        f"s = open_session({str(digits_engines['int8'].path)!r})\n"
        "s.predict(np.zeros((1, 1, 8, 8), np.float32))\n"
        "print(' '.join(sorted({'torch', 'click', 'onnx', 'sklearn', 'tqdm'} & set(sys.modules))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_external_data_outside_the_model_directory_is_refused(tmp_path):
    (tmp_path / "secret.bin").write_bytes(np.ones((4, 4), np.float32).tobytes())
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "W")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../secret.bin"), ("offset", "0"), ("length", "64")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])
    (tmp_path / "model").mkdir()
    path = tmp_path / "model" / "evil.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    with pytest.raises(InputError, match="points outside the model.s directory"):
        open_session(path)


@pytest.mark.parametrize("content, message", [(b"", "is empty"), (b"\x08garbage" * 10, "not a readable ONNX model|could not be loaded")])
def test_corrupt_onnx(tmp_path, content, message):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        open_session(path)


def test_unavailable_provider_lists_available_ones(digits_engines):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(InputError, match=r"CUDAExecutionProvider is not available here \(available: .*CPUExecutionProvider"):
        open_session(digits_engines["fp32"].path, device="cuda")


def test_unknown_backend(digits_engines):
    with pytest.raises(InputError, match="unknown backend 'tvm'"):
        open_session(digits_engines["fp32"].path, backend="tvm")


