"""The converter's building blocks: a parsed ONNX node, its attributes and tensors, and the op registry."""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
import torch
from onnx import TensorProto, numpy_helper

from dlforge.errors import InputError
from dlforge.onnx_info import QUANTIZED_OPS


MS = "com.microsoft"
FP32_ATOL = 1e-4
QUANTIZED_TOP1 = 0.995
_CONTROL_FLOW = {"If", "Loop", "Scan", "SequenceMap"}
_QUANTIZED_OPS = QUANTIZED_OPS  # a quantized graph's match against its engine is judged on top-1
_CONV_OPS = {"Conv", "FusedConv", "ConvTranspose"}

_DTYPES = {
    TensorProto.FLOAT: torch.float32, TensorProto.DOUBLE: torch.float64, TensorProto.FLOAT16: torch.float16,
    TensorProto.BFLOAT16: torch.bfloat16, TensorProto.INT8: torch.int8, TensorProto.UINT8: torch.uint8,
    TensorProto.INT16: torch.int16, TensorProto.UINT16: torch.uint16, TensorProto.INT32: torch.int32,
    TensorProto.UINT32: torch.uint32, TensorProto.INT64: torch.int64, TensorProto.UINT64: torch.uint64,
    TensorProto.BOOL: torch.bool,
}
# Integer ranges QuantizeLinear saturates to, by the output's element type.
_QUANT_RANGES = {TensorProto.INT8: (-128, 127), TensorProto.UINT8: (0, 255), TensorProto.INT16: (-32768, 32767),
                 TensorProto.UINT16: (0, 65535), TensorProto.INT4: (-8, 7), TensorProto.UINT4: (0, 15)}
_TORCH_QUANT_TYPES = {torch.int8: TensorProto.INT8, torch.uint8: TensorProto.UINT8, torch.int16: TensorProto.INT16,
                      torch.uint16: TensorProto.UINT16}


class UnsupportedGraph(InputError):
    """The ONNX graph holds something this mapping cannot turn into torch, or the result does not match."""


class _Unmappable(Exception):
    """Raised by an op builder: this node (not the whole op type) cannot be mapped; the reason says why."""


# -- op builders ------------------------------------------------------------------------------------

class _Node:
    """One ONNX node as a builder sees it: attributes parsed once, constant inputs known."""

    def __init__(self, proto: onnx.NodeProto, opset: int, consts: list, op_type: str | None = None):
        self.proto = proto
        self.op_type = op_type or proto.op_type
        self.opset = opset
        self.consts = consts  # per input: a tensor when known at construction, else None
        self.inputs = list(proto.input)
        self.outputs = list(proto.output)
        self.attrs = {a.name: _attribute(a) for a in proto.attribute}
        self.batch_variant: tuple[int, Callable] | None = None

    def attr(self, name: str, default=None):
        return self.attrs.get(name, default)

    def has(self, i: int) -> bool:
        return i < len(self.inputs) and self.inputs[i] != ""

    def const(self, i: int) -> torch.Tensor | None:
        return self.consts[i] if self.has(i) else None

    def ints(self, i: int, attr: str | None = None) -> list[int] | None:
        """A list of ints from attribute ``attr`` (older opsets) or constant input ``i``; None when absent."""
        if attr is not None and attr in self.attrs:
            return list(self.attrs[attr])
        if not self.has(i):
            return None
        value = self.const(i)
        if value is None:
            raise _Unmappable(f"{self.op_type} with its {attr or f'input {i}'} computed at run time")
        return [int(v) for v in value.reshape(-1).tolist()]

    def output_used(self, i: int) -> bool:
        return i < len(self.outputs) and self.outputs[i] != ""


def _attribute(a: onnx.AttributeProto):
    if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
        return a  # control flow; refused before any builder reads it
    value = onnx.helper.get_attribute_value(a)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    if isinstance(value, TensorProto):
        return _tensor(value)
    return value


def _tensor(proto: TensorProto, base_dir: str = "") -> torch.Tensor:
    if proto.data_type not in _DTYPES:
        raise _Unmappable(f"tensor {proto.name!r} of ONNX type {TensorProto.DataType.Name(proto.data_type)}")
    array = numpy_helper.to_array(proto, base_dir)
    return torch.from_numpy(np.array(array, copy=True))


_BUILDERS: dict[tuple[str, str], Callable[[_Node], Callable]] = {}
_MULTI: set[tuple[str, str]] = set()  # ops whose callable returns a tuple, one entry per output


def _op(*names: str, domain: str = "", multi: bool = False):
    def register(builder):
        for name in names:
            _BUILDERS[(domain, name)] = builder
            if multi:
                _MULTI.add((domain, name))
        return builder
    return register


def _fixed(fn: Callable) -> Callable[[_Node], Callable]:
    return lambda node: fn
