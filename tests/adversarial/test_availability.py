"""Availability poisoning: injection, the boundary-flip choice, the loss filter, and the CLI curve on digits."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dlforge.adversarial.poisoning.availability import (inject, loss_filter, parse_rates, sample_losses,
                                                        surrogate_margins)
from dlforge.cli import cli
from dlforge.data import load_dataset
from dlforge.errors import InputError


def test_random_label_injection_appends_mislabelled_copies(digits):
    poisoned, inj = inject(digits, "random-label", 0.25, seed=3)
    n = len(digits.y_train)
    assert len(inj.source) == round(0.25 * n) and len(np.unique(inj.source)) == len(inj.source)
    np.testing.assert_array_equal(poisoned.x_train[:n], digits.x_train)  # the clean samples are untouched
    np.testing.assert_array_equal(poisoned.y_train[:n], digits.y_train)
    np.testing.assert_array_equal(poisoned.x_train[inj.poisoned], digits.x_train[inj.source])
    assert (poisoned.y_train[inj.poisoned] != digits.y_train[inj.source]).all()  # never the true label
    assert len(np.unique(poisoned.y_train[inj.poisoned])) == 10  # spread over the classes
    assert inj.describe()["poisoned_share"] == pytest.approx(len(inj.source) / len(poisoned.y_train))
    again, _ = inject(digits, "random-label", 0.25, seed=3)
    np.testing.assert_array_equal(again.y_train, poisoned.y_train)


def test_boundary_flip_takes_the_smallest_margins_and_the_nearest_class(digits):
    logits = np.array([[5.0, 4.0, 0.0],  # margin 1 to class 1
                       [0.0, 9.0, 8.5],  # margin 0.5 to class 2
                       [1.0, 0.0, 7.0],  # margin 6 to class 0
                       [3.0, 0.0, 2.0]])  # misclassified: margin -1 to class 0
    nearest, margin = surrogate_margins(logits, np.array([0, 1, 2, 2]))
    np.testing.assert_array_equal(nearest, [1, 2, 0, 0])
    np.testing.assert_allclose(margin, [1.0, 0.5, 6.0, -1.0])
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(len(digits.y_train), 10))
    poisoned, inj = inject(digits, "boundary-flip", 0.1, surrogate_logits=logits)
    nearest, margin = surrogate_margins(logits, digits.y_train)
    assert margin[inj.source].max() <= np.delete(margin, inj.source).min()
    np.testing.assert_array_equal(poisoned.y_train[inj.poisoned], nearest[inj.source])
    assert (nearest[inj.source] != digits.y_train[inj.source]).all()


def test_loss_threshold_is_set_on_clean_validation_losses_alone():
    from dlforge.adversarial.poisoning.availability import loss_threshold

    clean = np.random.default_rng(0).exponential(1.0, 10_000)
    bar = loss_threshold(clean)
    assert (clean > bar).mean() == pytest.approx(0.01, abs=0.001) and bar == pytest.approx(np.log(100), rel=0.1)
    with pytest.raises(InputError, match="--filter-share"):
        loss_threshold(np.array([]))


def test_loss_filter_removes_the_highest_losses():
    logits = np.array([[4.0, 0.0], [0.0, 4.0], [1.0, 0.0], [0.0, 0.5]])
    y = np.array([0, 0, 0, 1])
    losses = sample_losses(logits, y)
    expected = -np.log(np.exp(logits[np.arange(4), y]) / np.exp(logits).sum(1))
    np.testing.assert_allclose(losses, expected)
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)  # a graph ending in a softmax
    np.testing.assert_allclose(sample_losses(probabilities, y), expected, rtol=1e-6)
    np.testing.assert_array_equal(loss_filter(losses, 0.5), [False, True, False, True])
    assert not loss_filter(losses, 0.0).any()


@pytest.mark.parametrize("rates, message", [("0/0.1", "must be in (0, 1]"), ("0.1/x", "separated by '/'"),
                                            ("0.2/0.2", "lists a rate twice"), ("1.5", "must be in (0, 1]")])
def test_parse_rates_refuses(rates, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace("]", r"\]")):
        parse_rates(rates)


@pytest.mark.parametrize("args, message", [
    (["--attack", "random-label", "--rates", "0.1/0"], "--rates: each rate"),
    (["--attack", "random-label", "--defences", "strip"], "is a backdoor defence"),
    (["--attack", "badnets", "--defences", "loss-filter"], "is for the availability attacks"),
    (["--attack", "boundary-flip", "--filter-share", "1"], "--filter-share must be"),
])
def test_cli_bad_availability_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    result = CliRunner().invoke(cli, ["poison", "mlp", *args, "-o", str(tmp_path / "run")])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
    assert message in result.stderr
    assert not (tmp_path / "run").exists()


def test_digits_availability_curve_from_the_cli(tmp_path):
    from dlforge.runtime import open_deployed

    digits_val = load_dataset("digits")
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["poison", "mlp", "--attack", "boundary-flip", "--rates", "0.2/0.4",
                                      "--epochs", "4", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "loss filter" in result.stdout
    report = json.loads((out / "poison" / "poison.json").read_text())
    curve = report["curve"]
    assert [(r["attack"], r["rate"]) for r in curve] == [
        ("clean", 0.0), ("boundary-flip", 0.2), ("boundary-flip", 0.4), ("random-label", 0.2), ("random-label", 0.4)]
    for row in curve:
        assert {"pytorch", "fp32", "int8"} <= row.keys()
        assert abs(row["pytorch"] - row["fp32"]) <= 0.003  # the fp32 engine is the trained model
        for precision in ("fp32", "int8"):
            assert (Path(row["engines"][precision]) / "card.json").is_file()
    assert curve[0]["fp32"] > 0.9
    for row in curve[1:]:
        f = row["loss_filter"]
        assert f["rule"].startswith("loss above the 99% quantile") and "oracle" not in f  # no poisoned share used
        for precision in ("fp32", "int8"):  # the filter finds injected samples far above chance
            rates = f["engines"][precision]
            assert rates["true_positive_rate"] > 3 * rates["false_positive_rate"]
            assert rates["share"] == pytest.approx(rates["flagged"] / (row["injected_samples"] + report["clean_samples"]))
            # the bar is the clean validation set's 99th-percentile loss under this very engine, not the poisoned set's
            with open_deployed(row["engines"][precision]) as engine:
                val_losses = sample_losses(engine.predict(digits_val.x_val), digits_val.y_val)
            assert rates["threshold"] == pytest.approx(np.quantile(val_losses, 0.99), rel=1e-6)
        assert 0 <= f["accuracy_after"] <= 1
    random_rows = [r for r in curve if r["attack"] == "random-label"]
    assert all(r["loss_filter"]["engines"]["fp32"]["true_positive_rate"] > 0.8 for r in random_rows)
    compared = report["summary"]["compared"]
    assert [c["rate"] for c in compared] == [0.2, 0.4]
    verdict = "is below" if report["summary"]["below_random_at_every_rate"] else "is NOT below"
    assert f"boundary-flip {verdict} random labels at every rate" in result.stdout  # the text says what the JSON says
    # the feature-space attack hurts more than label noise where it injects most (Steinhardt et al.'s point)
    assert compared[-1]["attack"] < compared[-1]["random_label"], compared
    html = (out / "poison" / "report.html").read_text()
    assert "<svg" in html and "boundary-flip fp32" in html
