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


def test_engine_comparison_counts_robustness_as_the_audit_does(digits_engines):
    """'robust acc diff' between engines: a point is robust only if right before and after (it was plain accuracy
    on the adversarial inputs, which counted points an engine got wrong on the clean input)."""
    from types import SimpleNamespace

    from dlforge.adversarial.evidence import comparisons
    from dlforge.adversarial.records import AdversarialKey

    ds = load_dataset("digits")
    x, y = ds.x_test[:40], ds.y_test[:40]
    with open_deployed(digits_engines["fp32"].path) as a, open_deployed(digits_engines["int8"].path) as b:
        clean_b = b.predict(x).argmax(1)
        clean_b[:20] = (y[:20] + 1) % 10  # as if b had been wrong on these clean inputs
        run = SimpleNamespace(engines=[a, b], y=y, options=SimpleNamespace(batch_size=64),
                              clean={a.label: a.predict(x).argmax(1), b.label: clean_b}, adv={AdversarialKey("pgd", 0.1): x})
        row = next(r for r in comparisons(run) if r["attack"] == "pgd")
        pa, pb = a.predict(x).argmax(1), b.predict(x).argmax(1)
        expected = ((clean_b == y) & (pb == y)).mean() - ((run.clean[a.label] == y) & (pa == y)).mean()
        assert row["robust_accuracy_diff"] == expected and expected < -0.3


def test_autoattack_queries_per_sample_average_only_the_points_square_attacked(digits_engines):
    from dlforge.adversarial.audit import run_audit

    report = run_audit([digits_engines["fp32"].path], attacks=("autoattack:iterations=5:square_queries=200",),
                       eps=(0.05,), samples=40, progress=False)
    rows = [r for r in report.rows if "queries_per_sample" in r]
    assert rows, "Square attacked some point in at least one route"
    for r in rows:
        assert 0 < r["queried_samples"] <= 40 and r["queries_per_sample"] >= 1  # no zeros averaged in
        assert r["queries_per_sample"] <= 200
