"""Engines that accept only some batch sizes — a static batch of 1, or a range narrower than the
stages' default batch of 256 (the rule a TensorRT profile imposes) — go through build evaluation,
bench --accuracy, audit and poison."""

from __future__ import annotations

import numpy as np
import pytest

from dlforge.adversarial.audit import run_audit
from dlforge.build import engine_from_onnx
from dlforge.data import load_dataset
from dlforge.export import onnx_from_checkpoint
from dlforge.runtime import open_deployed


@pytest.fixture(scope="module")
def limited_engines(digits_lenet, tmp_path_factory):
    root = tmp_path_factory.mktemp("limited")
    static = onnx_from_checkpoint(digits_lenet.path, root / "onnx-static", dynamic_batch=False)
    dynamic = onnx_from_checkpoint(digits_lenet.path, root / "onnx")
    return {
        "static-fp32": engine_from_onnx(static.path, root / "static-fp32"),
        "static-int8": engine_from_onnx(static.path, root / "static-int8", precision="int8"),
        "narrow-fp32": engine_from_onnx(dynamic.path, root / "narrow-fp32", min_batch=2, max_batch=64),
    }


def test_build_evaluates_every_test_image(limited_engines):
    n_test = len(load_dataset("digits").y_test)
    assert n_test > 256
    for name, engine in limited_engines.items():
        assert engine.card.sections["evaluation"]["samples"] == n_test, name
    assert limited_engines["narrow-fp32"].card.sections["batch_range"] == [2, 64]
    with open_deployed(limited_engines["static-fp32"].path) as m:
        assert m.batch_range == (1, 1)


def test_bench_accuracy_on_limited_engines(limited_engines):
    from dlforge.bench.runner import run_bench

    paths = [limited_engines["static-fp32"].path, limited_engines["static-int8"].path]
    report = run_bench(paths, batch_sizes=(1,), iterations=5, duration=0.05, rounds=1, accuracy=True)
    for row, engine in zip(report.results, limited_engines.values()):
        assert row["accuracy"] == pytest.approx(engine.card.sections["evaluation"]["accuracy"])
    narrow = run_bench([limited_engines["narrow-fp32"].path], batch_sizes=(8,), iterations=5, duration=0.05,
                       rounds=1, accuracy=True)
    assert narrow.results[0]["accuracy"] == pytest.approx(
        limited_engines["narrow-fp32"].card.sections["evaluation"]["accuracy"])


def test_audit_on_limited_engines(limited_engines):
    engines = [limited_engines["static-fp32"].path, limited_engines["static-int8"].path]
    report = run_audit(engines, attacks=("fgsm", "square"), eps=(0.0, 0.3), samples=300, square_queries=20,
                       progress=False)
    assert report.samples == 300
    fgsm = [r for r in report.rows if r["attack"] == "fgsm" and r["route"] == "transfer" and r["eps"] == 0.3]
    assert len(fgsm) == 2 and all(r["robust_accuracy"] < r["clean_accuracy"] - 0.3 for r in fgsm)
    narrow = run_audit([limited_engines["narrow-fp32"].path], attacks=("square",), eps=(0.3,), samples=300,
                       square_queries=20, progress=False)
    assert narrow.rows[0]["queries_per_sample"] <= 20


def test_poison_with_static_batch_and_narrow_range_engines(tmp_path):
    from dlforge.adversarial.poisoning.run import run_poison

    report = run_poison("lenet", tmp_path / "run", data="digits", epochs=2, baseline=False, defences=("strip",),
                        dynamic_batch=False, max_batch=None, strip_samples=100)
    assert {e["precision"] for e in report.engines} == {"fp32", "int8"}
    assert len([d for d in report.defences if d["name"] == "strip"]) == 2
    narrow = run_poison("lenet", tmp_path / "run2", data="digits", epochs=2, baseline=False, defences=(),
                        max_batch=16)
    with open_deployed(narrow.engines[0]["path"]) as m:
        assert m.batch_range == (1, 16)
    assert np.isfinite([e["clean_accuracy"] for e in narrow.engines]).all()
