"""Adaptive attacks on detectors (dlforge.adversarial.adaptive): they use the detector's score, they evade at least as
often as the attack that ignores it on the same budget, and a detector without a differentiable score gets no
figure, only the reason."""

import numpy as np
import pytest

from dlforge.adversarial.adaptive import adaptive_attack, auroc, judge
from dlforge.adversarial.detectors import DETECTORS, Detector
from dlforge.errors import InputError
from tests.helpers import assert_refused, dlforge


def test_auroc_is_the_mann_whitney_statistic():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    neg, pos = rng.normal(size=300), rng.normal(0.7, size=200)
    pos[:20] = neg[:20]  # ties across the two sides count half
    expected = roc_auc_score(np.r_[np.zeros(300), np.ones(200)], np.r_[neg, pos])
    assert auroc(neg, pos) == pytest.approx(expected, abs=1e-12)
    assert auroc(neg, np.empty(0)) is None


@pytest.fixture(scope="module")
def squeezing_audit(digits_engines):
    from dlforge.adversarial.audit import run_audit

    return run_audit([digits_engines["fp32"].path, digits_engines["int8"].path], attacks=("pgd",), eps=(0.0, 0.3),
                     samples=64, pgd_steps=10, detectors=("feature-squeezing",), adaptive=True, progress=False)


def test_adaptive_attacks_evade_at_least_as_often_as_pgd_on_the_same_budget(squeezing_audit):
    rows = squeezing_audit.adaptive
    assert {r["engine"] for r in rows} == {"fp32", "int8"} and {r["eps"] for r in rows} == {0.3}  # eps 0: no attack
    for engine in ("fp32", "int8"):
        by = {r["attack"]: r for r in rows if r["engine"] == engine}
        assert set(by) == {"pgd", "pgd+detector", "orthogonal-pgd", "any"}
        assert by["pgd"]["route"] == "white-box (engine)" and by["pgd"]["steps"] == 10
        # the per-point best evades wherever any of the three does, so at least as often as each
        assert by["any"]["evaded"] >= max(by[k]["evaded"] for k in ("pgd", "pgd+detector", "orthogonal-pgd")), by
        for r in by.values():
            assert r["linf"] <= 0.3 + 1e-6 and 0 <= r["evaded"] <= r["misclassified"] <= 1
            assert r["false_positive_rate"] is not None and r["false_positive_rate"] <= 0.2
    from dlforge.adversarial.report import table

    assert "adaptive attacks on each detector" in table(squeezing_audit)


def test_the_adaptive_attack_follows_the_detectors_gradient(digits_engines, digits_lenet, digits):
    """Against a detector that flags inputs darker than a bar, the attack that ignores it is mostly flagged; the
    adaptive one evades it (it can only do so by following the detector's gradient: brighter inputs)."""
    from dlforge.adversarial.attacks import make_attack
    from dlforge.runtime import open_deployed
    from dlforge.train.checkpoint import attack_model

    engine = open_deployed(digits_engines["fp32"].path)
    model = attack_model(digits_lenet, "cpu")

    class Darkness(Detector):
        """Flags dark inputs (a test detector with a known gradient)."""

        def score(self, predict, x):
            return -x.reshape(len(x), -1).mean(1)

        def torch_score(self, forward, x):
            return -x.reshape(len(x), -1).mean(1)

    detector = Darkness(fpr=0.05)
    x, y = digits.x_test[:32].astype(np.float32), digits.y_test[:32]
    # flags every input not at least 0.05 brighter on average than these clean ones: evading it takes brightening
    detector.threshold = -(float(x.mean()) + 0.05)
    plain = model.attack(make_attack("pgd", steps=10, seed=0), x, y, eps=0.2, value_range=(0.0, 1.0), batch_size=64)
    clean_ok = engine.predict(x).argmax(1) == y
    scores = detector.score(engine.predict, x)
    plain_outcome = judge(detector, engine.predict, x, plain, y, clean_ok, scores)
    assert plain_outcome["tpr"] > 0.5, plain_outcome
    for kind in ("pgd+detector", "orthogonal-pgd"):
        adaptive = adaptive_attack(kind, model, detector, x, y, eps=0.2, value_range=(0.0, 1.0), steps=10,
                                   spread=0.01, seed=0)
        assert np.abs(adaptive - x).max() <= 0.2 + 1e-6
        outcome = judge(detector, engine.predict, x, adaptive, y, clean_ok, scores)
        assert outcome["evaded"] > plain_outcome["evaded"] + 0.3, (kind, plain_outcome, outcome)
    engine.close()


