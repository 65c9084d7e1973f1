import json

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from dlforge.adversarial.audit import run_audit
from dlforge.adversarial.records import AuditReport
from dlforge.adversarial.report import gate
from dlforge.cli import cli
from dlforge.errors import InputError
from dlforge.train import checkpoint_from_training
from tests.helpers import shared_path

QUICK = dict(samples=150, pgd_steps=10, square_queries=150, progress=False)


@pytest.fixture(scope="module")
def digits_audit(digits_engines):
    return run_audit([digits_engines["fp32"].path, digits_engines["int8"].path], eps=(0.0, 0.1, 0.3), **QUICK)


def test_rows_cover_every_route_and_engine(digits_audit):
    routes = {(r["attack"], r["route"], r["target"]) for r in digits_audit.rows}
    assert ("fgsm", "white-box", "source") in routes and ("pgd", "transfer", "int8") in routes
    assert ("square", "query", "fp32") in routes
    clean = {e["label"]: e["clean_accuracy"] for e in digits_audit.engines}
    for r in digits_audit.rows:  # every row is judged on the very inputs whose clean accuracy the report gives
        if r["target"] in clean:
            assert r["clean_accuracy"] == clean[r["target"]]
        if r["eps"] == 0:  # an attack at eps 0 changes nothing once the audit has projected it
            assert r["robust_accuracy"] == r["clean_accuracy"] and r["attack_success_rate"] == 0
    assert all(r["queries_per_sample"] <= 150 for r in digits_audit.rows if r["route"] == "query")


def test_checks_pass_on_a_sound_evaluation(digits_audit):
    statuses = {c["name"]: c["status"] for c in digits_audit.checks}
    gap = statuses.pop(next(n for n in statuses if n.startswith("transfer attacks")))
    assert gap in ("pass", "fail")  # judged: both engines have transfer and white-box (engine) rows
    assert statuses.pop(next(n for n in statuses if "Tramer" in n)) == "n/a"  # no detectors: nothing to judge
    # logits, gradients, full range, monotone, masking, engine gradients, invariance
    assert len(statuses) == 7 and set(statuses.values()) == {"pass"}, digits_audit.checks


def test_robust_accuracy_falls_by_30_points_at_eps_03(digits_audit):
    for r in digits_audit.rows:
        if r["eps"] == 0.3 and r["attack"] in ("fgsm", "pgd"):
            assert r["robust_accuracy"] <= r["clean_accuracy"] - 0.3


def test_fp32_and_int8_are_compared_on_the_same_inputs(digits_audit):
    comps = digits_audit.comparisons
    assert {c["attack"] for c in comps} == {"clean", "fgsm", "pgd"}
    assert all(0 <= c["disagreement"] <= 1 for c in comps)


def test_probability_outputs_fail_the_logits_check(tmp_path):
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(64, 10)).astype(np.float32), "W")
    shape = numpy_helper.from_array(np.array([-1, 64], np.int64), "shape")
    nodes = [helper.make_node("Reshape", ["input", "shape"], ["flat"]), helper.make_node("MatMul", ["flat", "W"], ["z"]),
             helper.make_node("Softmax", ["z"], ["probs"], axis=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])], [w, shape])
    path = tmp_path / "softmax.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    report = run_audit([path], attacks=("square",), data="digits", eps=(0.0, 0.1), **QUICK)
    check = next(c for c in report.checks if c["name"].startswith("model outputs logits"))
    assert check["status"] == "fail" and check["passed"] is False and "softmax" in check["detail"]
    na = {c["name"].split()[0] for c in report.checks if c["status"] == "n/a"}
    # no gradient attack, no detector: nothing to judge
    assert na == {"input", "white-box", "query", "transfer", "engine-graph", "detector"}


def test_bad_input(digits_engines, tmp_path):
    engine = digits_engines["fp32"].path
    with pytest.raises(InputError, match="--eps must be a finite number >= 0"):
        run_audit([engine], eps=(-0.1,), **QUICK)
    with pytest.raises(InputError, match="unknown attack 'deepfool'"):
        run_audit([engine], attacks=("deepfool",), **QUICK)
    other = checkpoint_from_training("mlp", tmp_path / "mlp", epochs=1, progress=False)
    with pytest.raises(InputError, match="is not the checkpoint .* was built from"):
        run_audit([engine], source=other.path, **QUICK)


