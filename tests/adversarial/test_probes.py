"""Probes: fooling images, out-of-distribution confidence and the substitute-model attack, through the audit.

The digits engines run every probe once (module fixture, about 20 s); MNIST checks the figures the
literature reports at a size that fits the suite (the full-size run is in the closing figures of
``dlforge audit --attacks fooling,fooling-evo,ood,substitute`` on the MNIST LeNet engines).
"""

import numpy as np
import pytest

from dlforge.adversarial.audit import run_audit
from dlforge.adversarial.probes import Resemblance, probabilities
from dlforge.data import load_dataset
from dlforge.errors import InputError

PROBES = ("fooling", "fooling-evo:queries=4000", "ood", "substitute:seeds=100")


@pytest.fixture(scope="module")
def digits_probes(digits_engines):
    engines = [digits_engines[p].path for p in ("fp32", "int8")]
    return run_audit(engines, attacks=PROBES, samples=150, progress=False)


def _rows(report, probe, **match):
    return [r for r in report.probes[probe]["rows"] if all(r.get(k) == v for k, v in match.items())]


def test_every_probe_reports_on_every_engine(digits_probes):
    assert set(digits_probes.probes) == {"fooling", "fooling-evo", "ood", "substitute"}
    assert digits_probes.rows == []  # probes only: no eps-ball rows, and the checks say why
    engines = [e["label"] for e in digits_probes.engines]
    for probe in ("fooling-evo", "substitute"):
        assert {r["target"] for r in digits_probes.probes[probe]["rows"]} == set(engines)
    routes = {(r["route"], r["target"]) for r in digits_probes.probes["fooling"]["rows"]}
    assert ("white-box", "source") in routes and sum(route == "white-box (engine)" for route, _ in routes) == 2
    full_range = next(c for c in digits_probes.checks if "full range" in c["name"])
    assert full_range["status"] == "n/a" and full_range["passed"] is None


def test_fooling_images_are_confident_and_unrecognizable(digits_probes):
    for probe in ("fooling", "fooling-evo"):
        for row in digits_probes.probes[probe]["rows"]:
            assert row["classes_fooled"] >= 9, (probe, row["route"], row["target"], row["per_class"])
            counted = [p for p in row["per_class"] if p["confidence"] >= row["confidence_bar"]]
            assert all(p["unrecognizable"] for p in counted)
    evo = digits_probes.probes["fooling-evo"]["rows"]
    assert all(r["queries"] <= 4000 for r in evo) and all(r["queries"] > 3000 for r in evo)
    gallery = digits_probes.probes["fooling"]["gallery"]
    assert len(gallery) == 10 and np.asarray(gallery[0]["image"]).shape == (1, 8, 8)


def _judge_cases(ds, known, amplitude):
    """Fractions judged unrecognizable: held-out real images, lightly perturbed ones, fresh noise, real images
    drawn at ``amplitude`` into fresh noise (what the searches could produce: legible), and the real and the
    drawn ones with inverted contrast (as legible)."""
    rng = np.random.default_rng(7)
    real = ds.x_test[-300:]
    light = np.clip(real + rng.uniform(-0.1, 0.1, real.shape), 0, 1)
    noise = rng.uniform(0, 1, real.shape)
    faint = np.clip(rng.uniform(0, 1, real.shape) + amplitude * (2 * real - 1), 0, 1)
    inverted = np.clip(rng.uniform(0, 1, real.shape) - amplitude * (2 * real - 1), 0, 1)
    return [float(known.unrecognizable(x).mean()) for x in (real, light, noise, faint, 1 - real, inverted)]


def test_unrecognizable_judge_can_say_no_on_digits():
    ds = load_dataset("digits")
    known = Resemblance(ds.x_train, ds.x_test[:-300])
    real, light, noise, faint, real_inverted, faint_inverted = _judge_cases(ds, known, amplitude=0.4)
    assert known.judgeable and real == 0 and light == 0 and real_inverted == 0
    assert noise >= 0.99  # the bar is noise's 99.9% quantile, measured on other noise
    assert faint <= 0.05 and faint_inverted <= 0.05  # drawn into noise: recognizable (8x8 leaves little to draw with)


def test_unrecognizable_judge_catches_a_digit_drawn_into_noise(mnist_dir):
    """The case that defeated the L2 yardstick (issue 24): within L-inf 0.3 of uniform noise, a digit's
    strokes drawn in stay farther from every training image than real test images are, yet a person
    reads them. The resemblance judge calls them recognizable; noise alone it does not."""
    ds = load_dataset("mnist", data_dir=mnist_dir)
    known = Resemblance(ds.x_train, ds.x_test[:1000])
    real, light, noise, faint, real_inverted, faint_inverted = _judge_cases(ds, known, amplitude=0.3)
    assert known.judgeable and real == 0 and light == 0 and noise >= 0.99 and real_inverted == 0
    assert faint == 0 and faint_inverted == 0, (faint, faint_inverted)


