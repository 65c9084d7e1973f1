"""Extension points: a new attack, detector and backend registered from this test module, with no edit
of dlforge's code, run through ``run_audit``, ``engine_from_onnx`` and ``run_bench``."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from dlforge.adversarial.attacks import ATTACKS, QueryAttack, QueryResult, describe_attacks
from dlforge.adversarial.detectors import DETECTORS, Detector
from dlforge.build import BACKENDS, Backend
from dlforge.errors import InputError
from dlforge.runtime.open import RUNTIMES


class UniformNoise(QueryAttack):
    """Uniform noise in the L-inf ball: one query per image (a weak baseline attack)."""

    norm = "linf"

    def __init__(self, *, seed: int = 0, tries: int = 1):
        self.seed, self.tries = seed, tries

    def run(self, predict, x, y, *, eps, value_range=(0.0, 1.0)):
        rng = np.random.default_rng(self.seed)
        x_adv = np.clip(x + rng.uniform(-eps, eps, x.shape), *value_range).astype(x.dtype)
        return QueryResult(x_adv, np.full(len(x), self.tries))


class MaxLogit(Detector):
    """Flags inputs whose top logit is low (an uncertainty filter)."""

    def score(self, predict, x):
        return -predict(x).max(1)


class CopyBackend(Backend):
    """The parent ONNX as is, opened by ONNX Runtime with graph optimizations off."""

    precisions = ("fp32",)
    payload = "model.onnx"

    def compile(self, precision, src, dst, calibration):
        shutil.copyfile(src, dst)
        return {"copied": True}

    def open(self, path, details, info):
        return open_copy_session(path, info)


def open_copy_session(path, info):
    import onnxruntime as ort

    from dlforge.runtime.ort import OrtSession

    session = OrtSession(path, model=info)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session._session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    session.backend = "copy"
    return session


@pytest.fixture()
def plugins():
    ATTACKS.register("uniform-noise")(UniformNoise)
    DETECTORS.register("max-logit")(MaxLogit)
    BACKENDS.register("copy")(CopyBackend)
    RUNTIMES.register("copy")(lambda artifact, **kw: open_copy_session(artifact.payload_path, artifact.card.model))
    yield
    for registry, name in ((ATTACKS, "uniform-noise"), (DETECTORS, "max-logit"), (BACKENDS, "copy"),
                           (RUNTIMES, "copy")):
        registry.unregister(name)


def test_a_registered_attack_and_detector_run_in_the_audit(plugins, digits_engines):
    from dlforge.adversarial.audit import run_audit

    report = run_audit([digits_engines["fp32"].path], attacks=("uniform-noise:tries=3", "pgd"), eps=(0.0, 0.3),
                       samples=64, pgd_steps=5, detectors=("max-logit",), progress=False)
    rows = [r for r in report["rows"] if r["attack"] == "uniform-noise"]
    assert [r["route"] for r in rows] == ["query", "query"]
    assert rows[0]["queries_per_sample"] == 3
    assert rows[0]["robust_accuracy"] == pytest.approx(report["clean_accuracy"])  # eps 0 changes nothing
    pgd = next(r for r in report["rows"] if r["attack"] == "pgd" and r["eps"] == 0.3 and r["route"] == "transfer")
    assert rows[1]["robust_accuracy"] > pgd["robust_accuracy"]  # noise is weaker than PGD
    assert {d["detector"] for d in report["detections"]} == {"max-logit"}
    assert "uniform-noise" in {a["name"] for a in describe_attacks()}


def test_a_registered_backend_builds_and_benches(plugins, digits_onnx, tmp_path):
    from dlforge.bench.runner import run_bench
    from dlforge.build import engine_from_onnx

    engine = engine_from_onnx(digits_onnx.path, tmp_path / "engine-copy", backend="copy")
    assert engine.card.sections["backend"] == "copy" and engine.card.sections["build"]["copied"]
    assert engine.card.sections["evaluation"]["max_abs_diff"] < 1e-5
    report = run_bench([engine.path], batch_sizes=(1,), iterations=5, duration=0.05, rounds=1, accuracy=True)
    (row,) = report["results"]
    assert row["backend"] == "copy"
    assert row["accuracy"] == pytest.approx(engine.card.sections["evaluation"]["accuracy"])


def test_unknown_names_list_the_registry():
    with pytest.raises(InputError, match="unknown attack 'cw'; expected one of .*pgd.*square"):
        ATTACKS.get("cw")
    with pytest.raises(InputError, match="unknown backend"):
        BACKENDS.get("onnx-mlir")
