"""``dlforge import model.onnx``: third-party ONNX as an artifact, its labels, normalization and preprocessing."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from dlforge.data import load_dataset
from dlforge.data.labels import read_labels
from tests.helpers import dlforge, shared_path

IMAGENET_NORMALIZE = "0.485,0.456,0.406/0.229,0.224,0.225"


def _tiny_classifier(path, classes=4, batch="N"):
    """A 3x4x4 -> ``classes`` linear classifier: Flatten, Gemm."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(classes, 48)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(size=classes).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["img"], ["f"]), helper.make_node("Gemm", ["f", "w", "b"], ["scores"], transB=1)],
        "tiny", [helper.make_tensor_value_info("img", TensorProto.FLOAT, [batch, 3, 4, 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, classes])], [w, b])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_normalization_goes_in_front_of_the_graph_which_then_takes_pixels(tmp_path):
    source = _tiny_classifier(tmp_path / "tiny.onnx")
    result = dlforge("import", source, "--labels", "a,b,c,d", "--normalize", "0.4,0.5,0.6/0.2,0.25,0.3",
                     "-o", tmp_path / "onnx")
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "onnx" / "card.json").read_text())
    assert card["kind"] == "onnx" and card["model"]["labels"] == ["a", "b", "c", "d"]
    assert card["normalization"] == {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]}
    assert card["source_file"]["sha256"] and card["verification"]["passed"]
    x = np.random.default_rng(1).uniform(0, 1, (5, 3, 4, 4)).astype(np.float32)
    mean = np.array([0.4, 0.5, 0.6], np.float32).reshape(1, 3, 1, 1)
    std = np.array([0.2, 0.25, 0.3], np.float32).reshape(1, 3, 1, 1)
    original = ort.InferenceSession(str(source)).run(None, {"img": (x - mean) / std})[0]
    imported = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"))
    assert imported.get_inputs()[0].name == "img"  # the input keeps its name
    np.testing.assert_allclose(imported.run(None, {"img": x})[0], original, rtol=1e-5, atol=1e-5)
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "onnx" / "model.onnx")).metadata_props}
    assert json.loads(meta["dlforge.labels"]) == ["a", "b", "c", "d"]
    assert (tmp_path / "tiny.onnx").read_bytes() == source.read_bytes()  # the user's file is untouched


@pytest.mark.parametrize("args, message", [
    (["--labels", "a,b,c"], "the labels name 3 classes, but"),
    (["--labels", "a,b,c,d", "--normalize", "0.5,0.5/0.2,0.2"], "gives 2 means"),
    (["--labels", "a,b,c,d", "--resize", "8", "--crop", "3,3"], "--crop [3, 3] does not give the model's input size"),
    (["--labels", "a,b,c,d", "--resize", "2"], "--resize 2 is smaller than the crop"),
    (["--labels", "a,b,c,d", "--weights", "w.pt"], "--weights and --kwargs are for a zoo"),
])
def test_options_that_do_not_fit_the_model_are_refused_before_anything_is_written(tmp_path, args, message):
    source = _tiny_classifier(tmp_path / "tiny.onnx")
    result = dlforge("import", source, *args, "-o", tmp_path / "onnx")
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "onnx").exists()


def test_bad_files_are_one_line_errors(tmp_path):
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07not a model")
    for name, message in (("empty.onnx", "is empty"), ("junk.onnx", "is not a valid ONNX model"),
                          ("missing.onnx", "does not exist")):
        result = dlforge("import", tmp_path / name, "--num-classes", "4", "-o", tmp_path / "out")
        assert result.exit_code == 2 and message in result.output, result.output
        assert not (tmp_path / "out").exists()


def test_labels_files_plain_and_synset(tmp_path):
    (tmp_path / "plain.txt").write_text("cat\ndog\n\n")
    assert read_labels(tmp_path / "plain.txt") == ("cat", "dog")
    synset = read_labels(shared_path("imagenet-labels", "synset.txt"))
    assert len(synset) == 1000 and synset[0].startswith("n01440764 tench")
    (tmp_path / "twice.txt").write_text("cat\ndog\ncat\n")
    with pytest.raises(Exception, match="names 'cat' twice"):
        read_labels(tmp_path / "twice.txt")
    (tmp_path / "gap.txt").write_text("cat\n\ndog\n")
    with pytest.raises(Exception, match="blank line at line 2"):
        read_labels(tmp_path / "gap.txt")


