"""Build stage: onnx artifact -> engine artifact, checked against its parent before it is saved.

The backends it compiles with live in :mod:`dlforge.backends` (one folder each, one registry entry).
"""

from dlforge.backends import BACKENDS, Backend
from dlforge.build.engine import engine_from_onnx
from dlforge.build.options import PRECISIONS, BuildOptions

__all__ = ["BACKENDS", "PRECISIONS", "Backend", "BuildOptions", "engine_from_onnx"]
