import numpy as np
import pytest
from click.testing import CliRunner

from dlforge.adversarial.poisoning.attacks import armed_test_set, poison
from dlforge.adversarial.poisoning.defences import detection_rates, spectral_signatures, strip_detection
from dlforge.adversarial.poisoning.run import run_poison
from dlforge.cli import cli
from dlforge.data import load_dataset
from dlforge.errors import InputError
from tests.helpers import shared_path


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_badnets_single_target(digits):
    poisoned, p = poison(digits, attack="badnets", rate=0.1, target=3, seed=1)
    assert len(p.poisoned) == round(0.1 * len(digits.y_train))
    assert (digits.y_train[p.poisoned] != 3).all() and (poisoned.y_train[p.poisoned] == 3).all()
    patch = poisoned.x_train[p.poisoned][..., 8 - 1 - p.trigger_size:8 - 1, 8 - 1 - p.trigger_size:8 - 1]
    assert (patch == 1.0).all()
    untouched = np.setdiff1d(np.arange(len(digits.y_train)), p.poisoned)
    np.testing.assert_array_equal(poisoned.x_train[untouched], digits.x_train[untouched])
    x_armed, wanted = armed_test_set(digits, p)
    assert len(x_armed) == int((digits.y_test != 3).sum()) and (wanted == 3).all()


def test_all_to_all_and_label_flip(digits):
    poisoned, p = poison(digits, attack="badnets", mode="all-to-all", rate=0.2)
    np.testing.assert_array_equal(poisoned.y_train[p.poisoned], (digits.y_train[p.poisoned] + 1) % 10)
    flipped, q = poison(digits, attack="label-flip", rate=0.2, target=5)
    np.testing.assert_array_equal(flipped.x_train, digits.x_train)  # pixels untouched
    assert (flipped.y_train[q.poisoned] == 5).all()


@pytest.mark.parametrize("kwargs, message", [
    (dict(rate=0.0), r"--rate must be within \(0, 1\)"),
    (dict(rate=1.5), r"--rate must be within \(0, 1\)"),
    (dict(target=10), "--target-class 10 is out of range"),
    (dict(trigger_size=7), "--trigger-size 7 does not fit 8x8 images"),
    (dict(attack="label-flip", mode="all-to-all"), "all-to-all applies to badnets"),
])
def test_bad_poisoning_input(digits, kwargs, message):
    with pytest.raises(InputError, match=message):
        poison(digits, **{"attack": "badnets", **kwargs})


def test_cli_bad_rate_is_one_line_and_writes_nothing(tmp_path):
    result = CliRunner().invoke(cli, ["poison", "lenet", "--rate", "2", "-o", str(tmp_path / "run")])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("card.json"))


def test_spectral_signatures_find_a_shifted_minority():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 500)
    features = rng.normal(size=(2000, 32))
    poisoned = np.flatnonzero(y == 2)[:75]  # 15% of one class
    features[poisoned] += 8.0 * np.eye(32)[0]
    flagged, _ = spectral_signatures(features, y, len(poisoned))
    rates = detection_rates(flagged, poisoned)
    assert rates["true_positive_rate"] >= 0.95 and rates["false_positive_rate"] <= 0.03


def test_strip_threshold_holds_its_false_positive_rate():
    rng = np.random.default_rng(0)
    clean, armed = rng.normal(2.0, 0.3, 1000), rng.normal(0.5, 0.3, 1000)
    d = strip_detection(clean, armed, 0.05)
    assert d["false_positive_rate"] == pytest.approx(0.05, abs=0.002) and d["true_positive_rate"] > 0.99


def test_digits_backdoor_end_to_end(tmp_path):
    report = run_poison("lenet", tmp_path / "run", data="digits", rate=0.1, defences=("strip",))
    assert report["attack_success_rate"] >= 0.9
    assert abs(report["baseline_clean_accuracy"] - report["clean_accuracy"]) <= 0.03
    assert {e["precision"] for e in report["engines"]} == {"fp32", "int8"}
    assert all(e["attack_success_rate"] >= 0.9 for e in report["engines"])
    strip = [d for d in report["defences"] if d["name"] == "strip"]
    assert len(strip) == 2 and all(d["false_positive_rate"] <= 0.03 for d in strip)
    assert (tmp_path / "run" / "engine-ort-int8" / "card.json").is_file()


@pytest.mark.slow
def test_mnist_badnets_detected_and_removed(tmp_path):
    report = run_poison("lenet", tmp_path / "run", data="mnist", data_dir=shared_path("mnist"), rate=0.1,
                        defences=("activation-clustering", "spectral-signatures"))
    fp32 = next(e for e in report["engines"] if e["precision"] == "fp32")
    assert fp32["attack_success_rate"] >= 0.95
    assert report["baseline_clean_accuracy"] - fp32["clean_accuracy"] <= 0.01
    best = max(report["defences"], key=lambda d: d["true_positive_rate"] - d["false_positive_rate"])
    assert best["true_positive_rate"] >= 0.90 and best["false_positive_rate"] <= 0.10
    assert best["asr_after"] < 0.05


@pytest.mark.slow
def test_fgsm_adversarial_training_and_feature_squeezing_on_mnist(tmp_path, mnist_onnx):
    from dlforge.adversarial.audit import run_audit
    from dlforge.build import engine_from_onnx
    from dlforge.export import onnx_from_checkpoint
    from dlforge.train import checkpoint_from_training

    robust = checkpoint_from_training("lenet", tmp_path / "ckpt", data="mnist", data_dir=shared_path("mnist"),
                                      epochs=3, adv_train="fgsm", adv_eps=0.3, progress=False)
    assert robust.card.sections["metrics"]["test_accuracy"] >= 0.98
    engine = engine_from_onnx(onnx_from_checkpoint(robust.path, tmp_path / "onnx").path, tmp_path / "fp32")
    report = run_audit([engine.path], attacks=("fgsm",), eps=(0.25,), samples=1000, progress=False)
    row = next(r for r in report["rows"] if r["route"] == "transfer")
    assert 1 - row["robust_accuracy"] <= 0.30  # standard training: >= 0.80 (test_audit)

    standard = engine_from_onnx(mnist_onnx.path, tmp_path / "standard")
    report = run_audit([standard.path], attacks=("fgsm",), eps=(0.3,), samples=1000, progress=False,
                       detectors=("feature-squeezing",))
    d = report["detections"][0]
    assert d["detection_rate"] >= 0.90 and d["false_positive_rate"] <= 0.06
