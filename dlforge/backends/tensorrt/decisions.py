"""The decisions behind a TensorRT build, as pure functions (no TensorRT, no GPU needed).

The thin layers beside it (:mod:`.compile` and :mod:`.session`) only apply what is decided
here, so every decision is tested on any machine:

- optimization profiles from ``--min/--opt/--max-batch`` or a trtexec-style shape spec,
- the precision plan (precision lives in the ONNX graph; networks are strongly typed),
- network creation flags across TensorRT 10 and 11,
- workspace limits, timing-cache and engine-cache keys,
- the engine/GPU compatibility check made before deserializing.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from dlforge.errors import InputError

MIN_TENSORRT = (10, 0)


@dataclass(frozen=True)
class ShapeProfile:
    """min / opt / max shapes of one input, as TensorRT's optimization profile takes them."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def __post_init__(self):
        if not (len(self.min) == len(self.opt) == len(self.max)):
            raise InputError(f"profile for {self.name!r}: min/opt/max shapes have different ranks "
                             f"({self.min}, {self.opt}, {self.max})")
        for lo, mid, hi in zip(self.min, self.opt, self.max):
            if lo < 1:
                raise InputError(f"profile for {self.name!r}: dimensions must be >= 1, got min {self.min}")
            if not lo <= mid <= hi:
                raise InputError(f"profile for {self.name!r}: opt {self.opt} must lie within [min {self.min}, "
                                 f"max {self.max}] in every dimension")

    def contains(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.min) and all(lo <= s <= hi for s, lo, hi in zip(shape, self.min, self.max))

    def to_dict(self) -> dict:
        return {"name": self.name, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, d: dict) -> ShapeProfile:
        return cls(d["name"], tuple(d["min"]), tuple(d["opt"]), tuple(d["max"]))


def profile_from_batches(name: str, shape: tuple, min_batch: int, opt_batch: int, max_batch: int) -> ShapeProfile:
    """A profile that varies only the batch dimension of an input whose other dims are fixed.

    ``shape`` is the input's spec, e.g. ``("batch", 1, 28, 28)``; a static batch pins all three.
    """
    rest = tuple(shape[1:])
    if any(not isinstance(d, int) for d in rest):
        raise InputError(f"input {name!r} has dynamic dimensions beyond the batch {tuple(shape)}; "
                         "give full shapes with --shapes")
    if isinstance(shape[0], int):
        if (min_batch, opt_batch, max_batch) != (shape[0],) * 3 and (min_batch, opt_batch, max_batch) != (1, 1, 1):
            raise InputError(f"input {name!r} has a static batch of {shape[0]}; re-export with --dynamic-batch "
                             "to build a batch range")
        min_batch = opt_batch = max_batch = shape[0]
    return ShapeProfile(name, (min_batch, *rest), (opt_batch, *rest), (max_batch, *rest))


_SPEC = re.compile(r"^\s*([^:]+):(\d+(?:x\d+)*)\s*$")


def parse_shape_spec(spec: str) -> dict[str, tuple[int, ...]]:
    """trtexec's ``name:1x3x224x224,other:1x10`` into ``{name: shape}``."""
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        m = _SPEC.match(part)
        if not m:
            raise InputError(f"cannot read shape {part!r}; expected NAME:DxDxD, e.g. input:8x1x28x28")
        out[m.group(1)] = tuple(int(d) for d in m.group(2).split("x"))
    if not out:
        raise InputError("empty shape spec; expected NAME:DxDxD[,NAME:DxD...]")
    return out


def profiles_from_shape_specs(min_spec: str, opt_spec: str, max_spec: str) -> list[ShapeProfile]:
    mins, opts, maxs = parse_shape_spec(min_spec), parse_shape_spec(opt_spec), parse_shape_spec(max_spec)
    if not (mins.keys() == opts.keys() == maxs.keys()):
        raise InputError(f"--min/--opt/--max shapes name different inputs: {sorted(mins)}, {sorted(opts)}, {sorted(maxs)}")
    return [ShapeProfile(name, mins[name], opts[name], maxs[name]) for name in mins]


