"""``--precision auto --max-robust-drop``: the engine that ships is within the robustness budget too."""

from __future__ import annotations

import numpy as np

from dlforge.build import engine_from_onnx
from dlforge.build.auto import choose
from dlforge.build.options import BuildOptions
from dlforge.data import load_dataset
from dlforge.runtime import open_deployed


def _choose(digits_engines, robust_drops, **options):
    x = load_dataset("digits").x_test[:64]
    engines = {p: open_deployed(digits_engines[p].path) for p in ("fp32", "int8")}
    # int8 keeps accuracy: within the accuracy budget whatever it measures; only robustness can rule it out
    evaluations = {p: {"accuracy": 0.9, "accuracy_drop": 0.0} for p in engines}
    try:
        return choose(engines, evaluations, x, BuildOptions(precision="auto", **options), lambda line: None,
                      robust_drops=robust_drops)
    finally:
        for e in engines.values():
            e.close()


def test_an_int8_that_keeps_accuracy_but_loses_robustness_is_not_chosen(digits_engines):
    chosen, selection = _choose(digits_engines, {"int8": 6.0}, max_robust_drop=2.0)
    assert chosen == "fp32"
    int8 = next(r for r in selection["candidates"] if r["precision"] == "int8")
    assert not int8["within_budget"] and int8["verdict"] == "over budget" and int8["robust_drop"] == 6.0
    # unmeasured robustness is not within a robustness budget either
    chosen, selection = _choose(digits_engines, {}, max_robust_drop=2.0)
    assert chosen == "fp32" and selection["robust_budget_points"] == 2.0
    # within both budgets it competes on speed as before
    _, selection = _choose(digits_engines, {"int8": 1.0}, max_robust_drop=2.0)
    assert next(r for r in selection["candidates"] if r["precision"] == "int8")["within_budget"]


def test_the_shipped_engine_is_within_the_robustness_budget(digits_onnx, tmp_path):
    engine = engine_from_onnx(digits_onnx.path, tmp_path / "auto", precision="auto", max_robust_drop=0.0,
                              robust_eps=0.1, eval_samples=200)
    selection = engine.card.sections["selection"]
    chosen = next(r for r in selection["candidates"] if r["precision"] == selection["chosen"])
    assert chosen["within_budget"] and (chosen["robust_drop"] or 0.0) <= 0.0
    for row in selection["candidates"]:
        assert row["within_budget"] == (row["accuracy_drop"] <= selection["budget_points"]
                                        and (row["robust_drop"] is not None and row["robust_drop"] <= 0.0))
    assert np.isfinite(chosen["median_ms"])
