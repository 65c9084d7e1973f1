"""dlforge.onnx_torch op by op: each case of the op table (tests/onnx_cases.py) on a small hand-built graph, with
ONNX Runtime as the reference."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from tests.onnx_cases import CASES, Case, assert_close, make_model, run_ort, run_torch


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_op_matches_onnxruntime(case: Case):
    model = make_model(case.nodes, case.x, case.consts, opset=case.opset, ir_version=3 if case.opset <= 8 else 9)
    if case.name.startswith("IR 3"):
        model.graph.input.extend([helper.make_tensor_value_info("c", TensorProto.FLOAT, [4])])
    expected, ours = run_ort(model, case.x), run_torch(model, case.x)
    if np.issubdtype(expected.dtype, np.floating):
        assert_close(ours, expected)
    else:
        assert ours.shape == expected.shape
        np.testing.assert_array_equal(ours, expected.astype(ours.dtype))
