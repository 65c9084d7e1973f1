"""Build stage: onnx artifact -> engine artifact, checked against its parent before it is saved."""

from dlforge.build.engine import PRECISIONS, engine_from_onnx

__all__ = ["PRECISIONS", "engine_from_onnx"]
