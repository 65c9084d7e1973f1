"""Extension points: a new attack, detector, backend, dataset and data format registered from this test module,
with no edit of dlforge's code, run through ``run_audit``, ``engine_from_onnx``, ``run_bench``, the runtime,
training and the pipeline."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from dlforge.adversarial.attacks import ATTACKS, AttackResult, QueryAttack, describe
from dlforge.adversarial.attacks.base import QUERIES
from dlforge.adversarial.detectors import DETECTORS, Detector
from dlforge.adversarial.probes import PROBES, Probe, probabilities
from dlforge.backends import BACKENDS, Backend
from dlforge.errors import InputError
from dlforge.options import Options, dataclass, option


class UniformNoise(QueryAttack):
    """Uniform noise in the L-inf ball: one query per image (a weak baseline attack)."""

    norm = "linf"

    def __init__(self, *, seed: int = 0, tries: int = 1):
        self.seed, self.tries = seed, tries

    def run(self, predict, x, y, *, eps, value_range=(0.0, 1.0)):
        rng = np.random.default_rng(self.seed)
        x_adv = np.clip(x + rng.uniform(-eps, eps, x.shape), *value_range).astype(x.dtype)
        return AttackResult(x_adv, np.full(len(x), self.tries))


class MeanConfidence(Probe):
    """Each engine's mean top-class probability on the audited points (a probe: one row per engine)."""

    requires = frozenset({QUERIES})

    def __init__(self, *, points: int = 16):
        self.points = points

    def probe(self, run, show):
        rows = []
        for engine in run.engines:
            show(engine.label)
            p = probabilities(engine.predict(run.x[:self.points]))
            rows.append({"route": "query", "target": engine.label, "mean_confidence": float(p.max(1).mean())})
        return {"rows": rows, "notes": [f"over the first {self.points} audited points"]}


class MaxLogit(Detector):
    """Flags inputs whose top logit is low (an uncertainty filter)."""

    def score(self, predict, x):
        return -predict(x).max(1)


@dataclass
class CopyOptions(Options):
    note: str = option("", "A note the copy records in its card.")
    copies: int = option(1, "How many times to copy (a range-checked option).", min=1, max=3)


class CopyBackend(Backend):
    """The parent ONNX as is, opened by ONNX Runtime with graph optimizations off."""

    precisions = ("fp32",)
    payload = "model.onnx"
    options_class = CopyOptions

    def compile(self, precision, src, dst, calibration):
        for _ in range(self.own.copies):
            shutil.copyfile(src, dst)
        return {"copied": True, "note": self.own.note}

    def open(self, path, details, info):
        return open_copy_session(path, info)

    @classmethod
    def open_engine(cls, artifact, *, threads=None, device="cpu"):  # one registry entry: the runtime's opener too
        return open_copy_session(artifact.payload_path, artifact.card.model)


def open_copy_session(path, info):
    import onnxruntime as ort

    from dlforge.backends.ort.session import OrtSession

    session = OrtSession(path, model=info)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session._session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    session.backend = "copy"
    return session


@pytest.fixture()
def plugins():
    ATTACKS.register("uniform-noise")(UniformNoise)
    PROBES.register("mean-confidence")(MeanConfidence)
    DETECTORS.register("max-logit")(MaxLogit)
    BACKENDS.register("copy")(CopyBackend)
    yield
    for registry, name in ((ATTACKS, "uniform-noise"), (PROBES, "mean-confidence"), (DETECTORS, "max-logit"),
                           (BACKENDS, "copy")):
        registry.unregister(name)