@dataclass(frozen=True)
class PrecisionPlan:
    """How a precision is realised: a transform of the ONNX graph, then a strongly typed build."""

    precision: str
    onnx_transform: str  # "none", "fp16" (float16 conversion) or "int8-qdq" (static QDQ quantization)
    strongly_typed: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def precision_plan(precision: str) -> PrecisionPlan:
    """Precision is decided in ONNX, where ONNX Runtime on a CPU can run and measure the same graph;
    TensorRT then builds it strongly typed (no weakly-typed FP16/INT8 builder flags, no calibrators:
    those are deprecated in TensorRT 10 and removed in 11)."""
    transforms = {"fp32": "none", "fp16": "fp16", "int8": "int8-qdq"}
    if precision not in transforms:
        raise InputError(f"TensorRT precision {precision!r} is not one of {', '.join(transforms)}")
    return PrecisionPlan(precision, transforms[precision])


def parse_version(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def check_tensorrt_version(version: str) -> None:
    if parse_version(version)[:2] < MIN_TENSORRT:
        raise InputError(f"TensorRT {version} is too old; dlforge needs TensorRT >= "
                         f"{'.'.join(map(str, MIN_TENSORRT))} (pip install 'dlforge[tensorrt]')")


def network_flags(trt_version: str, strongly_typed_bit: int | None) -> int:
    """``create_network`` flags: STRONGLY_TYPED on TensorRT 10; TensorRT 11 is always strongly typed
    (the flag is deprecated and ignored there, so none is passed)."""
    if parse_version(trt_version)[0] >= 11 or strongly_typed_bit is None:
        return 0
    return 1 << strongly_typed_bit


def workspace_bytes(mib: int | None) -> int | None:
    if mib is None:
        return None
    if mib <= 0:
        raise InputError(f"--workspace must be a positive number of MiB, got {mib}")
    return int(mib) * 2**20


def timing_cache_path(cache_dir: Path, compute_capability: str, trt_version: str) -> Path:
    """Timing caches are valid for one GPU architecture and TensorRT version: key the file by both."""
    return Path(cache_dir) / f"timing-sm{compute_capability.replace('.', '')}-trt{trt_version}.cache"


def engine_cache_key(onnx_sha256: str, profiles: list[ShapeProfile], plan: PrecisionPlan, *, trt_version: str,
                     gpu: str, compute_capability: str, workspace: int | None, optimization_level: int) -> str:
    """Content hash of everything that determines an engine; equal keys may reuse a built engine."""
    blob = json.dumps({
        "onnx": onnx_sha256, "profiles": [p.to_dict() for p in profiles], "plan": plan.to_dict(),
        "tensorrt": trt_version, "gpu": gpu, "sm": compute_capability, "workspace": workspace,
        "optimization_level": optimization_level,
    }, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def check_optimization_level(level: int) -> int:
    if not 0 <= level <= 5:
        raise InputError(f"--builder-optimization-level must be within 0..5, got {level}")
    return level


def check_engine_compatibility(card_env: dict, *, trt_version: str, gpu: str, compute_capability: str,
                               source: str) -> None:
    """Refuse an engine built by another TensorRT version or for another GPU architecture.

    Called with the card alone, *before* deserializing: TensorRT engines are not portable across
    TensorRT versions or compute capabilities, and deserializing a mismatched one fails obscurely.
    """
    built_trt, built_cc = card_env.get("tensorrt"), card_env.get("compute_capability")
    built_gpu = card_env.get("gpu", "an unknown GPU")
    rebuild = f"rebuild it here with: dlforge build {source} --backend tensorrt -o NEW_DIR"
    if built_trt is None or built_cc is None:
        raise InputError(f"the engine card does not say which TensorRT and GPU built it; {rebuild}")
    if built_trt != trt_version:
        raise InputError(f"engine was built by TensorRT {built_trt} on {built_gpu} (sm {built_cc}); this machine "
                         f"runs TensorRT {trt_version} on {gpu} (sm {compute_capability}); {rebuild}")
    if built_cc != compute_capability:
        raise InputError(f"engine was built for {built_gpu} (sm {built_cc}); this GPU is {gpu} "
                         f"(sm {compute_capability}); TensorRT engines do not move between GPU architectures; {rebuild}")


def describe_parser_errors(errors: list[dict]) -> str:
    """One line listing the nodes the ONNX parser could not handle, by name and op type."""
    nodes = [f"{e.get('node_name') or '#' + str(e.get('node', '?'))} ({e.get('op') or '?'})" for e in errors]
    first = errors[0].get("desc", "") if errors else ""
    return (f"TensorRT's ONNX parser failed on {len(errors)} node(s): {', '.join(nodes)}; first error: {first}")
