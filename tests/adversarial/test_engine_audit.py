"""The white-box (engine) route: gradient attacks on each engine's own graph, judged on the engine."""

import json

import pytest
from click.testing import CliRunner

from dlforge.adversarial.audit import run_audit
from dlforge.adversarial.checks import transfer_gap_check, transfer_gaps
from dlforge.cli import cli
from tests.cli.test_cli_errors import assert_clean_failure
from tests.helpers import shared_path

ENGINE = "white-box (engine)"


def _row(route, target, attack, eps, acc):
    return {"route": route, "target": target, "attack": attack, "norm": "linf", "eps": eps, "robust_accuracy": acc}


def test_transfer_gap_pairs_transfer_and_engine_rows_and_flags_a_large_one():
    rows = [_row("transfer", "int8", "pgd", 0.3, 0.40), _row(ENGINE, "int8", "pgd", 0.3, 0.01),
            _row("transfer", "fp32", "pgd", 0.3, 0.02), _row(ENGINE, "fp32", "pgd", 0.3, 0.0),
            _row("transfer", "fp32", "pgd", 0.0, 0.98), _row(ENGINE, "fp32", "pgd", 0.0, 0.98),
            _row("query", "int8", "square", 0.3, 0.2)]
    gaps = transfer_gaps(rows, bar=0.05)
    assert [(g["engine"], round(g["gap"], 4), g["large"]) for g in gaps] == [("int8", 0.39, True), ("fp32", 0.02, False)]
    check = transfer_gap_check(gaps, 0.05)
    assert check["status"] == "fail" and "int8 pgd eps 0.3" in check["detail"] and "fp32" not in check["detail"]
    assert transfer_gap_check(gaps[1:], 0.05)["status"] == "pass"
    assert transfer_gap_check([], 0.05)["passed"] is None  # nothing to judge is n/a, never a pass


@pytest.fixture(scope="module")
def engine_audit(digits_engines):
    return run_audit([digits_engines["fp32"].path, digits_engines["int8"].path], attacks=("fgsm", "pgd"),
                     eps=(0.0, 0.1, 0.3), samples=200, pgd_steps=20, progress=False)


def test_both_engines_are_attacked_with_their_own_graphs(engine_audit):
    graphs = {g["engine"]: g for g in engine_audit.engine_graphs}
    assert graphs["fp32"]["usable"] and graphs["fp32"]["origin"] == "engine"
    assert graphs["fp32"]["match"]["max_abs_diff"] <= 1e-4
    assert graphs["int8"]["usable"] and graphs["int8"]["match"]["top1_agreement"] >= 0.995
    routes = {(r["attack"], r["route"], r["target"]) for r in engine_audit.rows}
    for target in ("fp32", "int8"):
        assert {("fgsm", ENGINE, target), ("pgd", ENGINE, target), ("pgd", "transfer", target)} <= routes


def test_engine_white_box_pgd_breaks_both_engines(engine_audit):
    pgd = {r["target"]: r["robust_accuracy"] for r in engine_audit.rows
           if r["route"] == ENGINE and r["attack"] == "pgd" and r["eps"] == 0.3}
    assert pgd["fp32"] <= 0.02 and pgd["int8"] <= 0.02, pgd


def test_report_gives_the_transfer_gap_per_engine(engine_audit):
    gaps = engine_audit.transfer_gaps
    assert {g["engine"] for g in gaps} == {"fp32", "int8"} and {g["eps"] for g in gaps} == {0.1, 0.3}
    check = next(c for c in engine_audit.checks if c["name"].startswith("transfer attacks"))
    assert check["status"] in ("pass", "fail") and check["passed"] is not None


@pytest.mark.parametrize("name", ["mnist-8.onnx", "mnist-12.onnx"])
def test_third_party_onnx_is_attacked_with_its_own_gradients(name, tmp_path):
    """No PyTorch source: FGSM and PGD-40 run on the model zoo graph (mnist-8: IR 3, weights as inputs)."""
    model = shared_path("onnx-models", name)
    args = ["audit", str(model), "--data", "mnist", "--data-dir", str(shared_path("mnist")), "--attacks", "fgsm,pgd",
            "--eps", "0,0.3", "--samples", "100", "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["source"] is None and report["engine_graphs"][0]["usable"]
    rows = {(r["attack"], r["eps"]): r for r in report["rows"]}
    assert {r["route"] for r in report["rows"]} == {ENGINE}
    assert rows[("fgsm", 0.0)]["robust_accuracy"] >= 0.95
    assert rows[("pgd", 0.3)]["robust_accuracy"] <= 0.05


def test_gradient_attacks_without_source_or_engine_gradients_are_refused(tmp_path):
    model = shared_path("onnx-models", "mnist-8.onnx")
    result = CliRunner().invoke(cli, ["audit", str(model), "--data", "mnist", "--data-dir", str(shared_path("mnist")),
                                      "--attacks", "pgd", "--engine-gradients", "off", "--samples", "10"])
    assert_clean_failure(result, tmp_path, "need gradients: pass --source CHECKPOINT")