def test_a_registered_attack_and_detector_run_in_the_audit(plugins, digits_engines):
    from dlforge.adversarial.audit import run_audit

    report = run_audit([digits_engines["fp32"].path], eps=(0.0, 0.3),
                       attacks=("uniform-noise:tries=3", "pgd", "mean-confidence:points=8"), samples=64,
                       pgd_steps=5, detectors=("max-logit:fpr=0.1",), progress=False)
    rows = [r for r in report.rows if r["attack"] == "uniform-noise"]
    assert [r["route"] for r in rows] == ["query", "query"]
    assert rows[0]["queries_per_sample"] == 3
    assert rows[0]["robust_accuracy"] == pytest.approx(report.clean_accuracy)  # eps 0 changes nothing
    pgd = next(r for r in report.rows if r["attack"] == "pgd" and r["eps"] == 0.3 and r["route"] == "transfer")
    assert rows[1]["robust_accuracy"] > pgd["robust_accuracy"]  # noise is weaker than PGD
    assert {d["detector"] for d in report.detections} == {"max-logit"}
    assert all(d["settings"] == {"fpr": 0.1} for d in report.detections)  # a registered detector's spec option
    assert "uniform-noise" in {a["name"] for a in describe(ATTACKS)}
    # the registered probe ran once, through the same --attacks spec, with its option
    section = report.probes["mean-confidence"]
    assert [r["target"] for r in section["rows"]] == ["fp32"]
    assert section["notes"] == ["over the first 8 audited points"]
    assert 0.1 <= section["rows"][0]["mean_confidence"] <= 1.0


def test_a_registered_backend_builds_and_benches(plugins, digits_onnx, tmp_path):
    from dlforge.bench.runner import run_bench
    from dlforge.build import engine_from_onnx

    engine = engine_from_onnx(digits_onnx.path, tmp_path / "engine-copy", backend="copy", note="its own option")
    assert engine.card.sections["backend"] == "copy" and engine.card.sections["build"]["copied"]
    assert engine.card.sections["build"]["note"] == "its own option"  # a backend option reaches the backend
    with pytest.raises(InputError, match="copies"):
        engine_from_onnx(digits_onnx.path, tmp_path / "bad", backend="copy", copies=9)
    with pytest.raises(InputError, match="--reduce-range is an option of --backend ort, not copy"):
        engine_from_onnx(digits_onnx.path, tmp_path / "bad", backend="copy", reduce_range="on")
    assert not (tmp_path / "bad").exists()
    assert engine.card.sections["evaluation"]["max_abs_diff"] < 1e-5
    report = run_bench([engine.path], batch_sizes=(1,), iterations=5, duration=0.05, rounds=1, accuracy=True)
    (row,) = report.results
    assert row["backend"] == "copy"
    assert row["accuracy"] == pytest.approx(engine.card.sections["evaluation"]["accuracy"])


def test_unknown_names_list_the_registry():
    from dlforge.adversarial.probes import make

    with pytest.raises(InputError, match="unknown attack 'deepfool'; attacks: .*pgd.*; probes: .*fooling"):
        make("deepfool")  # an --attacks name is looked up in both registries
    with pytest.raises(InputError, match="unknown attack 'cw'; expected one of .*pgd.*square"):
        ATTACKS.get("cw")
    with pytest.raises(InputError, match="unknown backend"):
        BACKENDS.get("onnx-mlir")


def _stripes(data_dir=None):
    """Horizontal against vertical stripes, 8x8 (a dataset anyone can write in ten lines)."""
    from dlforge.data.dataset import Dataset, holdout_test, split_train_val

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 600)
    phase = rng.integers(0, 2, 600)
    grid = (np.arange(8)[:, None] + phase[:, None, None] + np.zeros((1, 1, 8))) % 2  # rows alternate
    x = np.where(y[:, None, None] == 0, grid, grid.transpose(0, 2, 1))[:, None].astype(np.float32)
    x = np.clip(x + rng.normal(0, 0.2, x.shape), 0, 1).astype(np.float32)
    x_rest, y_rest, x_test, y_test = holdout_test(x, y.astype(np.int64))
    x_train, y_train, x_val, y_val = split_train_val(x_rest, y_rest)
    return Dataset(name="stripes", x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test,
                   y_test=y_test, labels=("horizontal", "vertical"), source="generated")


def _load_csv(path):
    """A CSV of ``label,pixel0..pixel63`` rows (8x8 images in [0, 1])."""
    from dlforge.data.dataset import Dataset, holdout_test, split_train_val

    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    x, y = table[:, 1:].reshape(-1, 1, 8, 8), table[:, 0].astype(np.int64)
    x_rest, y_rest, x_test, y_test = holdout_test(x, y)
    x_train, y_train, x_val, y_val = split_train_val(x_rest, y_rest)
    return Dataset(name=str(path), x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test,
                   y_test=y_test, labels=tuple(str(i) for i in range(int(y.max()) + 1)), source=str(path))


