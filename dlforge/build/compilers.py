"""Backends as compilers: turn the parent ONNX into a payload for one precision, and open it.

Each compiler has the same small shape (``precisions``, ``payload``, ``compile``, ``open``), so the
build stage treats ONNX Runtime and TensorRT alike; the folder tells which backends exist.
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from pathlib import Path

from dlforge.artifact import Artifact, Card, ModelInfo
from dlforge.errors import InputError, require
from dlforge.runtime.base import Session


class Compiler(ABC):
    precisions: tuple[str, ...] = ()
    payload = ""

    @abstractmethod
    def compile(self, precision: str, src: Path, dst: Path, **calibration) -> dict:
        """Write the payload for ``precision`` to ``dst``; return what the card records of it."""

    @abstractmethod
    def open(self, path: Path, details: dict, info: ModelInfo) -> Session:
        """A Session over a freshly compiled payload, for evaluation before it is saved."""

    def card_sections(self, details: dict) -> dict:
        return {}

    def card_env(self, details: dict) -> dict:
        return {}


def _quantize(src: Path, dst: Path, calib_x, calib_method, per_channel, static_batch) -> dict:
    from dlforge.build.ort import quantize_int8

    return quantize_int8(src, dst, calib_x, method=calib_method, per_channel=per_channel, static_batch=static_batch)


class OrtCompiler(Compiler):
    """ONNX Runtime on CPU: the engine is an ONNX file (offline-optimized fp32, or INT8 QDQ)."""

    precisions = ("fp32", "int8")
    payload = "model.onnx"

    def compile(self, precision, src, dst, **calibration):
        from dlforge.build.ort import optimize_fp32

        if precision == "fp32":
            return optimize_fp32(src, dst)
        return _quantize(src, dst, **calibration)

    def open(self, path, details, info):
        from dlforge.runtime.ort import OrtSession

        return OrtSession(path, model=info)


class TrtCompiler(Compiler):
    """TensorRT: precision is applied to the ONNX graph first, then built strongly typed."""

    precisions = ("fp32", "fp16", "int8")
    payload = "model.engine"

    def __init__(self, inputs, *, min_batch, opt_batch, max_batch, shapes, workspace_mib, optimization_level, source):
        from dlforge.tensorrt_plan import (check_optimization_level, profile_from_batches,
                                           profiles_from_shape_specs, workspace_bytes)

        require("tensorrt", "tensorrt", "building a TensorRT engine")
        if shapes:
            self.profiles = profiles_from_shape_specs(*shapes)
            names = {t.name for t in inputs}
            unknown = [p.name for p in self.profiles if p.name not in names]
            if unknown:
                raise InputError(f"shapes name {unknown}, but the model's inputs are {sorted(names)}")
        else:
            self.profiles = [profile_from_batches(t.name, t.shape, min_batch, opt_batch, max_batch) for t in inputs]
        workspace_bytes(workspace_mib)
        check_optimization_level(optimization_level)
        self.workspace_mib, self.optimization_level, self.source = workspace_mib, optimization_level, source

    def compile(self, precision, src, dst, **calibration):
        from dlforge.build.tensorrt import build_engine, convert_fp16
        from dlforge.tensorrt_plan import precision_plan

        plan = precision_plan(precision)
        graph = dst.with_suffix(".onnx")
        if plan.onnx_transform == "fp16":
            transform = convert_fp16(src, graph)
        elif plan.onnx_transform == "int8-qdq":
            transform = _quantize(src, graph, **calibration)
        else:
            shutil.copyfile(src, graph)
            transform = {}
        built = build_engine(graph, dst, self.profiles, plan, workspace_mib=self.workspace_mib,
                             optimization_level=self.optimization_level)
        return {**transform, **built}

    def open(self, path, details, info):
        from dlforge.runtime.tensorrt import TrtSession

        card = Card(kind="engine", payload=path.name, model=info, params={}, env=self.card_env(details),
                    parent={"path": self.source, "sha256": None}, sections=self.card_sections(details))
        return TrtSession(Artifact(path=path.parent, card=card))

    def card_sections(self, details):
        return {"profiles": details["profiles"]}

    def card_env(self, details):
        keys = ("tensorrt", "gpu", "compute_capability", "cuda_driver", "cuda_runtime")
        return {k: details[k] for k in keys if k in details}
