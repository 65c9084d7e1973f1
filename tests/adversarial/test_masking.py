"""A gradient-masked model: the audit must not take PGD's high robust accuracy at face value.

The fixture is the digits LeNet with an input quantization in front (``Round(16 x) / 16``): the
digits' pixels are already multiples of 1/16, so clean accuracy does not change, but the gradient
of Round is zero almost everywhere and PGD cannot move (Athalye, Carlini, Wagner, "Obfuscated
Gradients Give a False Sense of Security", ICML 2018, §4.1: shattered gradients). Square needs no
gradients and walks straight through it.
"""

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper, numpy_helper

from dlforge.adversarial.audit import run_audit
from dlforge.cli import cli


def _quantized_front(src: onnx.ModelProto, levels: int) -> onnx.ModelProto:
    """``src`` with ``x -> Round(x * levels) / levels`` before its first node."""
    model = onnx.ModelProto()
    model.CopyFrom(src)
    graph = model.graph
    name = graph.input[0].name
    for node in graph.node:
        node.input[:] = [f"{name}_q" if i == name else i for i in node.input]
    scale = numpy_helper.from_array(np.array(levels, dtype=np.float32), "masking_levels")
    graph.initializer.append(scale)
    front = [helper.make_node("Mul", [name, "masking_levels"], [f"{name}_scaled"]),
             helper.make_node("Round", [f"{name}_scaled"], [f"{name}_rounded"]),
             helper.make_node("Div", [f"{name}_rounded", "masking_levels"], [f"{name}_q"])]
    for i, node in enumerate(front):
        graph.node.insert(i, node)
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def masked_onnx(digits_onnx, tmp_path_factory):
    path = tmp_path_factory.mktemp("masked") / "masked.onnx"
    onnx.save(_quantized_front(onnx.load(digits_onnx.payload_path), 16), path)
    return path


@pytest.fixture(scope="module")
def masked_audit(masked_onnx):
    return run_audit([masked_onnx], data="digits", attacks=("pgd", "square"), eps=(0.0, 0.3), samples=150,
                     pgd_steps=20, square_queries=300, progress=False)


def test_pgd_reports_high_robust_accuracy_and_square_does_not(masked_audit):
    acc = {r["attack"]: r["robust_accuracy"] for r in masked_audit.rows if r["eps"] == 0.3}
    clean = masked_audit.clean_accuracy
    assert clean >= 0.9
    assert acc["pgd"] >= 0.5 * clean, acc  # the masked gradient stops PGD ...
    assert acc["square"] <= acc["pgd"] - 0.3, acc  # ... and not the query attack


def test_the_audit_flags_the_masking(masked_audit):
    status = {c["name"]: c for c in masked_audit.checks}
    masking = next(c for n, c in status.items() if n.startswith("query attack"))
    assert masking["status"] == "fail" and masking["passed"] is False, masking
    assert "square" in masking["detail"] and "pgd" in masking["detail"]
    grads = next(c for n, c in status.items() if n.startswith("input gradients"))
    assert grads["status"] == "fail"  # all-zero gradients: the second symptom


def test_the_unmasked_model_passes_the_same_check(digits_onnx):
    report = run_audit([digits_onnx.payload_path], data="digits", attacks=("pgd", "square"), eps=(0.0, 0.3),
                       samples=150, pgd_steps=20, square_queries=300, progress=False)
    masking = next(c for c in report.checks if c["name"].startswith("query attack"))
    assert masking["status"] == "pass", masking


def test_masking_fails_the_cli_gate_and_na_is_not_pass(masked_onnx, tmp_path):
    """``dlforge audit`` on the masked model: the failed check shows, and checks with nothing to judge
    say n/a (passed: null), never pass."""
    out = tmp_path / "audit"
    result = CliRunner().invoke(cli, ["audit", str(masked_onnx), "--data", "digits", "--attacks", "square",
                                      "--eps", "0.3", "--samples", "60", "--square-queries", "50", "-o", str(out),
                                      "--json"])
    assert result.exit_code == 0, result.output
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    na = {n for n, c in checks.items() if c["status"] == "n/a"}
    assert any(n.startswith("white-box accuracy at eps = full range") for n in na)  # no gradient attack ran
    assert any(n.startswith("robust accuracy does not increase") for n in na)  # one eps: no curve to judge
    assert all(checks[n]["passed"] is None for n in na)
