"""An ONNX graph as a differentiable ``torch.nn.Module``: white-box attacks on the deployed graph itself.

The audit's gradient attacks (FGSM, PGD) normally run on the PyTorch source model. What ships is
something else: an ONNX Runtime-optimized fp32 engine with fused com.microsoft ops, an INT8 QDQ
engine, or a third-party ``.onnx``. :func:`torch_module_from_onnx` maps such a graph, op by op, onto
torch so the attack's gradients are those of the deployed graph, and :func:`match_engine` proves the
mapping against the engine before anyone trusts an attack run on it.

Why our own mapping: onnx2torch imports torchvision, which has no CPU build here; and it maps neither
ONNX Runtime's fused ops nor QDQ / QOperator INT8 graphs with straight-through gradients.

How the module runs:

- Every value that does not depend on the input (initializers, ``Constant``, shape arithmetic on
  constants, the dequantized INT8 weights) is computed once at construction and kept as a buffer,
  never a trainable parameter. What is left is a list of ``(bound torch callable, input slots,
  output slots)`` run in order; attributes are parsed once, not per call. Steps that do not lead to
  the first output are dropped. Two patterns ONNX Runtime leaves unfused on 3-D inputs run as one
  torch call (``MatMul`` + bias ``Add`` as ``F.linear``, GELU written with ``Erf`` as ``F.gelu``),
  and conv graphs keep their weights channels-last, as the PyTorch model under attack does
  (:mod:`dlforge.adversarial.attacks.torch_model`): PGD on a converted LeNet runs as fast as on its source.
- ``QuantizeLinear``/``DequantizeLinear`` compute exactly what ONNX defines (``x / scale``, round
  half to even, add the zero point, saturate; per tensor or per ``axis``). Quantized values travel
  as float tensors holding the integer levels. The backward pass is straight-through (BPDA:
  Athalye, Carlini & Wagner, "Obfuscated Gradients Give a False Sense of Security", ICML 2018,
  https://arxiv.org/abs/1802.00420) for the rounding, and exact for the saturation: a
  ``QuantizeLinear -> DequantizeLinear`` pair passes the gradient where the value lies inside the
  representable range and stops it where the forward clipped (as PyTorch's fake-quantize backward
  does), a lone ``QuantizeLinear`` scales it by ``1 / scale`` as well. Rounding has a zero gradient
  almost everywhere, so without the straight-through part no gradient attack could move an INT8
  engine; without the clip mask the gradient would be that of the network without its ReLUs, which
  ONNX Runtime's quantizer folds into the quantization range (on a CIFAR ResNet-20 that gradient has
  cosine ~0 with the fp32 graph's).
- A graph exported with a static batch (``[1, 1, 28, 28]``, ``Reshape`` to ``[1, 256]``) still
  takes any batch: a ``Reshape`` whose target starts with the static batch and whose input's leading
  dimension carried it takes the batch from its input. A batched run is compared with per-sample
  runs at construction; where they differ (a batch baked in elsewhere), the module runs the graph
  per group of ``static_batch`` samples under ``torch.func.vmap`` instead.

The QOperator form of INT8 graphs (``QLinearConv``, ``QLinearMatMul``, com.microsoft ``QLinearAdd`` ...)
is mapped in :mod:`dlforge.onnx_qoperator`, imported at the end of this module, with the same
straight-through rule.

Left out (:class:`UnsupportedGraph` names every one in a single message): control flow (``If``,
``Loop``, ``Scan``), ``Resize``, ``GRU``/``RNN``, LSTM
peepholes / clip / sequence_lens / layout 1, ``FusedMatMul`` with ``transBatch*``, MaxPool's
``Indices``, float8 and blocked quantization, and any op not registered in ``_BUILDERS`` below.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, numpy_helper

from dlforge.artifact import is_artifact, open_artifact
from dlforge.errors import InputError
from dlforge.onnx_external import check_external_data
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


for _name, _fn in {
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Neg": torch.neg, "Abs": torch.abs,
    "Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Erf": torch.erf, "Sqrt": torch.sqrt,
    "Exp": torch.exp, "Log": torch.log, "Reciprocal": torch.reciprocal, "Floor": torch.floor, "Ceil": torch.ceil,
    "Round": torch.round, "Sign": torch.sign, "Sin": torch.sin, "Cos": torch.cos, "Softsign": F.softsign,
    "Softplus": F.softplus, "Mish": F.mish, "HardSwish": F.hardswish, "MatMul": torch.matmul,
    "Equal": torch.eq, "Less": torch.lt, "LessOrEqual": torch.le, "Greater": torch.gt, "GreaterOrEqual": torch.ge,
    "Not": torch.logical_not, "And": torch.logical_and, "Or": torch.logical_or, "Xor": torch.logical_xor,
    "Where": torch.where,
}.items():
    _op(_name)(_fixed(_fn))
_op("Identity")(_fixed(lambda x: x))
_op("Max")(_fixed(lambda *xs: reduce(torch.maximum, xs)))
_op("Min")(_fixed(lambda *xs: reduce(torch.minimum, xs)))
_op("Sum")(_fixed(lambda *xs: reduce(torch.add, xs)))
_op("Mean")(_fixed(lambda *xs: reduce(torch.add, xs) / len(xs)))
_op("Size")(_fixed(lambda x: torch.tensor(x.numel(), dtype=torch.int64, device=x.device)))
_op("GlobalAveragePool")(_fixed(lambda x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True)))
_op("GlobalMaxPool")(_fixed(lambda x: x.amax(dim=tuple(range(2, x.dim())), keepdim=True)))


@_op("Div")
def _div(node):
    return lambda a, b: a / b if a.is_floating_point() else torch.div(a, b, rounding_mode="trunc")


@_op("Pow")
def _pow(node):
    return lambda a, b: torch.pow(a, b).to(a.dtype)


@_op("Mod")
def _mod(node):
    return torch.fmod if node.attr("fmod", 0) else torch.remainder


@_op("Einsum")
def _einsum(node):
    equation = node.attr("equation")
    return lambda *xs: torch.einsum(equation, *xs)


def _activation(name: str, alpha: float | None = None, beta: float | None = None,
                gamma: float | None = None) -> Callable:
    """An activation by its ONNX name, with ONNX's default parameters (what fused ops carry)."""
    def pick(value, default):
        return default if value is None else value
    acts = {
        "Relu": lambda: torch.relu,
        "Sigmoid": lambda: torch.sigmoid,
        "Tanh": lambda: torch.tanh,
        "Softsign": lambda: F.softsign,
        "LeakyRelu": lambda: (lambda x, a=pick(alpha, 0.01): F.leaky_relu(x, a)),
        "Elu": lambda: (lambda x, a=pick(alpha, 1.0): F.elu(x, a)),
        "Celu": lambda: (lambda x, a=pick(alpha, 1.0): F.celu(x, a)),
        "Selu": lambda: (lambda x, a=pick(alpha, 1.67326319217681884765625),
                         g=pick(gamma, 1.05070102214813232421875): g * torch.where(x > 0, x, a * (torch.exp(x) - 1))),
        "HardSigmoid": lambda: (lambda x, a=pick(alpha, 0.2), b=pick(beta, 0.5): torch.clamp(a * x + b, 0, 1)),
        "ThresholdedRelu": lambda: (lambda x, a=pick(alpha, 1.0): torch.where(x > a, x, torch.zeros_like(x))),
        "ScaledTanh": lambda: (lambda x, a=pick(alpha, 1.0), b=pick(beta, 1.0): a * torch.tanh(b * x)),
        "ParametricSoftplus": lambda: (lambda x, a=pick(alpha, 1.0), b=pick(beta, 1.0): a * F.softplus(b * x)),
        "Clip": lambda: (lambda x, lo=pick(alpha, -math.inf), hi=pick(beta, math.inf): torch.clamp(x, lo, hi)),
    }
    if name not in acts:
        raise _Unmappable(f"activation {name}")
    return acts[name]()