@pytest.fixture()
def data_plugins():
    from dlforge.data.dataset import DATA_FORMATS, DATASETS, DataFormat

    DATASETS.register("stripes")(_stripes)
    DATA_FORMATS.register("csv")(DataFormat(matches=lambda p: p.suffix == ".csv", load=_load_csv,
                                            description="a .csv of label,pixels rows"))
    yield
    DATASETS.unregister("stripes")
    DATA_FORMATS.unregister("csv")


def test_a_registered_dataset_and_data_format_train_export_and_build(data_plugins, tmp_path):
    from dlforge.build import engine_from_onnx
    from dlforge.data import dataset_names, load_dataset
    from dlforge.export import onnx_from_checkpoint
    from dlforge.train import checkpoint_from_training

    assert "stripes" in dataset_names()
    ckpt = checkpoint_from_training("mlp", tmp_path / "ckpt", data="stripes", epochs=3, progress=False)
    engine = engine_from_onnx(onnx_from_checkpoint(ckpt.path, tmp_path / "onnx").path, tmp_path / "engine")
    assert engine.card.sections["evaluation"]["accuracy"] > 0.9  # reloaded by name from the lineage, and learnt

    digits = load_dataset("digits")
    rows = np.concatenate([digits.y_train[:, None], digits.x_train.reshape(len(digits.y_train), -1)], 1)
    csv = tmp_path / "digits.csv"
    np.savetxt(csv, rows, delimiter=",", fmt="%.4f")
    assert load_dataset(str(csv)).x_train.shape[1:] == (1, 8, 8)
    ckpt = checkpoint_from_training("mlp", tmp_path / "ckpt-csv", data=str(csv), epochs=3, progress=False)
    engine = engine_from_onnx(onnx_from_checkpoint(ckpt.path, tmp_path / "onnx-csv").path, tmp_path / "engine-csv")
    assert engine.card.sections["evaluation"]["accuracy"] > 0.8
    with pytest.raises(InputError, match=r"a \.csv of label,pixels rows"):
        load_dataset(str(tmp_path / "nothing.txt"))


def test_a_zoo_name_cannot_be_registered_twice():
    """The zoo's registry refused nothing: a second ``mlp`` replaced the built-in one silently."""
    from dlforge_models import list_models, register_model

    assert "mlp" in list_models()

    def mlp(*, input_shape, num_classes):
        """Not the zoo's MLP."""

    with pytest.raises(ValueError, match="'mlp' is already registered by dlforge_models"):
        register_model()(mlp)


def test_the_pipeline_builds_with_a_registered_backend(tmp_path):
    """``dlforge pipeline --backend NAME``: the engines, their stage names, the drift hops and the card all
    follow the backend; a name no registry knows is refused before any work."""
    from dlforge.backends.ort.compile import OrtBackend
    from dlforge.pipeline import run_pipeline

    class Ort2(OrtBackend):
        name = "ort2"

    BACKENDS.register("ort2")(Ort2)
    try:
        artifacts = run_pipeline("mlp", tmp_path / "run", backend="ort2", epochs=1, bench=False, audit=False)
    finally:
        BACKENDS.unregister("ort2")
    assert [s for s in artifacts if s.startswith("engine-")] == ["engine-ort2-fp32", "engine-ort2-int8"]
    assert artifacts["engine-ort2-int8"].card.sections["backend"] == "ort2"
    drift = json.loads(artifacts["drift"].payload_path.read_text())
    assert [h["hop"] for h in drift["hops"]] == ["pytorch", "onnx", "ort2 fp32", "ort2 int8"]
    with pytest.raises(InputError, match="--backend: unknown value 'ort3'"):
        run_pipeline("mlp", tmp_path / "other", backend="ort3")
    assert not (tmp_path / "other").exists()
    from click.testing import CliRunner

    from dlforge.cli import cli

    result = CliRunner().invoke(cli, ["pipeline", "mlp", "--backend", "ort3", "-o", str(tmp_path / "cli")])
    assert result.exit_code == 2 and "--backend: unknown value 'ort3'" in result.output, result.output
    assert not (tmp_path / "cli").exists()


