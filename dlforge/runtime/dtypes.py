"""One map between the dtype names of ONNX, ONNX Runtime, TensorRT and numpy."""

from __future__ import annotations

import numpy as np

# ONNX Runtime's "tensor(float)" spelling -> numpy dtype name.
ORT_TO_NUMPY = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}

# TensorRT's DataType member names -> numpy dtype name.
TRT_TO_NUMPY = {
    "FLOAT": "float32",
    "HALF": "float16",
    "BF16": "bfloat16",
    "INT8": "int8",
    "UINT8": "uint8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
}


def numpy_dtype(name: str) -> np.dtype:
    """numpy dtype for a name in any of the spellings above."""
    name = ORT_TO_NUMPY.get(name, TRT_TO_NUMPY.get(name, name))
    return np.dtype(name)