def test_cli_gate_and_report(digits_engines, tmp_path):
    args = ["audit", str(digits_engines["fp32"].path), "--samples", "100", "--attacks", "fgsm", "--eps", "0,0.3"]
    result = CliRunner().invoke(cli, args + ["--fail-under", "0.3:0.5", "-o", str(tmp_path / "audit"), "--json"])
    assert result.exit_code == 1, result.output
    assert "robustness gate failed: fgsm on fp32 at linf eps 0.3" in result.stderr
    report = json.loads(result.stdout)
    assert report["schema_version"] == 3 and {"rows", "checks", "clean_accuracy"} <= set(report)
    html = (tmp_path / "audit" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "<script" not in html
    written = json.loads((tmp_path / "audit" / "audit.json").read_text())
    again = AuditReport.from_json(written)  # the payload reads back as the report it was written from
    assert again.to_json() == written and again.rows == report["rows"] and gate(again, [("linf", 0.3, 0.5)])
    for broken, message in (({**written, "schema_version": 2}, "not an audit report of schema 3 .found 2."),
                            ({**written, "rowz": []}, "unknown keys rowz"),
                            ({k: v for k, v in written.items() if k != "checks"}, "missing keys checks")):
        with pytest.raises(InputError, match=message):
            AuditReport.from_json(broken)
    ok = CliRunner().invoke(cli, args + ["--fail-under", "0.0:0.5"])
    assert ok.exit_code == 0
    bad = CliRunner().invoke(cli, args + ["--fail-under", "0.3"])
    assert bad.exit_code == 2 and "EPS:ACC" in bad.stderr


def test_square_on_third_party_mnist12_without_a_source():
    report = run_audit([shared_path("onnx-models", "mnist-12.onnx")], attacks=("square",), eps=(0.0, 0.3),
                       data="mnist", data_dir=shared_path("mnist"), samples=200, square_queries=1000, progress=False)
    row = next(r for r in report.rows if r["eps"] == 0.3)
    assert report.clean_accuracy >= 0.97
    assert row["robust_accuracy"] < 0.20 and row["queries_per_sample"] <= 1000


@pytest.mark.slow
def test_fgsm_and_pgd_on_mnist_lenet_engines(mnist_engines):
    engines = [mnist_engines[p].path for p in ("fp32", "int8")]
    report = run_audit(engines, attacks=("fgsm", "pgd"), eps=(0.25, 0.3), samples=500, pgd_steps=40, progress=False)
    rows = {(r["attack"], r["eps"], r["route"], r["target"]): r["robust_accuracy"] for r in report.rows}
    assert 1 - rows[("fgsm", 0.25, "transfer", "fp32")] >= 0.80  # Goodfellow et al.: 89.4% error for a maxout net
    assert rows[("pgd", 0.3, "transfer", "fp32")] <= 0.02
    # PGD-40 with each engine's own gradients (INT8: straight-through Q/DQ) breaks both engines
    assert rows[("pgd", 0.3, "white-box (engine)", "fp32")] <= 0.02
    assert rows[("pgd", 0.3, "white-box (engine)", "int8")] <= 0.02
    gap = next(g for g in report.transfer_gaps if (g["engine"], g["attack"], g["eps"]) == ("int8", "pgd", 0.3))
    assert not gap["suspect"] and not gap["large"]  # the INT8 graph's gradients are as strong as the source's


def test_audit_data_folder_must_speak_the_engines_label_space(digits_engines, tmp_path):
    """A 3-class folder of other names is refused for a 10-class engine; class folders named after some of the
    engine's labels are read in its label space (folder '7' is class 7, not class 2 of 3)."""
    from PIL import Image

    from dlforge.data import load_dataset

    digits = load_dataset("digits")
    for root, names in ((tmp_path / "other", ("a", "b", "c")), (tmp_path / "subset", ("1", "3", "7"))):
        for name, digit in zip(names, (1, 3, 7)):
            (root / name).mkdir(parents=True)
            for i, img in enumerate(digits.x_test[digits.y_test == digit][:5]):
                Image.fromarray((img[0] * 255).astype(np.uint8)).save(root / name / f"{i}.png")
    engine = str(digits_engines["fp32"].path)
    bad = CliRunner().invoke(cli, ["audit", engine, "--data", str(tmp_path / "other"), "--attacks", "fgsm",
                                   "--eps", "0.1"])
    assert bad.exit_code == 2 and "has 3 classes (a, b, c), but" in bad.output, bad.output
    report = run_audit([engine], data=str(tmp_path / "subset"), attacks=("fgsm",), eps=(0.1,), progress=False)
    assert report.samples == 15 and report.clean_accuracy >= 0.8  # labels 1, 3, 7 in the engine's space
