"""Build stage: onnx artifact -> engine artifact, checked against its parent before it is saved.

One module per backend (``ort``, ``tensorrt``), each registered in :data:`BACKENDS`.
"""

from dlforge.build.backends import BACKENDS, Backend
from dlforge.build.engine import engine_from_onnx
from dlforge.build.options import PRECISIONS, BuildOptions

__all__ = ["BACKENDS", "PRECISIONS", "Backend", "BuildOptions", "engine_from_onnx"]
