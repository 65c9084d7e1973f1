"""The per-layer precision plan: its search (on a model INT8 really hurts), its graph, its file and its errors."""

import json

import numpy as np
import onnx
import pytest

from dlforge.progress import LineProgress
from click.testing import CliRunner

from dlforge.build import engine_from_onnx
from dlforge.build.mixed import evaluation_budget, pareto_front
from dlforge.precision.plan import module_path
from dlforge.cli import cli
from dlforge.data import load_dataset
from dlforge.runtime import open_deployed

BUDGET = 1.0
ROBUST_BUDGET = 5.0


@pytest.fixture(scope="module")
def dim_calibration(tmp_path_factory):
    """Digits training images at 35% brightness: calibrated ranges too narrow for the test images, so
    all-INT8 loses several points (about 9 on the digits LeNet), some layers far more than others."""
    d = load_dataset("digits")
    path = tmp_path_factory.mktemp("dim") / "dim.npz"
    np.savez(path, x=(d.x_train[:, 0] * 0.35).astype(np.float32), y=d.y_train)
    return path


@pytest.fixture(scope="module")
def auto_engine(digits_onnx, dim_calibration, tmp_path_factory):
    lines = []
    art = engine_from_onnx(digits_onnx.path, tmp_path_factory.mktemp("auto") / "e", precision="auto",
                           calib_data=str(dim_calibration), max_accuracy_drop=BUDGET, max_robust_drop=ROBUST_BUDGET,
                           progress=LineProgress(lines.append))
    return art, lines


def _float_nodes(path) -> set[str]:
    """Names of Conv/Gemm nodes whose weight is a plain float initializer (no DequantizeLinear before it)."""
    graph = onnx.load(str(path)).graph
    produced_by_dq = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name for n in graph.node if n.op_type in ("Conv", "Gemm") and n.input[1] not in produced_by_dq}


def test_module_paths_from_both_exporters():
    node = onnx.helper.make_node("Conv", ["x", "w"], ["y"], name="node_conv2d_1")
    entry = node.metadata_props.add()
    entry.key, entry.value = "namespace", (": pkg.Net/features: torch.nn.modules.container.Sequential/"
                                           "features.3: torch.nn.modules.conv.Conv2d/conv2d_1: aten.conv2d.default")
    assert module_path(node) == "features.3"
    assert module_path(onnx.helper.make_node("Gemm", ["a", "b"], ["c"], name="/classifier/classifier.1/Gemm")) == \
        "classifier.1"
    assert module_path(onnx.helper.make_node("Gemm", ["a", "b"], ["c"], name="gemm_7")) is None


def test_evaluation_budget_and_front():
    assert [evaluation_budget(n) for n in (1, 2, 10, 16, 17, 60)] == [10, 12, 18, 18, 20, 22]
    rows = [{"plan": "a", "accuracy": 0.9, "speedup_vs_fp32": 2.0, "robust_accuracy": None},
            {"plan": "b", "accuracy": 0.95, "speedup_vs_fp32": 1.5, "robust_accuracy": None},
            {"plan": "c", "accuracy": 0.9, "speedup_vs_fp32": 1.4, "robust_accuracy": None}]
    assert pareto_front(rows) == ["a", "b"]


