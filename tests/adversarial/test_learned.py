"""Learned detectors on the engine's own features (dlforge.adversarial.features, dlforge.adversarial.learned): they read
what the engine computes, fp32 and INT8; their differentiable scores agree with their own; their false-positive rate
is measured on images disjoint from what they were fitted and thresholded on; the LID detector says which attack it
was tuned on and is scored on the others."""

import numpy as np
import onnx
import pytest
import torch

from dlforge.adversarial.features import EngineFeatures, feature_values
from dlforge.runtime import open_deployed


def test_feature_values_name_the_input_of_the_last_linear_layer(digits_engines):
    for precision in ("fp32", "int8"):
        proto = onnx.load(str(open_deployed(digits_engines[precision].path).session.path))
        (name,) = feature_values(proto)
        readers = [n for n in proto.graph.node if name in n.input]
        producer = next(n for n in proto.graph.node if name in n.output)
        assert any(n.op_type in ("Gemm", "MatMul", "FusedMatMul") for n in readers), readers
        # INT8: the dequantized activations the engine's linear layer reads, not their integer levels
        assert producer.op_type == "DequantizeLinear" if precision == "int8" else producer.op_type != "QuantizeLinear"
        layers = feature_values(proto, "layers")
        assert layers[-1] == proto.graph.output[0].name and name in layers and len(layers) >= 3


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_engine_features_match_the_engine_and_its_converted_graph(digits_engines, digits, precision):
    from dlforge.onnx_torch import torch_module_from_onnx

    engine = open_deployed(digits_engines[precision].path)
    x = digits.x_test[:128].astype(np.float32)
    feats = EngineFeatures(engine, "layers", check=x)
    assert feats.agreement["top1_agreement"] >= 0.995
    ours = feats(x)
    module = torch_module_from_onnx(engine.session.path)
    with torch.no_grad():
        theirs = [v.reshape(len(v), -1).numpy() for v in module.values(torch.from_numpy(x), feats.names)]
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        scale = np.abs(a).max() + 1e-6
        if precision == "fp32":
            assert np.abs(a - b).max() <= 1e-4 * scale
        else:  # one quantization level at most, on a small share of values
            assert np.mean(np.abs(a - b) > 1e-3 * scale) < 0.02


@pytest.fixture(scope="module")
def learned_audit(digits_engines):
    from dlforge.adversarial.audit import run_audit

    return run_audit([digits_engines["fp32"].path, digits_engines["int8"].path], attacks=("fgsm", "pgd", "genetic:queries=300"),
                     eps=(0.3,), samples=150, pgd_steps=10, detectors=("mahalanobis:fpr=0.05", "lid:train=300"),
                     adaptive=True, progress=False)


def test_learned_detectors_false_positive_rate_on_disjoint_images(learned_audit, digits):
    from dlforge.adversarial.learned import _training

    # fitted on training images, thresholded on held-out test images, judged on the audited ones: no image shared
    run = type("Run", (), {"dataset": digits})()
    fitted, _ = _training(run, 5000, 0)
    audited = digits.x_test[:learned_audit.samples]
    held_out = digits.x_test[learned_audit.samples:]
    key = (lambda a: {img.tobytes() for img in a.astype(np.float32)})  # noqa: E731
    assert not key(fitted) & key(held_out) and not key(fitted) & key(audited) and not key(held_out) & key(audited)
    rows = learned_audit.detections
    assert {r["detector"] for r in rows} == {"mahalanobis", "lid"}
    for r in rows:
        # threshold at 5% on held-out test images, fitted on training images, FPR measured on the audited ones
        assert r["false_positive_rate"] is not None and r["false_positive_rate"] <= 0.12, r


def test_lid_says_which_attack_it_was_tuned_on(learned_audit):
    lid = [r for r in learned_audit.detections if r["detector"] == "lid"]
    assert {r["tuned_on"] for r in lid} == {"fgsm"}
    assert {r["attack"] for r in lid if r["seen"]} == {"fgsm"} and any(r["attack"] == "pgd" and not r["seen"]
                                                                       for r in lid)
    from dlforge.adversarial.report import table

    assert "(tuned on it)" in table(learned_audit)