def _calibration_headline(artifact):
    table = json.loads(artifact.payload_path.read_text(encoding="utf-8"))
    return f"{len(table['ranges'])} tensor ranges from {table['images']} images"


def test_a_registered_artifact_kind_is_written_opened_checked_and_inspected(tmp_path):
    """A new kind of artifact (a calibration table) is one registration: before it, its card is refused; after
    it, the report writer commits it, ``open_artifact`` checks its hash and names its command when another kind
    was asked for, and ``dlforge inspect`` prints its headline."""
    from click.testing import CliRunner

    from dlforge.artifact import open_artifact
    from dlforge.cli import cli
    from dlforge.errors import ArtifactError
    from dlforge.kinds import ARTIFACT_KINDS, ArtifactKind, register_kind
    from dlforge.reporting import write_report_artifact

    def check_card(d, card_path):
        if d.get("calibration", {}).get("method") not in ("minmax", "entropy"):
            raise ArtifactError(f"{card_path}: calibration.method must be minmax or entropy")

    report = {"images": 64, "ranges": {"conv1": [0.0, 3.5], "fc": [-2.0, 9.0]}}
    write = lambda out, method="minmax": write_report_artifact(  # noqa: E731
        "calibration", report, out, payload="table.json", sections={"calibration": {"method": method}})
    with pytest.raises(ArtifactError, match="kind is 'calibration'; expected one of"):
        write(tmp_path / "before")
    register_kind(ArtifactKind("calibration", produced_by="dlforge calibrate", headline=_calibration_headline,
                               check_card=check_card))
    try:
        table = write(tmp_path / "table")
        assert open_artifact(table.path, kinds=["calibration"]).kind == "calibration"
        other = write_report_artifact("bench", {"results": []}, tmp_path / "bench", payload="bench.json")
        with pytest.raises(ArtifactError, match=r"is a bench artifact; expected a calibration artifact "
                                                r"\(from `dlforge calibrate`\)"):
            open_artifact(other.path, kinds=["calibration"])
        with pytest.raises(ArtifactError, match="calibration.method must be minmax or entropy"):
            write(tmp_path / "bad", method="banana")
        assert not (tmp_path / "bad").exists()
        result = CliRunner().invoke(cli, ["inspect", str(table.path)])
        assert result.exit_code == 0, result.output
        assert "result     2 tensor ranges from 64 images" in result.output
    finally:
        ARTIFACT_KINDS.unregister("calibration")


def test_a_registered_dataset_defence_without_published_figures_runs_in_the_poisoning(tmp_path):
    """A dataset defence registered from here, with no paper figures recorded, runs through ``run_poison`` on both
    engines and the report says its figures were not recorded (it used to end, after all the training, in a
    KeyError on a side table of published figures)."""
    from dlforge.adversarial.poisoning.defences import DATASET_DEFENCES, DatasetDefence, Flags
    from dlforge.adversarial.poisoning.report import table
    from dlforge.adversarial.poisoning.run import run_poison

    class LargestNorm(DatasetDefence):
        """Flags the 5% of each class with the largest activation norm."""

        def __init__(self, *, share: float = 0.05):
            self.share = share

        def flag(self, features, y):
            flagged = np.zeros(len(y), dtype=bool)
            norms = np.linalg.norm(features, axis=1)
            for c in np.unique(y):
                idx = np.flatnonzero(y == c)
                flagged[idx[np.argsort(norms[idx])[::-1][:max(1, int(self.share * len(idx)))]]] = True
            return Flags(flagged, details=[])

    DATASET_DEFENCES.register("largest-norm")(LargestNorm)
    try:
        report = run_poison("lenet", tmp_path / "run", data="digits", epochs=1, baseline=False, retrain=False,
                            defences=("largest-norm",))
    finally:
        DATASET_DEFENCES.unregister("largest-norm")
    assert [(d["name"], d["engine"]) for d in report.defences] == [("largest-norm", "fp32"), ("largest-norm", "int8")]
    assert all(d["flagged"] > 0 for d in report.defences)
    assert report.published == {"largest-norm": None} and "largest-norm: not recorded" in table(report)