def test_differentiable_scores_agree_with_the_detectors_own(digits_lenet, digits):
    """What the adaptive attack differentiates is the detector's score: feature squeezing's exactly (on the fp32
    source), STRIP's as a fresh random sample of the same blends (close on average)."""
    import torch

    from dlforge.adversarial.detectors import make_detector
    from dlforge.train.checkpoint import attack_model

    model = attack_model(digits_lenet, "cpu")
    x = digits.x_test[:64].astype(np.float32)
    squeezing = make_detector("feature-squeezing")
    with torch.no_grad():
        ours = squeezing.torch_score(model.model, torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, squeezing.score(model.predict, x), atol=1e-4)
    strip = make_detector("strip:copies=100")
    strip.fit(model.predict, digits.x_val[:200].astype(np.float32))
    with torch.no_grad():
        sampled = strip.torch_score(model.model, torch.from_numpy(x), copies=100).numpy()
    exact = strip.score(model.predict, x)
    assert abs(sampled.mean() - exact.mean()) < 0.1 * exact.std() + 0.02 and np.corrcoef(sampled, exact)[0, 1] > 0.8


def test_a_detector_without_a_differentiable_score_gets_no_adaptive_figure(digits_engines):
    from dlforge.adversarial.audit import run_audit

    class Confidence(Detector):
        """Flags inputs whose top logit is low (no differentiable score given)."""

        def score(self, predict, x):
            return -predict(x).max(1)

    DETECTORS.register("low-confidence")(Confidence)
    try:
        report = run_audit([digits_engines["fp32"].path], attacks=("fgsm",), eps=(0.3,), samples=32, pgd_steps=3,
                           detectors=("low-confidence",), adaptive=True, progress=False)
    finally:
        DETECTORS.unregister("low-confidence")
    skipped = [r for r in report.adaptive if "skipped" in r]
    assert skipped and "offers no differentiable score" in skipped[0]["skipped"]
    assert all(r["attack"] == "pgd" for r in report.adaptive if "skipped" not in r)  # only the non-adaptive baseline


def test_adaptive_needs_detectors(digits_engines, tmp_path):
    out = tmp_path / "audit"
    assert_refused(dlforge("audit", digits_engines["fp32"].path, "--adaptive", "-o", out),
                   "--adaptive attacks the detectors of --detectors", nothing_under=tmp_path)
    with pytest.raises(InputError, match="--adaptive attacks the detectors"):
        from dlforge.adversarial.audit import AuditOptions

        AuditOptions.build(None, adaptive=True)


def test_too_few_held_out_images_are_refused_before_any_attack_runs(digits_engines, monkeypatch):
    from dlforge.adversarial import audit

    ran = []
    monkeypatch.setattr(audit, "_run_attack", lambda *a, **k: ran.append(a))
    with pytest.raises(InputError, match="detectors need >= 100 held-out clean test images"):
        audit.run_audit([digits_engines["fp32"].path], attacks=("pgd",), eps=(0.1,), samples=300,
                        detectors=("feature-squeezing",), progress=False)
    assert not ran  # refused in preparation, not after the attacks


def test_tramer_bound_flags_a_claim_above_the_best_robust_accuracy_at_half_eps():
    from dlforge.adversarial.checks import tramer_bounds, tramer_check

    rows = [{"norm": "linf", "eps": 0.1, "target": "a", "robust_accuracy": 0.6, "clean_accuracy": 1.0},
            {"norm": "linf", "eps": 0.1, "target": "a", "robust_accuracy": 0.4, "clean_accuracy": 1.0}]
    adaptive = [{"detector": "d", "engine": "a", "eps": 0.2, "attack": "pgd", "evaded": 0.1},
                {"detector": "d", "engine": "a", "eps": 0.2, "attack": "any", "evaded": 0.3}]
    bounds = tramer_bounds(adaptive, rows, {"a": 1.0})
    # the strongest attack's figure at eps/2 is the engine's robust accuracy there: 0.4
    assert bounds[0]["best_measured_half"] == 0.4 and bounds[0]["claimed"] == pytest.approx(0.9)
    assert tramer_check(bounds)["status"] == "fail"  # 0.7 under the adaptive attack implies better than 0.4
    adaptive[1]["evaded"] = 0.7
    assert tramer_check(tramer_bounds(adaptive, rows, {"a": 1.0}))["status"] == "pass"
    # a point the detector flags clean is not robust: the FPR comes off the claim
    adaptive[1]["evaded"], adaptive[1]["false_positive_rate"] = 0.5, 0.05
    assert tramer_bounds(adaptive, rows, {"a": 1.0})[0]["claimed_adaptive"] == pytest.approx(0.45)
    no_half = tramer_check(tramer_bounds(adaptive, rows[:0], {"a": 1.0}))
    assert no_half["status"] == "n/a" and "0.1" in no_half["detail"]
    assert tramer_check([])["status"] == "n/a"