def test_legible_probe_output_is_caught(digits_lenet):
    """Gradient ascent without the probe's radius and confidence stop draws the class's shape into the
    noise (legible digits in the issue-14 gallery): the judge calls those images recognizable, where the
    L2 yardstick it replaced called all of them unrecognizable."""
    from dlforge.adversarial.probes.fooling import FoolingImages
    from dlforge.train.checkpoint import attack_model

    ds = load_dataset("digits")
    known = Resemblance(ds.x_train, ds.x_test)
    drawn = FoolingImages(radius=1.0, steps=300, confidence=1 - 1e-9, starts=2).ascend(
        attack_model(digits_lenet), 10, ds.x_test.shape[1:], (0.0, 1.0))
    assert known.unrecognizable(drawn).mean() <= 0.1  # measured 0.05
    # legible, not merely structured: each drawn image's best-matching training image is of the class it was
    # drawn for (a person, or a nearest-neighbour reader, names the class)
    from dlforge.adversarial.probes import _standardize

    nearest = np.abs(_standardize(drawn) @ _standardize(ds.x_train).T).argmax(1)
    matches = (ds.y_train[nearest] == np.arange(10).repeat(2)).mean()
    assert matches >= 0.7, matches


def test_judge_that_cannot_separate_data_from_noise_says_so():
    rng = np.random.default_rng(0)
    noise_data = rng.uniform(0, 1, (500, 1, 8, 8)).astype(np.float32)  # a "dataset" of noise
    known = Resemblance(noise_data[:400], noise_data[400:])
    assert not known.judgeable and not known.unrecognizable(noise_data[:10]).any()
    assert "no image is judged unrecognizable" in known.note()


def test_ood_confidence_is_lower_on_noise_than_on_test_images(digits_probes):
    section = digits_probes.probes["ood"]
    for target in ["source"] + [e["label"] for e in digits_probes.engines]:
        (test,) = _rows(digits_probes, "ood", target=target, inputs="test images")
        (noise,) = _rows(digits_probes, "ood", target=target, inputs="uniform noise")
        assert test["mean_confidence"] > noise["mean_confidence"] + 0.1, (test, noise)
    assert any("no other dataset" in n for n in section["notes"])  # digits has no default companion: said, not hidden


def test_substitute_counts_its_queries_and_transfers(digits_probes):
    for row in digits_probes.probes["substitute"]["rows"]:
        assert row["queries"] == 100 * 2 ** 5
        assert 0.5 < row["agreement"] <= 1
    pgd = _rows(digits_probes, "substitute", attack="pgd")
    assert all(r["misclassification"] > 1 - r["clean_accuracy"] + 0.3 for r in pgd), pgd
    for r in pgd:  # success counts only the points the engine got right: clean errors are not the attack's doing
        assert r["attack_success_rate"] >= 0.3


def test_probabilities_accept_logits_and_softmax_outputs():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    p = probabilities(logits)
    assert np.allclose(p.sum(1), 1) and p[0].argmax() == 0 and np.allclose(p[1], 1 / 3)
    assert np.allclose(probabilities(p), p)  # already a distribution: taken as is, not softmaxed again


def test_bad_probe_settings_fail_before_any_work(digits_engines):
    engine = digits_engines["fp32"].path
    with pytest.raises(InputError, match="seeds"):
        run_audit([engine], attacks=("substitute",), samples=10, progress=False)  # digits has 144 validation images
    with pytest.raises(InputError, match="no option 'budget'"):
        run_audit([engine], attacks=("fooling-evo:budget=10",), samples=10, progress=False)
    with pytest.raises(InputError, match="confidence"):
        run_audit([engine], attacks=("fooling:confidence=1.5",), samples=10, progress=False)
    with pytest.raises(InputError, match="arch=cnn needs images of at least 10x10"):
        run_audit([engine], attacks=("substitute:seeds=100:arch=cnn",), samples=10, progress=False)
    with pytest.raises(InputError, match="ood:data"):
        run_audit([engine], attacks=("ood:data=no-such-dataset",), samples=10, progress=False)


