"""The visualize probe: exemplars, activation maximization beating them, and the INT8 engine measured on its own graph."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from dlforge.adversarial.audit import run_audit
from dlforge.adversarial.features import feature_values


@pytest.fixture(scope="module")
def digits_visualized(digits_engines):
    engines = [digits_engines[p].path for p in ("fp32", "int8")]
    return run_audit(engines, attacks=("visualize:units=3:classes=2:dream_steps=5",), samples=50, progress=False)


def _int8_ceiling(path) -> float:
    """The largest value the INT8 graph can give its penultimate value (a DequantizeLinear's output): (255 - zero
    point) * scale, uint8 activations."""
    proto = onnx.load(str(path / "model.onnx"))
    name = feature_values(proto)[0]
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    q = next(n for n in proto.graph.node if n.op_type == "DequantizeLinear" and name in n.output)
    scale, zero = float(inits[q.input[1]]), int(inits[q.input[2]])
    return (255 - zero) * scale


def test_unit_visualizations_activate_their_unit_more_than_the_best_natural_exemplar(digits_visualized):
    section = digits_visualized.probes["visualize"]
    units = [r for r in section["rows"] if r["kind"] == "unit" and r["target"] == "fp32"]
    assert len(units) == 3
    for row in units:
        assert row["visualization"] > row["best_exemplar"], row
        assert len(row["exemplars"]) == 9 and len(set(row["exemplars"])) == 9
    groups = [g["group"] for g in section["gallery"]]
    first = next(i for i, g in enumerate(section["gallery"]) if g["title"] == "visualization")
    assert section["gallery"][0]["title"] == "exemplar 1" and first == 3  # exemplars shown before the visualization
    assert any("DeepDream" in g for g in groups) and any("classes" in g for g in groups)


def test_the_int8_comparison_reads_the_int8_engines_own_graph(digits_visualized, digits_engines):
    rows = digits_visualized.probes["visualize"]["rows"]
    fp32 = {r["unit"]: r for r in rows if r["kind"] == "unit" and r["target"] == "fp32"}
    int8 = {r["unit"]: r for r in rows if r["kind"] == "unit" and r["target"] == "int8"}
    assert set(fp32) == set(int8)
    ceiling = _int8_ceiling(digits_engines["int8"].path)
    # measured by ONNX Runtime on the INT8 graph, activations cannot pass its quantization range; the fp32
    # visualizations (same units, optimized without that clip) do
    assert all(r["visualization"] <= ceiling + 1e-4 for r in int8.values())
    assert any(r["visualization"] > ceiling for r in fp32.values())
    for unit, row in int8.items():
        assert 0.0 <= row["exemplar_overlap"] <= 1.0 and fp32[unit]["exemplar_overlap"] is None
        overlap = len(set(row["exemplars"]) & set(fp32[unit]["exemplars"])) / 9
        assert row["exemplar_overlap"] == pytest.approx(overlap)
    assert np.isfinite([r["visualization"] for r in rows]).all()