def test_search_recovers_the_accuracy_all_int8_loses(auto_engine, digits_onnx, dim_calibration, tmp_path):
    art, lines = auto_engine
    sel = art.card.sections["selection"]
    search = sel["plan_search"]
    by_plan = {r["plan"]: r for r in search["evaluations"]}
    assert by_plan["all-int8"]["accuracy_drop"] > BUDGET and not by_plan["all-int8"]["within_budget"]
    assert search["evaluations_used"] <= evaluation_budget(len(search["units"])) == search["evaluation_budget"]
    best = search["best"]
    assert best["accuracy_drop"] <= BUDGET and best["robust_drop"] <= ROBUST_BUDGET and best["plan"] in search["front"]
    assert 0 < best["kept_fp32"] < len(search["units"])  # a real mix: neither all-INT8 nor all-fp32
    for r in search["evaluations"]:  # robustness measured for every plan, and no plan over a budget passes
        assert r["robust_accuracy"] is not None
        if r["within_budget"]:
            assert r["accuracy_drop"] <= BUDGET and r["robust_drop"] <= ROBUST_BUDGET
    # whatever timing chose to ship, the gate held on the whole split
    ev = art.card.sections["evaluation"]
    assert ev["accuracy_drop"] <= BUDGET
    if art.card.sections["precision"] == "mixed":  # shipped: the artifact's plan is the search's best, in its graph
        shipped = json.loads((art.path / "plan.json").read_text())
        assert shipped == art.card.sections["plan"] and shipped["keep_fp32"] == best["keep_fp32"]
        assert _float_nodes(art.payload_path) == {n["onnx_node"] for n in shipped["nodes"]
                                                  if n["op_type"] in ("Conv", "Gemm")}
        assert "check_half" in ev
    assert (art.path / "precision.html").is_file()
    assert any(line.startswith("per-layer plan: 10 quantizable nodes") for line in lines), lines

    # the best plan, built on its own whatever timing shipped: its graph keeps exactly those nodes in fp32,
    # each mapped to its PyTorch module, and it keeps the accuracy all-INT8 loses on the whole split
    plan = tmp_path / "best.json"
    plan.write_text(json.dumps({"keep_fp32": best["keep_fp32"]}))
    mixed = engine_from_onnx(digits_onnx.path, tmp_path / "best", precision="int8", calib_data=str(dim_calibration),
                             precision_plan=str(plan))
    doc = mixed.card.sections["plan"]
    assert mixed.card.sections["precision"] == "mixed" and doc["keep_fp32"] == best["keep_fp32"]
    assert all(n["module"] is not None for n in doc["nodes"])
    kept_compute = {n["onnx_node"] for n in doc["nodes"] if n["op_type"] in ("Conv", "Gemm")}
    assert kept_compute and _float_nodes(mixed.payload_path) == kept_compute
    digits = load_dataset("digits")
    fp32 = engine_from_onnx(digits_onnx.path, tmp_path / "fp32", precision="fp32")
    with open_deployed(mixed) as m, open_deployed(fp32) as f:
        mixed_acc, fp32_acc = ((e.predict(digits.x_test).argmax(1) == digits.y_test).mean() for e in (m, f))
    assert (fp32_acc - mixed_acc) * 100 <= BUDGET, (fp32_acc, mixed_acc)


def test_plan_file_is_written_into_the_graph(digits_onnx, tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"keep_fp32": ["node_conv2d", "node_linear_1"]}))
    art = engine_from_onnx(digits_onnx.path, tmp_path / "e", precision="int8", precision_plan=str(plan))
    assert art.card.sections["precision"] == "mixed"
    assert _float_nodes(art.payload_path) == {"node_conv2d", "node_linear_1"}
    assert [n["module"] for n in art.card.sections["plan"]["nodes"]] == ["features.0", "classifier.4"]
    # the saved plan builds the same assignment again (e.g. for another backend)
    again = engine_from_onnx(digits_onnx.path, tmp_path / "again", precision="int8", precision_plan=str(art.path))
    assert _float_nodes(again.payload_path) == {"node_conv2d", "node_linear_1"}


def test_plan_naming_a_missing_node_fails_loudly(digits_onnx, tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"keep_fp32": ["node_conv2d_9"]}))
    out = tmp_path / "e"
    result = CliRunner().invoke(cli, ["build", str(digits_onnx.path), "-o", str(out), "--precision", "int8",
                                      "--precision-plan", str(plan)])
    assert result.exit_code == 2, result.output
    message = result.output.strip().splitlines()
    assert len(message) == 1 and "node_conv2d_9" in message[0] and "did you mean" in message[0], message
    assert not out.exists()
    result = CliRunner().invoke(cli, ["build", str(digits_onnx.path), "-o", str(out), "--precision", "fp32",
                                      "--precision-plan", str(plan)])
    assert result.exit_code == 2 and "--precision-plan applies to --precision int8" in result.output
