"""TensorRT engines: ONNX parser -> strongly typed network -> serialized engine.

Thin by design: every decision (profiles, precision plan, flags, workspace, cache keys) is made in
:mod:`.decisions` and only applied here. Precision is already in the ONNX graph this receives
(fp16 casts or INT8 QDQ nodes), so the same code path serves TensorRT 10 and 11.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from dlforge.artifact import sha256_file, write_atomic
from dlforge.backends.base import BACKENDS, Backend
from dlforge.backends.tensorrt.options import TensorRTBuildOptions
from dlforge.backends.tensorrt.decisions import (
    PrecisionPlan,
    ShapeProfile,
    check_optimization_level,
    check_tensorrt_version,
    describe_parser_errors,
    engine_cache_key,
    network_flags,
    timing_cache_path,
    workspace_bytes,
)
from dlforge.errors import InputError, MissingDependency, StageFailed, require

DEFAULT_MAX_BATCH = 64


def cache_root() -> Path:
    home = os.environ.get("DLFORGE_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "dlforge")
    return Path(home) / "tensorrt"


def load_cached_engine(cached: Path, destination: Path) -> bool:
    """Copy a cached engine to ``destination`` if its bytes still match the sha256 stored beside it.

    A cache entry without its digest, or whose bytes changed since it was stored (disk corruption,
    tampering), is not used: the engine is rebuilt and the entry replaced.
    """
    digest = cached.with_suffix(".sha256")
    if not (cached.is_file() and digest.is_file()) or cached.is_symlink():
        return False
    data = cached.read_bytes()
    if hashlib.sha256(data).hexdigest() != digest.read_text(encoding="ascii").strip():
        return False
    destination.write_bytes(data)
    return True


def store_cached_engine(cached: Path, data: bytes) -> None:
    """Store an engine in the cache with its sha256 beside it (digest written last)."""
    write_atomic(cached, data)
    write_atomic(cached.with_suffix(".sha256"), hashlib.sha256(data).hexdigest().encode("ascii"))


def build_engine(onnx_path: Path, engine_path: Path, profiles: list[ShapeProfile], plan: PrecisionPlan, *,
                 workspace_mib: int | None = None, optimization_level: int = 3) -> dict:
    """Compile ``onnx_path`` into a serialized engine at ``engine_path``; returns what the card records.

    Engines are cached under ``$DLFORGE_HOME/tensorrt/engines`` by a content hash of everything that
    determines them; timing caches are kept per (compute capability, TensorRT version).
    """
    trt = require("tensorrt", "tensorrt", "building a TensorRT engine")
    from dlforge.backends.tensorrt.cuda_mem import device_info

    check_tensorrt_version(trt.__version__)
    workspace = workspace_bytes(workspace_mib)
    check_optimization_level(optimization_level)
    device = device_info()
    key = engine_cache_key(sha256_file(onnx_path), profiles, plan, trt_version=trt.__version__, gpu=device["gpu"],
                           compute_capability=device["compute_capability"], workspace=workspace,
                           optimization_level=optimization_level)
    cached = cache_root() / "engines" / f"{key}.engine"
    record = {"tensorrt": trt.__version__, **device, "profiles": [p.to_dict() for p in profiles],
              "plan": plan.to_dict(), "workspace_bytes": workspace, "optimization_level": optimization_level,
              "cache_key": key}
    if load_cached_engine(cached, engine_path):
        return {**record, "cache_hit": True, "build_seconds": 0.0}

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(network_flags(trt.__version__, int(typed) if typed is not None else None))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = []
        for i in range(parser.num_errors):
            e = parser.get_error(i)
            errors.append({"desc": e.desc(), "node": e.node(),
                           "node_name": e.node_name() if hasattr(e, "node_name") else None,
                           "op": e.node_operator() if hasattr(e, "node_operator") else None})
        raise StageFailed(describe_parser_errors(errors))
    config = builder.create_builder_config()
    if workspace:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    config.builder_optimization_level = optimization_level
    profile = builder.create_optimization_profile()
    for p in profiles:
        profile.set_shape(p.name, p.min, p.opt, p.max)
    config.add_optimization_profile(profile)
    tcache_path = timing_cache_path(cache_root() / "timing", device["compute_capability"], trt.__version__)
    tcache = config.create_timing_cache(tcache_path.read_bytes() if tcache_path.is_file() else b"")
    config.set_timing_cache(tcache, ignore_mismatch=False)

    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise StageFailed("TensorRT could not build an engine from this network (see the TensorRT log above); "
                          "try a larger --workspace or another precision")
    engine_path.write_bytes(bytes(serialized))
    write_atomic(tcache_path, bytes(config.get_timing_cache().serialize()))
    store_cached_engine(cached, engine_path.read_bytes())
    return {**record, "cache_hit": False, "build_seconds": round(seconds, 3), "timing_cache": str(tcache_path)}


@BACKENDS.register("tensorrt")
class TrtBackend(Backend):
    """TensorRT: precision is applied to the ONNX graph first (fp16 casts, INT8 QDQ), then built strongly
    typed with one optimization profile."""

    precisions = ("fp32", "fp16", "int8")
    payload = "model.engine"
    extra = "tensorrt"
    triton_platform, triton_file = "tensorrt_plan", "model.plan"
    requires_gpu = True
    options_class = TensorRTBuildOptions

    @classmethod
    def open_engine(cls, artifact, *, threads=None, device="cpu"):
        try:
            from dlforge.backends.tensorrt.session import TrtSession
        except ImportError as exc:
            raise MissingDependency("tensorrt", "tensorrt", "running a TensorRT engine") from exc
        return TrtSession.from_artifact(artifact)

    def __init__(self, options, info):
        super().__init__(options, info)
        from dlforge.backends.tensorrt.decisions import profile_from_batches, profiles_from_shape_specs

        require("tensorrt", "tensorrt", "building a TensorRT engine")
        if self.own.shapes:
            self.profiles = profiles_from_shape_specs(*self.own.shapes)
            names = {t.name for t in info.inputs}
            unknown = [p.name for p in self.profiles if p.name not in names]
            if unknown:
                raise InputError(f"shapes name {unknown}, but the model's inputs are {sorted(names)}")
        else:
            top = options.max_batch or DEFAULT_MAX_BATCH
            self.profiles = [profile_from_batches(t.name, t.shape, options.min_batch, options.opt, top)
                             for t in info.inputs]
        workspace_bytes(self.own.workspace_mib)
        check_optimization_level(self.own.optimization_level)

    def compile(self, precision, src, dst, calibration):
        from dlforge.precision import convert_fp16, quantize_calibrated  # the build's side only
        from dlforge.backends.tensorrt.decisions import precision_plan

        plan = precision_plan(precision)
        graph = dst.with_suffix(".onnx")
        if plan.onnx_transform == "fp16":
            transform = convert_fp16(src, graph)
        elif plan.onnx_transform == "int8-qdq":
            transform = quantize_calibrated(src, graph, calibration, activations="int8")
        else:
            graph.write_bytes(src.read_bytes())
            transform = {}
        built = build_engine(graph, dst, self.profiles, plan, workspace_mib=self.own.workspace_mib,
                             optimization_level=self.own.optimization_level)
        return {**transform, **built}

    def batch_range(self, details):
        first = details["profiles"][0]
        return (first["min"][0], first["max"][0])

    def open(self, path, details, info):
        from dlforge.backends.tensorrt.session import TrtSession

        return TrtSession(path, model=info, precision=details.get("precision"), profiles=details["profiles"],
                          env=self.card_env(details))

    def card_sections(self, details):
        return {"profiles": details["profiles"]}

    def card_env(self, details):
        keys = ("tensorrt", "gpu", "compute_capability", "cuda_driver", "cuda_runtime")
        return {k: details[k] for k in keys if k in details}


__all__ = ["TrtBackend", "build_engine", "load_cached_engine", "store_cached_engine"]
