"""Element-wise, activation, constant and shape-query ops."""

from __future__ import annotations

import math
from functools import reduce
from typing import Callable

import torch
import torch.nn.functional as F

from dlforge.onnx_torch.nodes import MS, _DTYPES, _Node, _Unmappable, _fixed, _op


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