def test_class_folders_named_by_wnid_map_into_the_model_label_space(tmp_path):
    photos = shared_path("imagenet-samples")
    labels = read_labels(shared_path("imagenet-labels", "synset.txt"))
    folder = tmp_path / "subset"
    for f in sorted(photos.glob("*.jpg"))[:4]:
        index = int(f.stem.rsplit("_", 1)[1])
        (folder / labels[index].split()[0]).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, folder / labels[index].split()[0] / f.name)
    ds = load_dataset(str(folder), labels=labels, input_shape=(3, 224, 224),
                      preprocess={"resize": 256, "crop": [224, 224]})
    flat = load_dataset(str(photos), labels=labels, input_shape=(3, 224, 224),
                        preprocess={"resize": 256, "crop": [224, 224]})
    assert ds.evaluation_only and len(ds.labels) == 1000 and len(ds.y_test) == 4
    assert sorted(ds.y_test.tolist()) == sorted(flat.y_test[:4].tolist())
    assert len(ds.x_train) == 0 and len(flat.y_test) == 20


def test_imagenet_int8_mobilenet_imports_with_its_preprocessing_and_classifies_17_of_20(tmp_path):
    result = dlforge("import", shared_path("onnx-models", "mobilenetv2-12-int8.onnx"), "--labels-file",
                     shared_path("imagenet-labels", "synset.txt"), "--normalize", IMAGENET_NORMALIZE, "--resize", "256",
                     "--data", shared_path("imagenet-samples"), "-o", tmp_path / "onnx")
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "onnx" / "card.json").read_text())
    assert card["metrics"] == {"test_accuracy": 0.85, "test_samples": 20}  # 17/20, as onnxruntime gives directly
    assert card["graph"]["quantized"] and card["model"]["image_preprocessing"]["crop"] == [224, 224]
    result = dlforge("build", tmp_path / "onnx", "-o", tmp_path / "engine")
    assert result.exit_code == 0 and "ort int8: accuracy 0.8500" in result.output, result.output
    result = dlforge("build", tmp_path / "onnx", "-o", tmp_path / "requantized", "--precision", "int8")
    assert result.exit_code == 2 and "already quantized" in result.output


def test_a_symbolic_output_width_is_checked_against_the_labels_by_running_the_graph(tmp_path):
    source = _tiny_classifier(tmp_path / "tiny.onnx", classes=3)
    proto = onnx.load(str(source))
    dims = proto.graph.output[0].type.tensor_type.shape.dim
    dims[1].ClearField("dim_value")
    dims[1].dim_param = "K"  # the width is not in the graph's signature
    onnx.save(proto, str(source))
    result = dlforge("import", source, "--num-classes", "10", "-o", tmp_path / "onnx")
    assert result.exit_code == 2 and "outputs [3] scores per input, but the labels name 10" in result.output
    assert not (tmp_path / "onnx").exists()
    ok = dlforge("import", source, "--labels", "a,b,c", "-o", tmp_path / "ok")
    assert ok.exit_code == 0, ok.output
    card = json.loads((tmp_path / "ok" / "card.json").read_text())
    assert card["verification"]["inputs"] == "uniform noise in the value range"


def test_normalize_on_an_opset_too_old_for_broadcasting_names_the_reason(tmp_path):
    source = _tiny_classifier(tmp_path / "tiny.onnx")
    proto = onnx.load(str(source))
    proto.opset_import[0].version = 6
    onnx.save(proto, str(source))
    result = dlforge("import", source, "--labels", "a,b,c,d", "--normalize", "0.5/0.2", "-o", tmp_path / "onnx")
    assert result.exit_code == 2 and "opset is 6" in result.output and not (tmp_path / "onnx").exists()