for _name in ("LeakyRelu", "Elu", "Celu", "Selu", "HardSigmoid", "ThresholdedRelu"):
    _op(_name)(lambda node, name=_name: _activation(name, node.attr("alpha"), node.attr("beta"), node.attr("gamma")))


@_op("PRelu")
def _prelu(node):
    return lambda x, slope: torch.where(x < 0, x * slope, x)


@_op("Gelu")
def _gelu(node):
    approximate = node.attr("approximate", "none")
    return lambda x: F.gelu(x, approximate=approximate)


@_op("Gelu", domain=MS)
def _ms_gelu(node):
    return F.gelu


@_op("FastGelu", domain=MS)
def _fast_gelu(node):
    return lambda x, bias=None: F.gelu(x if bias is None else x + bias, approximate="tanh")


@_op("BiasGelu", domain=MS)
def _bias_gelu(node):
    return lambda x, bias: F.gelu(x + bias)


@_op("QuickGelu", domain=MS)
def _quick_gelu(node):
    alpha = node.attr("alpha", 1.702)
    return lambda x: x * torch.sigmoid(alpha * x)


@_op("Clip")
def _clip(node):
    if node.opset < 11:
        lo, hi = node.attr("min", -math.inf), node.attr("max", math.inf)
        return lambda x: torch.clamp(x, lo, hi)
    return lambda x, lo=None, hi=None: torch.clamp(x, lo, hi) if lo is not None or hi is not None else x


@_op("Cast")
def _cast(node):
    dtype = _DTYPES.get(node.attr("to"))
    if dtype is None:
        raise _Unmappable(f"Cast to ONNX type {node.attr('to')}")
    return lambda x: x.to(dtype)


@_op("CastLike")
def _cast_like(node):
    return lambda x, like: x.to(like.dtype)


@_op("Dropout", multi=True)
def _dropout(node):
    # An engine runs in inference mode: Dropout passes its input through (its mask, if read, is all true).
    if node.output_used(1):
        return lambda x, *_: (x, torch.ones_like(x, dtype=torch.bool))
    return lambda x, *_: (x, None)


@_op("Constant")
def _constant(node):
    for key in ("value", "value_float", "value_int", "value_floats", "value_ints"):
        if key in node.attrs:
            value = node.attrs[key]
            tensor = value if isinstance(value, torch.Tensor) else torch.tensor(
                value, dtype=torch.float32 if "float" in key else torch.int64)
            return lambda: tensor
    raise _Unmappable("Constant holding strings or a sparse tensor")


@_op("ConstantOfShape")
def _constant_of_shape(node):
    value = node.attr("value", torch.zeros(1, dtype=torch.float32)).reshape(())
    return lambda shape: value.to(shape.device).expand(shape.tolist()).contiguous()


@_op("Shape")
def _shape(node):
    start, end = node.attr("start", 0), node.attr("end")
    return lambda x: torch.tensor(x.shape[start:end], dtype=torch.int64, device=x.device)


@_op("Range")
def _range(node):
    return lambda start, limit, delta: torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype,
                                                    device=start.device)


def _softmax_like(fn: Callable) -> Callable[[_Node], Callable]:
    def build(node):
        if node.opset >= 13:
            axis = node.attr("axis", -1)
            return lambda x: fn(x, axis)
        axis = node.attr("axis", 1)  # before opset 13: over the input coerced to 2-D at axis
        return lambda x: fn(x.reshape(math.prod(x.shape[:axis]), -1), -1).reshape(x.shape)
    return build


_op("Softmax")(_softmax_like(torch.softmax))
_op("LogSoftmax")(_softmax_like(torch.log_softmax))


# -- shapes and indexing ----------------------------------------------------------------------------

def _resolve_shape(x: torch.Tensor, target: list[int], allowzero: int) -> list[int]:
    if allowzero:
        return target
    return [x.shape[i] if d == 0 else d for i, d in enumerate(target)]


@_op("Reshape")
def _reshape(node):
    allowzero = node.attr("allowzero", 0)
    target = node.ints(1, "shape") if node.const(1) is not None or "shape" in node.attrs else None
    if target is None:
        return lambda x, shape=None: x.reshape(_resolve_shape(x, shape.tolist(), allowzero))
    if target and target[0] > 0:  # for a static-batch graph: the batch taken from the input instead
        node.batch_variant = (target[0], lambda x, shape=None: x.reshape(
            [x.shape[0], *_resolve_shape(x, target, allowzero)[1:]]))
    if 0 in target and not allowzero:
        return lambda x, shape=None: x.reshape(_resolve_shape(x, target, allowzero))
    return lambda x, shape=None: x.reshape(target)


@_op("Flatten")
def _flatten(node):
    axis = node.attr("axis", 1)
    return lambda x: x.reshape(math.prod(x.shape[:axis % (x.dim() or 1) if axis < 0 else axis]), -1)


@_op("Transpose")
def _transpose(node):
    perm = node.attr("perm")
    if perm is None:
        return lambda x: x.permute(*reversed(range(x.dim())))
    return lambda x: x.permute(perm)


@_op("Squeeze")
def _squeeze(node):
    axes = node.ints(1, "axes")
    if not axes:
        return lambda x, _axes=None: x.squeeze()
    axes = tuple(axes)
    return lambda x, _axes=None: x.squeeze(axes)


@_op("Unsqueeze")
def _unsqueeze(node):
    axes = node.ints(1, "axes")

    def unsqueeze(x, _axes=None):
        rank = x.dim() + len(axes)
        for axis in sorted(a % rank for a in axes):
            x = x.unsqueeze(axis)
        return x
    return unsqueeze


@_op("Concat")
def _concat(node):
    axis = node.attr("axis")
    return lambda *xs: torch.cat(xs, axis)


