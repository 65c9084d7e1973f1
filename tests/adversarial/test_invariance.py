"""Batch-composition and rebuild invariance: an engine whose answer depends on its batch-mates fails the check."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from dlforge.adversarial.invariance import batch_invariance, invariance_check, rebuild_invariance
from dlforge.data import load_dataset
from dlforge.runtime import open_deployed


def _batch_dependent(path):
    """Logits = x W + mean over the batch of x V: a real graph (ReduceMean over axis 0) whose answer for one
    input moves with the others in its batch, as a kernel reducing across the batch would."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(64, 10)).astype(np.float32), "w")
    v = numpy_helper.from_array(rng.normal(size=(64, 10)).astype(np.float32), "v")
    axes = numpy_helper.from_array(np.array([0], np.int64), "axes")
    nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["a"]),
             helper.make_node("ReduceMean", ["f", "axes"], ["m"], keepdims=1),
             helper.make_node("MatMul", ["m", "v"], ["b"]), helper.make_node("Add", ["a", "b"], ["logits"])]
    graph = helper.make_graph(nodes, "leaky", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], [w, v, axes])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def test_a_batch_dependent_engine_fails_and_a_sound_one_passes(digits_engines, tmp_path):
    ds = load_dataset("digits")
    x, others = ds.x_test[:16], ds.x_test[100:300]
    with open_deployed(_batch_dependent(tmp_path / "leaky.onnx")) as leaky:
        bad = batch_invariance(leaky, x, others, batch=32)
    assert not bad["passed"] and not bad["mixed"]["within"] and bad["mixed"]["max_abs_diff"] > 1e-2
    result = invariance_check([bad])
    assert result["status"] == "fail" and "mixed with other inputs" in result["detail"]
    sound = []
    for precision in ("fp32", "int8"):
        with open_deployed(digits_engines[precision].path) as engine:
            sound.append(batch_invariance(engine, x, others, batch=32))
            sound.append(rebuild_invariance(engine, x, batch=32, workdir=tmp_path / f"rebuilt-{precision}"))
    assert all(r["passed"] for r in sound), sound
    assert invariance_check(sound)["status"] == "pass"
    assert invariance_check([{"engine": "e", "passed": None, "reason": "no parent"}])["status"] == "n/a"