@pytest.mark.slow
def test_mnist_fooling_ood_and_substitute(mnist_engines, mnist_dir):
    """Nguyen et al.: >= 99% confidence on unrecognizable images for >= 9 of 10 classes, white-box and by
    queries alone; Fashion-MNIST found beside MNIST for the OOD check; Papernot et al.'s substitute
    attack on the fp32 engine (they report 84% misclassification against a remote model at eps 0.3)."""
    report = run_audit([mnist_engines["fp32"].path], attacks=("fooling", "fooling-evo", "ood", "substitute"),
                       samples=300, progress=False, engine_gradients="off")
    for probe in ("fooling", "fooling-evo"):
        for row in report.probes[probe]["rows"]:
            assert row["classes_fooled"] >= 9, (probe, row["route"], row["target"], row["per_class"])
    assert report.probes["fooling-evo"]["rows"][0]["queries"] <= 30_000
    fashion = _rows(report, "ood", target="fp32", inputs="fashion-mnist")
    assert fashion and fashion[0]["samples"] == 1000, report.probes["ood"]
    (pgd,) = _rows(report, "substitute", attack="pgd")
    assert pgd["queries"] == 150 * 2 ** 5 <= 10_000
    # measured 0.71 on 500 points of the closing figures; the bar leaves room for a retrained model
    assert pgd["misclassification"] >= 0.6, pgd


def test_patch_and_physical_run_on_every_model(digits_engines):
    """Small settings on the digits engines: the sections' shape and the properties that hold at any size."""
    engines = [digits_engines[p].path for p in ("fp32", "int8")]
    report = run_audit(engines, attacks=("patch:areas=0.1/0.3:steps=60", "physical:points=60:draws=3:eot_samples=2:steps=10",
                                         "physical:points=60:draws=3:eot_samples=2:steps=10:eps=0.3"),
                       samples=100, progress=False, engine_gradients="off")
    assert set(report.probes) == {"patch", "physical", "physical:points=60:draws=3:eot_samples=2:steps=10:eps=0.3"}
    patch = report.probes["patch"]["rows"]
    assert {(r["route"], round(r["area"], 2)) for r in patch} >= {("white-box", 0.14), ("transfer", 0.14)}
    big = [r for r in patch if r["route"] == "white-box" and r["area"] > 0.2]
    assert big and big[0]["success"] > big[0]["noise_patch"], patch  # the trained patch beats the occlusion control
    small, large = ({(r["route"], r["target"], r["attack"]): r for r in report.probes[key]["rows"]}
                    for key in ("physical", "physical:points=60:draws=3:eot_samples=2:steps=10:eps=0.3"))
    assert small.keys() == large.keys()
    for key, row in large.items():  # a larger ball fools at least as many points, with or without the chain
        assert row["clean_under_chain"] > 0.5
        assert row["adversarial"] >= small[key]["adversarial"] and row["adversarial"] > 0.5, (key, small[key], row)
        assert row["fooled_after_chain"] >= small[key]["fooled_after_chain"] - 0.05, (key, small[key], row)
    with pytest.raises(InputError, match="not a class"):
        run_audit(engines[:1], attacks=("patch:target=12",), samples=10, progress=False)
    with pytest.raises(InputError, match="areas"):
        run_audit(engines[:1], attacks=("patch:areas=0.1/0.7",), samples=10, progress=False)


def test_physical_headline_is_the_absolute_share_and_eot_beats_plain_pgd_on_it(digits_engines):
    """The headline is the share of *all* points still fooled after the chain (survival is conditional on the
    attack having fooled the point without the chain); on it EOT-PGD must beat plain PGD."""
    spec = "physical:points=100:draws=5:eot_samples=4:steps=20"
    report = run_audit([digits_engines["fp32"].path], attacks=(spec,), samples=100, progress=False)
    rows = {(r["route"], r["attack"]): r for r in report.probes["physical"]["rows"]}
    pgd, eot = rows["white-box", "pgd"], rows["white-box", "eot-pgd"]
    for r in (pgd, eot):  # the chain alone also costs points: the absolute share is not survival x fooled
        assert 0 <= r["fooled_after_chain"] <= 1 and r["survival"] is not None
    assert eot["fooled_after_chain"] > pgd["fooled_after_chain"], (pgd, eot)


def test_a_stored_report_with_probes_renders_in_a_fresh_process():
    """The probes register in PROBES on its first look-up: rendering a stored audit.json with probe sections looks
    them up, so it needs no audit run first."""
    import subprocess
    import sys

    code = ("from dlforge.adversarial.report import _probe_columns\n"
            "print(len(_probe_columns('fooling')), len(_probe_columns('physical')))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.split()[0] == "7", proc.stderr