@_op("Split", multi=True)
def _split(node):
    axis = node.attr("axis", 0)
    sizes = node.ints(1, "split")
    parts = node.attr("num_outputs", len(node.outputs))
    if sizes:
        return lambda x, _split=None: torch.split(x, sizes, axis)
    return lambda x, _split=None: torch.split(x, -(-x.shape[axis] // parts), axis)


@_op("Slice")
def _slice(node):
    if node.opset < 10:
        starts, ends, axes, steps = node.attr("starts"), node.attr("ends"), node.attr("axes"), None
    else:
        if any(node.has(i) and node.const(i) is None for i in range(1, 5)):
            return lambda x, s, e, a=None, st=None: _slice_run(
                x, s.tolist(), e.tolist(), None if a is None else a.tolist(), None if st is None else st.tolist())
        starts, ends, axes, steps = node.ints(1), node.ints(2), node.ints(3), node.ints(4)
    return lambda x, *_: _slice_run(x, starts, ends, axes, steps)


def _slice_run(x, starts, ends, axes, steps):
    """ONNX Slice, which follows Python's slice semantics (clamping included) axis by axis."""
    axes = range(len(starts)) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * x.dim()
    flips = []
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis %= x.dim()
        if step > 0:
            index[axis] = slice(start, end, step)
        else:  # torch has no negative-step slicing: gather the indices Python's slice would visit
            flips.append((axis, torch.arange(*slice(start, end, step).indices(x.shape[axis]), device=x.device)))
    out = x[tuple(index)]
    for axis, idx in flips:
        out = out.index_select(axis, idx)
    return out


@_op("Gather")
def _gather(node):
    axis = node.attr("axis", 0)
    indices = node.const(1)
    if indices is not None and indices.dim() == 0:
        i = int(indices)
        return lambda x, _i=None: x.select(axis, i)

    def gather(x, idx):
        ax = axis % x.dim()
        idx = torch.where(idx < 0, idx + x.shape[ax], idx)
        out = x.index_select(ax, idx.reshape(-1))
        return out.reshape(x.shape[:ax] + idx.shape + x.shape[ax + 1:])
    return gather


@_op("GatherElements")
def _gather_elements(node):
    axis = node.attr("axis", 0)
    return lambda x, idx: torch.gather(x, axis, torch.where(idx < 0, idx + x.shape[axis], idx))


@_op("Expand")
def _expand(node):
    return lambda x, shape: x.expand(torch.broadcast_shapes(x.shape, tuple(shape.tolist())))


@_op("Tile")
def _tile(node):
    return lambda x, repeats: x.repeat(repeats.tolist())


@_op("Pad")
def _pad(node):
    mode = node.attr("mode", "constant")
    torch_mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}.get(mode)
    if torch_mode is None:
        raise _Unmappable(f"Pad mode {mode}")
    if node.opset < 11:
        pads, value = node.attr("pads"), node.attr("value", 0.0)
        return lambda x: _pad_run(x, pads, None, torch_mode, value)
    if node.has(3) and node.const(3) is None:
        raise _Unmappable("Pad with axes computed at run time")
    axes = node.ints(3)

    def pad(x, pads, value=None, _axes=None):
        v = 0.0 if value is None else value.item()
        return _pad_run(x, pads.tolist(), axes, torch_mode, v)
    return pad


def _pad_run(x, pads, axes, mode, value):
    axes = list(range(x.dim())) if axes is None else [a % x.dim() for a in axes]
    n = len(axes)
    per_axis = {a: (pads[i], pads[i + n]) for i, a in enumerate(axes)}
    first = min((a for a, p in per_axis.items() if p != (0, 0)), default=x.dim())
    flat = [p for a in reversed(range(first, x.dim())) for p in per_axis.get(a, (0, 0))]
    if not flat:
        return x
    return F.pad(x, flat, mode=mode, value=value) if mode == "constant" else F.pad(x, flat, mode=mode)


# -- reductions and normalization --------------------------------------------------------------------

def _reduce(fn: Callable, axes_input_since: int) -> Callable[[_Node], Callable]:
    def build(node):
        keep = bool(node.attr("keepdims", 1))
        axes = node.attr("axes") if node.opset < axes_input_since else node.ints(1)
        if not axes:
            if node.attr("noop_with_empty_axes", 0):
                return lambda x, _axes=None: x
            return lambda x, _axes=None: fn(x, tuple(range(x.dim())), keep)
        axes = tuple(axes)
        return lambda x, _axes=None: fn(x, axes, keep)
    return build


def _prod(x, axes, keep):
    for axis in sorted((a % x.dim() for a in axes), reverse=True):
        x = x.prod(axis, keepdim=keep)
    return x


for _name, _fn, _since in (
    ("ReduceSum", lambda x, a, k: x.sum(a, keepdim=k), 13),
    ("ReduceMean", lambda x, a, k: x.mean(a, keepdim=k), 18),
    ("ReduceMax", lambda x, a, k: x.amax(a, keepdim=k), 18),
    ("ReduceMin", lambda x, a, k: x.amin(a, keepdim=k), 18),
    ("ReduceProd", _prod, 18),
    ("ReduceL1", lambda x, a, k: x.abs().sum(a, keepdim=k), 18),
    ("ReduceL2", lambda x, a, k: x.square().sum(a, keepdim=k).sqrt(), 18),
    ("ReduceSumSquare", lambda x, a, k: x.square().sum(a, keepdim=k), 18),
    ("ReduceLogSumExp", lambda x, a, k: torch.logsumexp(x, a, keepdim=k), 18),
):
    _op(_name)(_reduce(_fn, _since))


def _arg(fn: Callable) -> Callable[[_Node], Callable]:
    def build(node):
        axis, keep = node.attr("axis", 0), bool(node.attr("keepdims", 1))
        if node.attr("select_last_index", 0):
            return lambda x: x.shape[axis] - 1 - fn(x.flip(axis), axis, keep)
        return lambda x: fn(x, axis, keep)
    return build


_op("ArgMax")(_arg(torch.argmax))
_op("ArgMin")(_arg(torch.argmin))


@_op("BatchNormalization")
def _batch_norm(node):
    if node.attr("training_mode", 0) or any(node.output_used(i) for i in range(1, 5)):
        raise _Unmappable("BatchNormalization in training mode")
    eps = node.attr("epsilon", 1e-5)
    return lambda x, scale, bias, mean, var: F.batch_norm(x, mean, var, scale, bias, False, 0.0, eps)


@_op("InstanceNormalization")
def _instance_norm(node):
    eps = node.attr("epsilon", 1e-5)
    return lambda x, scale, bias: F.instance_norm(x, weight=scale, bias=bias, eps=eps)


def _layer_norm(x, scale, bias, axis, eps, simplified=False):
    """LayerNormalization over the dimensions from ``axis`` on; ``simplified`` is RMS normalization."""
    dims = tuple(range(axis % x.dim(), x.dim()))
    if not simplified and scale.shape == x.shape[dims[0]:] and (bias is None or bias.shape == scale.shape):
        return F.layer_norm(x, scale.shape, scale, bias, eps)
    centered = x if simplified else x - x.mean(dims, keepdim=True)
    y = centered * torch.rsqrt(centered.square().mean(dims, keepdim=True) + eps) * scale
    return y if bias is None else y + bias


@_op("LayerNormalization")
def _layer_normalization(node):
    if node.output_used(1) or node.output_used(2):
        raise _Unmappable(f"{node.op_type} with its mean / inverse-deviation outputs")
    axis, eps = node.attr("axis", -1), node.attr("epsilon", 1e-5)
    return lambda x, scale, bias=None: _layer_norm(x, scale, bias, axis, eps)


@_op("SimplifiedLayerNormalization")  # ONNX Runtime's, registered in ONNX's own domain
def _rms_normalization(node):
    axis, eps = node.attr("axis", -1), node.attr("epsilon", 1e-5)
    return lambda x, scale: _layer_norm(x, scale, None, axis, eps, simplified=True)


def _skip_layer_norm(simplified: bool) -> Callable[[_Node], Callable]:
    def build(node):
        if node.output_used(1) or node.output_used(2):
            raise _Unmappable(f"{node.op_type} with its mean / inverse-deviation outputs")
        eps = node.attr("epsilon", 1e-12)

        def skip_layer_norm(x, skip, gamma, *rest):
            # Inputs after gamma: (beta, bias) for SkipLayerNormalization, (bias,) for the simplified one.
            beta, bias = (None, *rest[:1]) if simplified else (*rest, None, None)[:2]
            total = x + skip if bias is None else x + skip + bias
            return _layer_norm(total, gamma, beta, -1, eps, simplified=simplified), None, None, total
        return skip_layer_norm
    return build


_op("SkipLayerNormalization", domain=MS, multi=True)(_skip_layer_norm(False))
_op("SkipSimplifiedLayerNormalization", domain=MS, multi=True)(_skip_layer_norm(True))


# -- linear algebra, convolution, pooling -----------------------------------------------------------

def _gemm_run(a, b, c, trans_a, trans_b, alpha, beta):
    a = a.t() if trans_a else a
    weight = b if trans_b else b.t()  # F.linear takes the weight as [out, in]
    if alpha == 1 and beta == 1 and (c is None or c.dim() <= 1):
        return F.linear(a, weight, c)
    y = F.linear(a, weight)
    y = y if alpha == 1 else alpha * y
    return y if c is None else y + (c if beta == 1 else beta * c)


@_op("Gemm")
def _gemm(node):
    ta, tb = node.attr("transA", 0), node.attr("transB", 0)
    alpha, beta = node.attr("alpha", 1.0), node.attr("beta", 1.0)
    return lambda a, b, c=None: _gemm_run(a, b, c, ta, tb, alpha, beta)


@_op("FusedGemm", domain=MS)
def _fused_gemm(node):
    ta, tb = node.attr("transA", 0), node.attr("transB", 0)
    alpha, beta = node.attr("alpha", 1.0), node.attr("beta", 1.0)
    act = _activation(node.attr("activation"), node.attr("activation_alpha"), node.attr("activation_beta"),
                      node.attr("activation_gamma"))
    return lambda a, b, c=None: act(_gemm_run(a, b, c, ta, tb, alpha, beta))


@_op("FusedMatMul", domain=MS)
def _fused_matmul(node):
    if node.attr("transBatchA", 0) or node.attr("transBatchB", 0):
        raise _Unmappable("FusedMatMul with transBatchA/transBatchB")
    ta, tb, alpha = node.attr("transA", 0), node.attr("transB", 0), node.attr("alpha", 1.0)

    def fused_matmul(a, b):
        a = a.transpose(-1, -2) if ta and a.dim() > 1 else a
        b = b.transpose(-1, -2) if tb and b.dim() > 1 else b
        y = torch.matmul(a, b)
        return y if alpha == 1 else alpha * y
    return fused_matmul


def _spatial_rank(node) -> int:
    if "kernel_shape" in node.attrs:
        return len(node.attrs["kernel_shape"])
    weight = node.const(1)
    if weight is None:
        raise _Unmappable(f"{node.op_type} without kernel_shape and with a weight computed at run time")
    return weight.dim() - 2


def _pads_for(node, nd: int, kernel: Callable, strides, dilations) -> tuple[int, ...] | Callable:
    """How to pad the input: symmetric pads as a tuple, torch's own ``padding``; else a function of the
    input (and weight) giving ``F.pad``'s list (asymmetric pads, ``auto_pad`` SAME_*)."""
    auto_pad = node.attr("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        upper = auto_pad == "SAME_UPPER"

        def same(x, w=None):
            pads = []
            for size, k, s, d in zip(x.shape[2:], kernel(w), strides, dilations):
                total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
                small = total // 2
                pads.append((small, total - small) if upper else (total - small, small))
            return [p for pair in reversed(pads) for p in pair]
        return same
    pads = [0] * (2 * nd) if auto_pad == "VALID" else list(node.attr("pads", [0] * (2 * nd)))
    if pads[:nd] == pads[nd:]:
        return tuple(pads[:nd])
    flat = [p for i in reversed(range(nd)) for p in (pads[i], pads[i + nd])]
    return lambda x, w=None: flat


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _conv_builder(node) -> Callable:
    nd = _spatial_rank(node)
    if nd not in _CONV:
        raise _Unmappable(f"{nd}-D {node.op_type}")
    strides, dilations = node.attr("strides", [1] * nd), node.attr("dilations", [1] * nd)
    group, conv = node.attr("group", 1), _CONV[nd]
    pads = _pads_for(node, nd, lambda w: w.shape[2:], strides, dilations)
    if isinstance(pads, tuple):
        return lambda x, w, b=None: conv(x, w, b, strides, pads, dilations, group)
    return lambda x, w, b=None: conv(F.pad(x, pads(x, w)), w, b, strides, 0, dilations, group)


_op("Conv")(_conv_builder)


@_op("FusedConv", domain=MS)
def _fused_conv(node):
    conv = _conv_builder(node)
    params = list(node.attr("activation_params", []))
    act = _activation(node.attr("activation", "Relu"), *(params + [None, None])[:2])
    # The optional fourth input Z is added before the activation (a fused residual Add).
    return lambda x, w, b=None, z=None: act(conv(x, w, b) if z is None else conv(x, w, b) + z)


_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@_op("ConvTranspose")
def _conv_transpose(node):
    nd = _spatial_rank(node)
    if nd not in _CONV_T:
        raise _Unmappable(f"{nd}-D ConvTranspose")
    strides, dilations = node.attr("strides", [1] * nd), node.attr("dilations", [1] * nd)
    group, conv = node.attr("group", 1), _CONV_T[nd]
    out_pad = list(node.attr("output_padding", [0] * nd))
    output_shape, auto_pad = node.attr("output_shape"), node.attr("auto_pad", "NOTSET")
    pads = list(node.attr("pads", [0] * (2 * nd)))
    if output_shape is None and auto_pad in ("NOTSET", "VALID"):
        pads = [0] * (2 * nd) if auto_pad == "VALID" else pads
        if pads[:nd] == pads[nd:]:
            return lambda x, w, b=None: conv(x, w, b, strides, pads[:nd], out_pad, group, dilations)

    def conv_transpose(x, w, b=None):
        begin, end = pads[:nd], pads[nd:]
        if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            target = output_shape[-nd:] if output_shape is not None else [s * st for s, st in zip(x.shape[2:], strides)]
            begin, end = [], []
            for size, k, s, d, op, want in zip(x.shape[2:], w.shape[2:], strides, dilations, out_pad, target):
                total = s * (size - 1) + op + (k - 1) * d + 1 - want
                half = max(0, total) // 2  # as ONNX Runtime: an output larger than the full one grows at the end
                begin.append(half if auto_pad == "SAME_UPPER" else max(0, total) - half)
                end.append(total - begin[-1])
        # Pads crop the full transposed convolution; negative ones extend it with positions only the bias reaches.
        y = F.pad(conv(x, w, None, strides, 0, out_pad, group, dilations),
                  [-p for bg, en in zip(reversed(begin), reversed(end)) for p in (bg, en)])
        return y if b is None else y + b.reshape(-1, *[1] * nd)
    return conv_transpose


def _pool_builder(kind: str) -> Callable[[_Node], Callable]:
    def build(node):
        kernel = list(node.attr("kernel_shape"))
        nd = len(kernel)
        if nd not in (1, 2, 3):
            raise _Unmappable(f"{nd}-D {node.op_type}")
        strides, dilations = node.attr("strides", [1] * nd), node.attr("dilations", [1] * nd)
        ceil = bool(node.attr("ceil_mode", 0))
        pads = _pads_for(node, nd, lambda w: kernel, strides, dilations)
        if kind == "max":
            if node.output_used(1):
                raise _Unmappable("MaxPool with its Indices output")
            pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[nd - 1]
            if isinstance(pads, tuple) and all(2 * p <= (k - 1) * d + 1 for p, k, d in zip(pads, kernel, dilations)):
                return lambda x: pool(x, kernel, strides, pads, dilations, ceil)
            pad_of = _as_function(pads)  # torch pads at most half the kernel itself
            return lambda x: pool(F.pad(x, pad_of(x), value=-math.inf), kernel, strides, 0, dilations, ceil)
        if any(d != 1 for d in dilations):
            raise _Unmappable("AveragePool with dilations")
        include = bool(node.attr("count_include_pad", 0))
        pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[nd - 1]
        if isinstance(pads, tuple) and all(2 * p <= k for p, k in zip(pads, kernel)):
            return lambda x: pool(x, kernel, strides, pads, ceil, include)
        pad_of = _as_function(pads)

        def avg_pool(x):
            flat = pad_of(x)
            total = pool(F.pad(x, flat), kernel, strides, 0, ceil, True)
            if include:
                return total
            ones = F.pad(torch.ones_like(x[:1, :1]), flat)
            return total / pool(ones, kernel, strides, 0, ceil, True)
        return avg_pool
    return build


def _as_function(pads: tuple[int, ...] | Callable) -> Callable:
    if callable(pads):
        return pads
    flat = [p for p in reversed(pads) for _ in (0, 1)]
    return lambda x, w=None: flat


_op("MaxPool")(_pool_builder("max"))
_op("AveragePool")(_pool_builder("avg"))


@_op("LSTM", multi=True)
def _lstm(node):
    """ONNX LSTM (gates i, o, f, c), default activations, no peepholes, clip or coupled input-forget gate."""
    hidden = node.attr("hidden_size")
    direction, layout = node.attr("direction", "forward"), node.attr("layout", 0)
    acts = node.attr("activations")
    dirs = 2 if direction == "bidirectional" else 1
    if (acts is not None and acts != ["Sigmoid", "Tanh", "Tanh"] * dirs) or node.attr("clip") is not None \
            or node.attr("input_forget", 0) or node.has(7) or node.has(4) or layout:
        raise _Unmappable("LSTM with custom activations, clip, input_forget, peepholes, sequence_lens or layout 1")

    def lstm(x, w, r, b=None, _lens=None, h0=None, c0=None):
        seq, batch = x.shape[0], x.shape[1]
        ys, hs, cs = [], [], []
        for d in range(dirs):
            gates_x = torch.matmul(x, w[d].t())
            if b is not None:
                gates_x = gates_x + (b[d, :4 * hidden] + b[d, 4 * hidden:])
            h = x.new_zeros(batch, hidden) if h0 is None else h0[d]
            c = x.new_zeros(batch, hidden) if c0 is None else c0[d]
            r_t = r[d].t()
            out = [None] * seq
            reverse = direction == "reverse" or d == 1
            for t in (reversed(range(seq)) if reverse else range(seq)):
                i, o, f, g = (gates_x[t] + h @ r_t).chunk(4, -1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                out[t] = h
            ys.append(torch.stack(out))
            hs.append(h)
            cs.append(c)
        return torch.stack(ys, 1), torch.stack(hs), torch.stack(cs)
    return lstm


# -- quantization -------------------------------------------------------------------------------------

class _StraightThrough(torch.autograd.Function):
    """Exact ONNX quantization forward; clipped straight-through backward (see the module docstring).

    The gradient passes where ``round(x / scale) + zero_point`` lies inside the integer range and is 0
    where the forward saturated: PyTorch's own fake-quantize backward
    (``fake_quantize_per_tensor_affine_cachemask``), and what the deployed graph computes. ONNX
    Runtime's QDQ quantizer deletes the ``Relu`` (or ``Clip``) in front of a ``QuantizeLinear`` whose
    range starts at the zero point and lets the saturation do its work; passing the gradient through
    that saturation would be the gradient of the network without its activations.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, scale, zero_point, lo, hi, dequantize, identity_backward=False):
        # In place on one fresh tensor: these steps are most of an INT8 graph's extra cost under attack.
        q = torch.div(x, scale).round_()
        if zero_point is not None:
            q.add_(zero_point)
        inside = (q >= lo) & (q <= hi)
        q.clamp_min_(lo).clamp_max_(hi)  # not clamp_: it has no vmap batching rule
        if dequantize:
            if zero_point is not None:
                q.sub_(zero_point)
            q.mul_(scale)
        return q, inside

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.dequantize, ctx.identity = inputs[5], inputs[6]
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(inputs[1], output[1])

    @staticmethod
    def backward(ctx, grad, _grad_inside):
        scale, inside = ctx.saved_tensors
        if not ctx.identity:
            grad = grad * inside
        if not ctx.dequantize:
            grad = grad / scale
        return grad, None, None, None, None, None, None


def straight_through(x, scale, zero_point, lo, hi, dequantize):
    """Quantize ``x`` as ONNX does (and dequantize again if ``dequantize``), with the clipped straight-through
    gradient of :class:`_StraightThrough` (the identity one where :data:`IDENTITY_STE` is set, for tests)."""
    return _StraightThrough.apply(x, scale, zero_point, lo, hi, dequantize, IDENTITY_STE)[0]


# The pre-fix backward (identity through the saturation), kept switchable so a test can show that the
# audit's checks catch the gradients it gives. Never set it outside such a test.
IDENTITY_STE = False


def _per_axis(t: torch.Tensor, axis: int, rank: int) -> torch.Tensor:
    """A 1-D scale or zero point shaped to broadcast along ``axis`` of a rank-``rank`` tensor."""
    if t.dim() != 1:
        return t
    shape = [1] * rank
    shape[axis % rank] = -1
    return t.reshape(shape)


def _quant_range(node, zero_point_input: int = 2) -> tuple[int, int]:
    zero_point = node.const(zero_point_input)
    if node.attr("output_dtype"):
        kind = node.attr("output_dtype")
    elif zero_point is not None:
        kind = _TORCH_QUANT_TYPES.get(zero_point.dtype)
    elif node.has(zero_point_input):
        raise _Unmappable(f"{node.op_type} with a zero point computed at run time")
    else:
        kind = TensorProto.UINT8
    if kind not in _QUANT_RANGES:
        raise _Unmappable(f"{node.op_type} to a type other than (u)int4/8/16")
    return _QUANT_RANGES[kind]


def _check_blocked(node):
    if node.attr("block_size", 0):
        raise _Unmappable(f"blocked {node.op_type}")


def _quantize_builder(dequantize: bool) -> Callable[[_Node], Callable]:
    def build(node):
        _check_blocked(node)
        lo, hi = _quant_range(node)
        axis = node.attr("axis", 1)
        zero = node.const(2)
        skip_zero_point = not node.has(2) or (zero is not None and not zero.any())

        def quantize(x, scale, zero_point=None):
            zp = None if skip_zero_point else _per_axis(zero_point, axis, x.dim()).to(x.dtype)
            return straight_through(x, _per_axis(scale, axis, x.dim()), zp, lo, hi, dequantize)
        return quantize
    return build


_op("QuantizeLinear")(_quantize_builder(False))
_op("QuantizeLinear", domain=MS)(_quantize_builder(False))
# QuantizeLinear -> DequantizeLinear with the same scale, zero point and axis, as one step (see _GraphReader).
_op("FakeQuantize", domain="dlforge")(_quantize_builder(True))


@_op("DequantizeLinear")
@_op("DequantizeLinear", domain=MS)
def _dequantize(node):
    _check_blocked(node)
    axis = node.attr("axis", 1)

    def dequantize(q, scale, zero_point=None):
        scale = _per_axis(scale, axis, q.dim())
        if zero_point is not None:
            zero_point = _per_axis(zero_point, axis, q.dim())
            # As ONNX Runtime does: the integer difference first, then one float multiply.
            q = (q.to(torch.int32) - zero_point.to(torch.int32)) if not q.is_floating_point() else q - zero_point
        return q.to(scale.dtype) * scale
    return dequantize


# -- the graph as a program ---------------------------------------------------------------------------

@dataclass
class _Step:
    fn: Callable
    args: tuple  # ("slot", i) | ("const", name) | ("none", None)
    outs: tuple[int | None, ...]
    op: str
    multi: bool
    batch_variant: tuple[int, Callable] | None = None


def _op_name(domain: str, op_type: str) -> str:
    return op_type if domain in ("", "ai.onnx") else f"{domain}.{op_type}"


def _same_tensor(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(a, b))


class _GraphReader:
    """Walks the graph once: folds what is constant, turns the rest into steps, collects what is unmappable."""

    def __init__(self, model: onnx.ModelProto, base_dir: str, source: str):
        self.graph = model.graph
        self.source = source
        self.opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}
        self.consts: dict[str, torch.Tensor] = {}
        self.slots: dict[str, int] = {}
        self.producers: dict[str, _Node] = {}
        self.steps: list[_Step] = []
        self.unsupported: dict[str, int] = {}
        self.tainted: set[str] = set()
        for init in self.graph.initializer:
            try:
                self.consts[init.name] = _tensor(init, base_dir)
            except _Unmappable as exc:
                self.unsupported[str(exc)] = self.unsupported.get(str(exc), 0) + 1
            except Exception as exc:
                raise InputError(f"{source}: cannot read initializer {init.name!r} ({exc}); keep external-data "
                                 "files beside the model and load it from its path") from exc
        real = [v for v in self.graph.input if v.name not in self.consts]
        if len(real) != 1:
            names = ", ".join(v.name for v in real) or "none"
            raise UnsupportedGraph(f"{source} has {len(real)} inputs ({names}); only single-input graphs (one image "
                                   "batch) convert to a torch module: export the model with one input")
        self.input = real[0]
        self.slots[self.input.name] = 0
        for proto in self.graph.node:
            self._read(proto)
        if self.unsupported:
            listed = ", ".join(f"{name} ({count})" if count > 1 else name for name, count in self.unsupported.items())
            raise UnsupportedGraph(f"{source}: no torch mapping for {listed}; attack the PyTorch checkpoint instead, "
                                   "or export / build the model without these ops")

    def _refuse(self, what: str | None, proto: onnx.NodeProto) -> None:
        """Record an unmappable node (``what``; None for one that only reads such a node's outputs) and go on,
        so that one message can name every unmappable op of the graph."""
        if what is not None:
            self.unsupported[what] = self.unsupported.get(what, 0) + 1
        self.tainted.update(name for name in proto.output if name)

    def _read(self, proto: onnx.NodeProto) -> None:
        domain = "" if proto.domain == "ai.onnx" else proto.domain
        name = _op_name(domain, proto.op_type)
        if proto.op_type in _CONTROL_FLOW and domain == "":
            return self._refuse(f"{name} (control flow)", proto)
        if (domain, proto.op_type) not in _BUILDERS:
            return self._refuse(name, proto)
        if any(i in self.tainted for i in proto.input):
            return self._refuse(None, proto)
        for i in proto.input:
            if i and i not in self.consts and i not in self.slots:
                raise InputError(f"{self.source}: node {proto.name or proto.op_type!r} reads {i!r} before any node "
                                 "writes it; the graph is not topologically sorted (re-save it with onnx)")
        try:
            node, key = self._fused_fake_quant(proto), ("dlforge", "FakeQuantize")
            if node is None:
                consts = [self.consts.get(i) if i else None for i in proto.input]
                node = _Node(proto, self.opsets.get(domain, 1), consts)
                key = (domain, proto.op_type)
            fn = _BUILDERS[key](node)
        except _Unmappable as exc:
            reason = str(exc)
            return self._refuse(reason if reason.startswith(proto.op_type) else f"{name} ({reason})", proto)
        self.producers.update({o: node for o in proto.output if o})
        if all(not i or i in self.consts for i in node.inputs):
            return self._fold(node, fn, key in _MULTI)
        self.steps.append(_Step(
            fn=fn,
            args=tuple(("none", None) if not i else ("const", i) if i in self.consts else ("slot", self.slots[i])
                       for i in node.inputs),
            outs=tuple(self._new_slot(o) if o else None for o in proto.output),
            op=name, multi=key in _MULTI, batch_variant=node.batch_variant))

    def _new_slot(self, name: str) -> int:
        self.slots[name] = len(self.slots)
        return self.slots[name]

    def _fold(self, node: _Node, fn: Callable, multi: bool) -> None:
        try:
            with torch.no_grad():
                result = fn(*[self.consts[i] if i else None for i in node.inputs])
        except Exception as exc:
            raise InputError(f"{self.source}: node {node.proto.name or node.op_type!r} ({node.op_type}) fails on "
                             f"its constant inputs ({type(exc).__name__}: {exc}); check the graph with onnx.checker"
                             ) from exc
        for name, value in zip(node.outputs, result if multi else (result,)):
            if name and value is not None:
                self.consts[name] = value.detach()

    def _fused_fake_quant(self, proto: onnx.NodeProto) -> _Node | None:
        """A ``DequantizeLinear`` reading a ``QuantizeLinear`` of a run-time value with the same scale, zero
        point and axis, as one FakeQuantize node (one step, identity gradient); None for any other node."""
        if proto.op_type != "DequantizeLinear" or proto.input[0] in self.consts:
            return None
        q = self.producers.get(proto.input[0])
        if q is None or q.op_type != "QuantizeLinear" or q.const(1) is None:
            return None
        dq = _Node(proto, q.opset, [self.consts.get(i) if i else None for i in proto.input])
        if not (_same_tensor(dq.const(1), q.const(1)) and _same_tensor(dq.const(2), q.const(2))
                and dq.attr("axis", 1) == q.attr("axis", 1)):
            return None
        fused = _Node(q.proto, q.opset, q.consts, op_type="FakeQuantize")
        fused.outputs = dq.outputs
        return fused


def _fused(steps: list[_Step], consts: dict[str, torch.Tensor], output_slot: int) -> list[_Step]:
    """Two fusions ONNX Runtime's CPU optimizer leaves in transformer graphs, together about a third of their
    forward time here: ``MatMul`` by a constant matrix then ``Add`` of a constant bias as one ``F.linear``
    (addmm), and GELU written with ``Erf`` (``x * 0.5 * (1 + erf(x / sqrt 2))``) as ``F.gelu``. Intermediate
    values must have no other reader; the steps replaced become dead and are dropped afterwards."""
    producer = {o: s for s in steps for o in s.outs if o is not None}
    uses = Counter(i for s in steps for kind, i in s.args if kind == "slot")
    uses[output_slot] += 1

    def only_reader(arg, op: str) -> _Step | None:
        """The ``op`` step that computes ``arg``, when nothing else reads its output."""
        step = producer.get(arg[1]) if arg is not None and arg[0] == "slot" else None
        return step if step is not None and step.op == op and uses[arg[1]] == 1 else None

    def const(arg) -> torch.Tensor | None:
        return consts[arg[1]] if arg[0] == "const" else None

    def is_scalar(arg, value: float) -> bool:
        c = const(arg)
        return c is not None and c.numel() == 1 and c.is_floating_point() and abs(float(c) - value) < 1e-6

    def operand_beside(step: _Step | None, value: float):
        """The other operand of a binary ``step`` one of whose operands is the scalar ``value``."""
        if step is None or len(step.args) != 2:
            return None
        a, b = step.args
        return a if is_scalar(b, value) else b if is_scalar(a, value) else None

    out = []
    for step in steps:
        if step.op == "Add" and len(step.args) == 2:
            for mm_arg, bias_arg in (step.args, step.args[::-1]):
                matmul, bias = only_reader(mm_arg, "MatMul"), const(bias_arg)
                weight = const(matmul.args[1]) if matmul else None
                if weight is not None and weight.dim() == 2 and bias is not None and bias.shape == weight.shape[1:]:
                    name = f"{matmul.args[1][1]} (transposed for F.linear)"
                    consts[name] = weight.t().contiguous()
                    step = _Step(F.linear, (matmul.args[0], ("const", name), bias_arg), step.outs, "MatMul+Add", False)
                    break
        elif step.op == "Mul" and len(step.args) == 2:
            for x_arg, half_arg in (step.args, step.args[::-1]):
                one = only_reader(operand_beside(only_reader(half_arg, "Mul"), 0.5), "Add")
                erf = only_reader(operand_beside(one, 1.0), "Erf")
                div = only_reader(erf.args[0], "Div") if erf else None
                if div is not None and div.args[0] == x_arg and is_scalar(div.args[1], math.sqrt(2)):
                    step = _Step(F.gelu, (x_arg,), step.outs, "Gelu", False)
                    break
        out.append(step)
    return out


def _dead_code_eliminated(steps: list[_Step], output_slot: int) -> list[_Step]:
    needed, kept = {output_slot}, []
    for step in reversed(steps):
        if any(o in needed for o in step.outs if o is not None):
            kept.append(step)
            needed.update(i for kind, i in step.args if kind == "slot")
    return kept[::-1]


# -- the module -----------------------------------------------------------------------------------------

class OnnxTorchModule(torch.nn.Module):
    """An ONNX graph as a torch module: ``forward(x)`` is the graph's first output, for any batch size.

    Attributes:
        input_name, output_name: the graph's input and first output.
        op_counts: how many nodes of each op type the ONNX graph holds (``domain.op`` outside ONNX's own).
        quantized: the graph holds quantization (QDQ or QOperator ops; gradients are straight-through).
        static_batch: the input's fixed batch dimension, or None when it is dynamic.
    """

    def __init__(self, reader: _GraphReader, op_counts: dict[str, int]):
        super().__init__()
        self.input_name = reader.input.name
        self.output_name = reader.graph.output[0].name
        self.op_counts = op_counts
        self.quantized = any(op.split(".")[-1] in _QUANTIZED_OPS for op in op_counts)
        dims = reader.input.type.tensor_type.shape.dim
        self.input_shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
        self.input_dtype = _DTYPES.get(reader.input.type.tensor_type.elem_type, torch.float32)
        self.static_batch = self.input_shape[0] if self.input_shape and self.input_shape[0] else None
        self.grouped = False  # True: runs per group of static_batch samples under vmap (see the module docstring)
        if self.output_name in reader.consts or self.output_name not in reader.slots:
            raise UnsupportedGraph(f"{reader.source}: the first output {self.output_name!r} does not depend on the "
                                   "input; nothing to attack")
        output_slot = reader.slots[self.output_name]
        steps = _dead_code_eliminated(_fused(reader.steps, reader.consts, output_slot), output_slot)
        consts = list(dict.fromkeys(name for s in steps for kind, name in s.args if kind == "const"))
        for i, name in enumerate(consts):
            self.register_buffer(f"c{i}", reader.consts[name])
        # env layout: [None, x, constants..., intermediate values...]
        const_index = {name: 2 + i for i, name in enumerate(consts)}
        base = 2 + len(consts)
        slot_index = {0: 1}
        for step in steps:
            for o in step.outs:
                if o is not None:
                    slot_index[o] = base + len(slot_index) - 1

        def where(kind, i):
            return 0 if kind == "none" else const_index[i] if kind == "const" else slot_index[i]

        self._steps = steps
        scratch = base + len(slot_index) - 1  # where multi-output steps put the outputs nobody reads
        self._program = [(s.fn, tuple(where(*a) for a in s.args),
                          tuple(slot_index.get(o, scratch) for o in s.outs) if s.multi else slot_index[s.outs[0]])
                         for s in steps]
        self._size = scratch + 1
        self._output = slot_index[reader.slots[self.output_name]]

    def _execute(self, x: torch.Tensor) -> list:
        """Every value of one run: ``[None, x, constants..., intermediates...]``."""
        env = [None, x, *self._buffers.values()]
        env.extend([None] * (self._size - len(env)))
        for fn, args, out in self._program:
            result = fn(*[env[i] for i in args])
            if type(out) is int:
                env[out] = result
            else:
                for o, r in zip(out, result):
                    env[o] = r
        return env

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        return self._execute(x)[self._output]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n = self.static_batch, x.shape[0]
        if not self.grouped or n == b:
            return self._run(x)
        pad = (-n) % b
        if pad:
            x = torch.cat([x, x[-1:].expand(pad, *x.shape[1:])])
        out = torch.func.vmap(self._run)(x.reshape(-1, b, *x.shape[1:]))
        if out.dim() > 1 and out.shape[1] == b:
            return out.reshape(-1, *out.shape[2:])[:n]
        if b == 1:
            return out[:n]
        raise UnsupportedGraph(f"the graph's batch is fixed at {b} and its output ({tuple(out.shape[1:])}) has no "
                               f"batch dimension; feed it exactly {b} samples at a time")

    def _generalize_batch(self) -> None:
        """Make a static-batch graph take any batch (see the module docstring); proven on random inputs."""
        b = self.static_batch
        if b is None:
            return
        if None in self.input_shape[1:]:
            self.grouped = True
            return
        try:
            with torch.no_grad():
                env = self._execute(torch.zeros(self.input_shape, dtype=self.input_dtype))
        except RuntimeError as exc:
            raise UnsupportedGraph(f"the converted graph fails on an input of its own shape {self.input_shape} "
                                   f"({str(exc).splitlines()[0]}); report the graph's ops (dlforge inspect)") from exc
        probe_shapes = {i: tuple(v.shape) for i, v in enumerate(env) if isinstance(v, torch.Tensor)}
        program = list(self._program)
        for k, step in enumerate(self._steps):
            if step.batch_variant and step.batch_variant[0] == b:
                data = program[k][1][0]
                if probe_shapes.get(data, ())[:1] == (b,):
                    program[k] = (step.batch_variant[1],) + program[k][1:]
        self._program = program
        x = torch.rand((3 * b, *self.input_shape[1:]), generator=torch.Generator().manual_seed(0)).to(self.input_dtype)
        try:
            with torch.no_grad():
                batched = self._run(x)
                one_by_one = torch.cat([self._run(x[i:i + b]) for i in range(0, len(x), b)])
            agrees = batched.shape == one_by_one.shape and torch.allclose(
                batched.double(), one_by_one.double(), rtol=1e-3, atol=1e-2 * (1 + one_by_one.abs().max().item()))
        except RuntimeError:
            agrees = False
        self.grouped = not agrees


def _load(model: str | os.PathLike | onnx.ModelProto) -> tuple[onnx.ModelProto, str, str]:
    if isinstance(model, onnx.ModelProto):
        return model, "", "the ONNX model"
    path = Path(model)
    if path.is_dir() and is_artifact(path):
        path = open_artifact(path, ["engine", "onnx"]).payload_path  # verified against its card
        if path.suffix != ".onnx":
            raise InputError(f"{path.parent} holds {path.name}, not an ONNX graph; pass the onnx artifact it was "
                             "built from, or an ONNX Runtime engine")
    if not path.is_file():
        raise InputError(f"{path} is not a file; pass an .onnx file or an engine / onnx artifact directory")
    check_external_data(path)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several unrelated types on garbage
        raise InputError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc}); re-export it") from exc
    return proto, str(path.parent), str(path)


def torch_module_from_onnx(model: str | os.PathLike | onnx.ModelProto) -> OnnxTorchModule:
    """A differentiable torch module computing ``model``'s first output (see the module docstring).

    Args:
        model: an ``.onnx`` path (external data is read from beside it), an engine / onnx artifact
            directory (its payload verified against its card), or a loaded ``ModelProto``.

    Raises:
        UnsupportedGraph: the graph has several inputs, control flow or ops without a torch mapping
            (all named in one message).
    """
    proto, base_dir, source = _load(model)
    op_counts: dict[str, int] = {}
    for n in proto.graph.node:
        name = _op_name(n.domain, n.op_type)
        op_counts[name] = op_counts.get(name, 0) + 1
    module = OnnxTorchModule(_GraphReader(proto, base_dir, source), op_counts)
    if any(b.dim() == 4 for b in module.buffers()) and any(op.split(".")[-1] in _CONV_OPS for op in op_counts):
        # As for the PyTorch model (dlforge.adversarial.attacks.torch_model): oneDNN convolves markedly faster in
        # channels-last layout, and channels-last weights carry it to the activations whatever the input's layout.
        module.to(memory_format=torch.channels_last)
    module._generalize_batch()
    return module.eval()


# -- proving it against the engine ----------------------------------------------------------------------

def match_engine(module: OnnxTorchModule, predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, *,
                 batch_size: int = 256) -> dict:
    """Compare ``module(x)`` with ``predict(x)``, the engine's own numpy logits.

    fp32 graphs must agree within ``max |diff| <= 1e-4``; quantized graphs on the top-1 class of at
    least 99.5% of the samples (ONNX Runtime runs QDQ graphs in integer arithmetic, which rounds a
    few values to the neighbouring level, so their logits differ by about one quantization step).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    device = next(module.buffers(), torch.empty(0)).device
    with torch.no_grad():
        ours = np.concatenate([module(torch.from_numpy(x[i:i + batch_size]).to(device)).float().cpu().numpy()
                               for i in range(0, len(x), batch_size)])
    theirs = np.asarray(predict(x), dtype=np.float32)
    if ours.shape != theirs.shape:
        raise UnsupportedGraph(f"the converted graph gives outputs of shape {ours.shape}, the engine {theirs.shape}; "
                               "pass the engine's own predict for the same model")
    n = len(x)
    max_abs_diff = float(np.max(np.abs(ours - theirs))) if ours.size else 0.0
    top1 = float(np.mean(ours.reshape(n, -1).argmax(1) == theirs.reshape(n, -1).argmax(1)))
    if module.quantized:
        criterion, passed = "top1_agreement>=0.995", top1 >= QUANTIZED_TOP1
    else:
        criterion, passed = "max_abs_diff<=1e-4", max_abs_diff <= FP32_ATOL
    return {"criterion": criterion, "max_abs_diff": max_abs_diff, "top1_agreement": top1, "samples": n,
            "passed": bool(passed)}


def check_matches_engine(module: OnnxTorchModule, predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, *,
                         what: str) -> dict:
    """:func:`match_engine`, raising :class:`UnsupportedGraph` when the module does not match the engine."""
    result = match_engine(module, predict, x)
    if not result["passed"]:
        raise UnsupportedGraph(
            f"{what}: the converted graph does not match the engine (max |diff| {result['max_abs_diff']:.3g}, top-1 "
            f"agreement {result['top1_agreement']:.2%} on {result['samples']} samples; needs {result['criterion']}); "
            "attack the PyTorch checkpoint instead, and report the graph's ops (dlforge inspect)")
    return result


from dlforge import onnx_qoperator  # noqa: E402,F401  (registers the QOperator builders)
