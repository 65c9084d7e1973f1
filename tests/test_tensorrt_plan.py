"""The TensorRT build and load decisions, tested everywhere (no TensorRT or GPU needed)."""


import pytest

from dlforge.artifact import ArtifactWriter, Card, ModelInfo, TensorSpec
from dlforge.errors import InputError
from dlforge.runtime import open_session
from dlforge.runtime.dtypes import TRT_TO_NUMPY, numpy_dtype
from dlforge.backends.tensorrt.decisions import (
    PrecisionPlan, ShapeProfile, check_engine_compatibility, check_tensorrt_version, describe_parser_errors,
    engine_cache_key, network_flags, parse_shape_spec, precision_plan, profile_from_batches,
    profiles_from_shape_specs, timing_cache_path, workspace_bytes,
)


def test_profile_from_batch_range():
    p = profile_from_batches("input", ("batch", 1, 28, 28), 1, 8, 64)
    assert (p.min, p.opt, p.max) == ((1, 1, 28, 28), (8, 1, 28, 28), (64, 1, 28, 28))
    assert p.contains((32, 1, 28, 28)) and not p.contains((65, 1, 28, 28)) and not p.contains((8, 1, 28))


@pytest.mark.parametrize("lo, opt, hi", [(8, 4, 64), (1, 128, 64), (0, 1, 1)])
def test_profile_validates_opt_within_min_max(lo, opt, hi):
    with pytest.raises(InputError, match="opt .* must lie within|must be >= 1"):
        profile_from_batches("input", ("batch", 3), lo, opt, hi)


def test_static_batch_pins_the_profile_and_refuses_a_range():
    assert profile_from_batches("x", (1, 3), 1, 1, 1).max == (1, 3)
    with pytest.raises(InputError, match="static batch of 1; re-export with --dynamic-batch"):
        profile_from_batches("x", (1, 3), 1, 8, 64)


def test_trtexec_shape_specs():
    assert parse_shape_spec("input:1x3x224x224, mask:1x10") == {"input": (1, 3, 224, 224), "mask": (1, 10)}
    (p,) = profiles_from_shape_specs("input:1x3", "input:4x3", "input:16x3")
    assert p == ShapeProfile("input", (1, 3), (4, 3), (16, 3))
    with pytest.raises(InputError, match="expected NAME:DxDxD"):
        parse_shape_spec("input=1x3")
    with pytest.raises(InputError, match="name different inputs"):
        profiles_from_shape_specs("a:1x3", "b:1x3", "a:1x3")


def test_precision_lives_in_onnx_and_networks_are_strongly_typed():
    assert precision_plan("fp16") == PrecisionPlan("fp16", "fp16", True)
    assert precision_plan("int8").onnx_transform == "int8-qdq"
    assert precision_plan("fp32").onnx_transform == "none"
    with pytest.raises(InputError):
        precision_plan("int4")


def test_network_flags_across_tensorrt_10_and_11():
    assert network_flags("10.7.0", 1) == 2
    assert network_flags("11.0.0", 1) == 0  # always strongly typed; the flag is deprecated
    assert network_flags("10.0.1", None) == 0
    check_tensorrt_version("10.0.1")
    with pytest.raises(InputError, match="too old"):
        check_tensorrt_version("8.6.1")


def test_workspace_and_timing_cache_keys(tmp_path):
    assert workspace_bytes(256) == 256 * 2**20 and workspace_bytes(None) is None
    with pytest.raises(InputError):
        workspace_bytes(0)
    a = timing_cache_path(tmp_path, "9.0", "10.7.0")
    assert a.name == "timing-sm90-trt10.7.0.cache" and a != timing_cache_path(tmp_path, "8.9", "10.7.0")


def test_engine_cache_key_changes_with_every_input():
    p = [profile_from_batches("input", ("batch", 1, 8, 8), 1, 1, 64)]
    base = dict(trt_version="10.7.0", gpu="H100", compute_capability="9.0", workspace=None, optimization_level=3)
    key = engine_cache_key("abc", p, precision_plan("fp16"), **base)
    assert key == engine_cache_key("abc", p, precision_plan("fp16"), **base)
    variants = [
        engine_cache_key("abd", p, precision_plan("fp16"), **base),
        engine_cache_key("abc", [profile_from_batches("input", ("batch", 1, 8, 8), 1, 1, 32)], precision_plan("fp16"), **base),
        engine_cache_key("abc", p, precision_plan("int8"), **base),
        engine_cache_key("abc", p, precision_plan("fp16"), **{**base, "trt_version": "10.8.0"}),
        engine_cache_key("abc", p, precision_plan("fp16"), **{**base, "compute_capability": "8.9"}),
        engine_cache_key("abc", p, precision_plan("fp16"), **{**base, "optimization_level": 5}),
    ]
    assert len({key, *variants}) == 7


def test_compatibility_check_names_both_sides_and_the_rebuild_command():
    env = {"tensorrt": "10.7.0", "gpu": "NVIDIA H100", "compute_capability": "9.0"}
    check_engine_compatibility(env, trt_version="10.7.0", gpu="NVIDIA H100", compute_capability="9.0", source="runs/x/onnx")
    with pytest.raises(InputError, match=r"built by TensorRT 10.7.0 .* runs TensorRT 11.0.0 .*dlforge build runs/x/onnx --backend tensorrt"):
        check_engine_compatibility(env, trt_version="11.0.0", gpu="NVIDIA H100", compute_capability="9.0", source="runs/x/onnx")
    with pytest.raises(InputError, match=r"built for NVIDIA H100 \(sm 9.0\); this GPU is NVIDIA L4 \(sm 8.9\)"):
        check_engine_compatibility(env, trt_version="10.7.0", gpu="NVIDIA L4", compute_capability="8.9", source="o")
    with pytest.raises(InputError, match="does not say which TensorRT"):
        check_engine_compatibility({}, trt_version="10.7.0", gpu="g", compute_capability="9.0", source="o")


def test_parser_errors_list_nodes_by_name_and_op():
    msg = describe_parser_errors([{"desc": "unsupported", "node": 3, "node_name": "/attn/Einsum", "op": "Einsum"},
                                  {"desc": "x", "node": 7, "node_name": None, "op": "NonZero"}])
    assert "2 node(s): /attn/Einsum (Einsum), #7 (NonZero)" in msg


def test_trt_dtype_map():
    assert numpy_dtype(TRT_TO_NUMPY["HALF"]).itemsize == 2 and numpy_dtype("FLOAT").name == "float32"
    assert numpy_dtype("tensor(int64)").name == "int64"


def test_crafted_tensorrt_card_is_refused_before_anything_is_deserialized(tmp_path):
    """An engine card from another machine: without TensorRT here, the error names the extra; with
    TensorRT, the compatibility check refuses it before the (garbage) payload is deserialized."""
    with ArtifactWriter(tmp_path / "engine") as w:
        w.file("model.engine").write_bytes(b"not an engine")
        info = ModelInfo("lenet", "classification", (TensorSpec("input", ("batch", 1, 8, 8), "float32"),),
                         (TensorSpec("logits", ("batch", 10), "float32"),))
        w.commit(Card(kind="engine", payload="model.engine", model=info, params={},
                      env={"tensorrt": "9.9.9", "gpu": "Imaginary GPU", "compute_capability": "1.0"},
                      sections={"backend": "tensorrt", "precision": "fp16", "profiles": []}))

    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(InputError, match=r"pip install 'dlforge\[tensorrt\]'"):
            open_session(tmp_path / "engine")
        return
    with pytest.raises(InputError, match="engine was built by TensorRT 9.9.9"):
        open_session(tmp_path / "engine")
