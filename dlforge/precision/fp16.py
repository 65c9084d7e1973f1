"""fp16: the graph's float tensors cast to float16, float32 inputs and outputs kept (TensorRT's fp16 build)."""

from __future__ import annotations

from pathlib import Path

from dlforge.errors import require


def convert_fp16(src: Path, dst: Path) -> dict:
    """Cast the graph's float tensors to float16, keeping float32 inputs and outputs."""
    onnx = require("onnx", "toolkit", "fp16 conversion")
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))
    return {"format": "float16 graph, float32 I/O"}