def test_learned_detectors_lose_to_their_adaptive_attack(learned_audit):
    for detector in ("mahalanobis", "lid"):
        for engine in ("fp32", "int8"):
            by = {r["attack"]: r for r in learned_audit.adaptive
                  if r["detector"] == detector and r["engine"] == engine and "skipped" not in r}
            assert set(by) == {"pgd", "genetic", "pgd+detector", "orthogonal-pgd", "any"}, (detector, engine)
            assert by["genetic"]["route"] == "query (scores)" and by["genetic"]["queries_median"] <= 300
            assert by["any"]["evaded"] >= by["pgd"]["evaded"]
            # on digits both flag over a third of PGD's examples (so there is something to remove) ...
            assert by["pgd"]["tpr"] > 0.2, by
            # ... and the attack that knows them removes most of it
            assert by["any"]["tpr"] < 0.5 * by["pgd"]["tpr"], by


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("spec", ["mahalanobis", "lid:train=200"])
def test_differentiable_scores_agree_with_the_engine_scores(digits_engines, digits, spec, precision):
    from types import SimpleNamespace

    from dlforge.adversarial.detectors import make_detector
    from dlforge.adversarial.engine_graph import engine_graph

    engine = open_deployed(digits_engines[precision].path)
    x = digits.x_test[:200].astype(np.float32)
    graph = engine_graph(engine, x, noise=0.1, value_range=(0.0, 1.0))
    run = SimpleNamespace(dataset=digits, options=SimpleNamespace(seed=0, eps=(0.3,), pgd_steps=5, batch_size=128),
                          engines=[engine], graphs=[graph], model=None, value_range=(0.0, 1.0))
    detector = make_detector(spec)
    detector.prepare(engine, run, digits.x_test[200:400].astype(np.float32))
    predict = engine.predict
    numpy_scores = detector.score(predict, x)
    with torch.no_grad():
        torch_scores = detector.torch_score(graph.model.model, torch.from_numpy(x)).numpy()
    if precision == "fp32":
        assert np.allclose(numpy_scores, torch_scores, rtol=1e-3, atol=1e-3 * np.abs(numpy_scores).max())
    else:  # INT8: the converted graph's rare one-level rounding differences move a few scores a little
        close = np.isclose(numpy_scores, torch_scores, rtol=1e-2, atol=1e-2 * np.abs(numpy_scores).max())
        assert close.mean() >= 0.95 and np.corrcoef(numpy_scores, torch_scores)[0, 1] > 0.99
    x_grad = torch.from_numpy(x[:8]).requires_grad_(True)
    detector.torch_score(graph.model.model, x_grad).sum().backward()
    assert torch.isfinite(x_grad.grad).all() and x_grad.grad.abs().sum() > 0


def test_arms_race_retrains_on_the_adaptive_examples_and_attacks_again(digits_engines):
    from dlforge.adversarial.audit import run_audit
    from dlforge.adversarial.report import table

    report = run_audit([digits_engines["fp32"].path], attacks=("pgd",), eps=(0.3,), samples=100, pgd_steps=10,
                       detectors=("lid:train=200",), adaptive=True, arms_race=3, progress=False)
    rows = report.arms_race
    assert [r["round"] for r in rows] == [0, 1, 2, 3]
    for r in rows[1:]:
        assert r["added"] > 0  # adaptive examples found on the training images each round ...
        assert r["tpr_added_after"] >= r["tpr_added_before"], r
        assert 0 <= r["evaded"] <= 1 and r["false_positive_rate"] <= 0.15
    # ... and learnt: after the first retraining the detector flags far more of them than the one they were crafted
    # against (later rounds learn less: a linear regression over a few LID values runs out of room)
    assert rows[1]["tpr_added_after"] >= rows[1]["tpr_added_before"] + 0.2, rows[1]
    assert "arms race" in table(report)


def test_arms_race_needs_adaptive_and_a_detector_that_learns(digits_engines, tmp_path):
    from tests.helpers import assert_refused, dlforge

    engine = digits_engines["fp32"].path
    assert_refused(dlforge("audit", engine, "--detectors", "lid", "--arms-race", "2", "-o", tmp_path / "a"),
                   "add --adaptive")
    assert_refused(dlforge("audit", engine, "--detectors", "feature-squeezing", "--adaptive", "--arms-race", "2",
                           "-o", tmp_path / "b"), "cannot be retrained")
