"""The QOperator form of INT8 ONNX graphs as torch steps: builders for :mod:`dlforge.onnx_torch`.

ONNX Runtime's quantizer writes an INT8 graph in one of two forms. The QDQ form (fp32 ops between
``QuantizeLinear``/``DequantizeLinear`` pairs) is mapped in :mod:`dlforge.onnx_torch` itself; this
module maps the QOperator form, where each op reads and writes integer levels and carries its own
scales and zero points (``QLinearConv``, ``QLinearMatMul``, com.microsoft ``QLinearAdd`` ...): the
form of many published INT8 models, e.g. the ONNX Model Zoo's ``mobilenetv2-12-int8.onnx``.
:mod:`dlforge.onnx_torch` imports it at its end, which registers the builders with ``_op``.

As there, quantized values travel as float tensors holding the integer levels. Each op computes
what ONNX Runtime's CPU kernels compute, in their floating-point order where they work in float, so
its levels equal ONNX Runtime's (ONNX Runtime 1.32's x86-64 kernels, AVX2 and VNNI, on every test
here; another kernel may put a value lying within float rounding of a half on the other level):

- ``QLinearConv``, ``QLinearMatMul``, com.microsoft ``QGemm``: the products of the zero-point-shifted
  levels ``(x - x_zp)`` and ``(w - w_zp)`` are accumulated (plus the int32 bias, whose scale is
  ``x_scale * w_scale``), and the accumulator is requantized as MLAS does:
  ``saturate(round_half_even(acc * (x_scale * w_scale / y_scale)) + y_zp)``, the multiplier per output
  channel / column for per-channel weights. Float32 sums of these integer products are exact while
  they stay below 2**24, as in any 8-bit layer of a published model.
- com.microsoft ``QLinearGlobalAveragePool`` (and ``QLinearAveragePool`` whose kernel covers the
  whole unpadded image, which ONNX Runtime runs as the global pool): the shifted levels summed, then
  requantized with ``x_scale / (y_scale * image_size)``.
- com.microsoft ``QLinearAdd``: ``(A_scale (A - A_zp) + B_scale (B - B_zp)) / C_scale + C_zp``, evaluated
  as MLAS's x86 kernel does (fused multiply-adds of the levels by ``A_scale / C_scale`` and
  ``B_scale / C_scale``); ``QLinearMul``: ``(A - A_zp)(B - B_zp)`` times ``A_scale * B_scale / C_scale``,
  plus ``C_zp`` before rounding, as its kernel does.
- com.microsoft ``QLinearAveragePool``, ``QLinearSigmoid``, ``QLinearLeakyRelu``, ``QLinearConcat``
  (inputs whose scale and zero point differ from the output's): dequantize, apply the fp32 op,
  quantize, as ONNX Runtime's float kernels and 256-entry lookup tables do.
- ``ConvInteger`` / ``MatMulInteger``: the int32 accumulator of the shifted levels (as a float tensor).

Gradients: every rounding goes through :func:`dlforge.onnx_torch.straight_through`, the clipped
straight-through estimator (the gradient passes where the level was inside the output range and
stops where it saturated); the arithmetic around it is plain differentiable torch, so the graph's
gradient reaches its input through every op, scaled as the real values are
(``x_scale * w_scale / y_scale`` through a requantized convolution, for one).

Not mapped (the converter names them): pools with ``channels_last=1``, ``QLinearAveragePool`` with
dilations (as ``AveragePool``), ``QGemm`` with only one of ``y_scale`` and ``y_zero_point``; and these
ops, left unregistered: com.microsoft ``QLinearSoftmax`` (ONNX Runtime's kernel approximates it from
exp tables and ``floor(1 / y_scale)`` rather than quantizing the softmax), ``QLinearWhere``,
``QLinearReduceMean``, ``QAttention``, ``QEmbedLayerNormalization``, and ``DynamicQuantizeLinear`` (its
scale comes from the min / max over the whole batch, so one sample's output would depend on the others
in its batch), without which the dynamic-quantization graphs around ``ConvInteger`` / ``MatMulInteger``
do not convert. Where every zero point of an op is absent its output is taken to be uint8.
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import torch
from onnx import TensorProto

from dlforge.onnx_torch.linalg import _conv_builder, _pool_builder
from dlforge.onnx_torch.nodes import _QUANT_RANGES, _TORCH_QUANT_TYPES, MS, _Node, _op, _Unmappable
from dlforge.onnx_torch.quantization import _per_axis, straight_through


# -- shared arithmetic -------------------------------------------------------------------------------

def _out_range(node: _Node, *zero_point_inputs: int) -> tuple[int, int]:
    """The integer range of the node's output: from the first of ``zero_point_inputs`` that is present
    (the output's own zero point first, then an input's, whose type the output shares); uint8 without any."""
    for i in zero_point_inputs:
        if node.has(i):
            zero_point = node.const(i)
            if zero_point is None:
                raise _Unmappable(f"{node.op_type} with a zero point computed at run time")
            kind = _TORCH_QUANT_TYPES.get(zero_point.dtype)
            if kind not in _QUANT_RANGES:
                raise _Unmappable(f"{node.op_type} with {zero_point.dtype} levels")
            return _QUANT_RANGES[kind]
    return _QUANT_RANGES[TensorProto.UINT8]


def _centered(q: torch.Tensor, zero_point: torch.Tensor | None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``q - zero_point`` as a float tensor of levels (an integer weight is converted on the way)."""
    dtype = dtype or (q.dtype if q.is_floating_point() else torch.float32)
    q = q.to(dtype)
    return q if zero_point is None else q - zero_point.to(dtype)


def _rows(t: torch.Tensor | None) -> torch.Tensor | None:
    """A per-row (1-D, several elements) scale or zero point of a matrix operand shaped to broadcast."""
    return t.reshape(-1, 1) if t is not None and t.dim() == 1 and t.numel() > 1 else t


def _levels_of(t: torch.Tensor, zero_point: torch.Tensor | None, lo: int, hi: int,
               zero_point_first: bool = False) -> torch.Tensor:
    """``saturate(round_half_even(t) + zero_point)``, or ``saturate(round_half_even(t + zero_point))`` where the
    kernel adds the zero point in float before rounding (which moves a value lying within float rounding of a
    half); the clipped straight-through gradient of :func:`dlforge.onnx_torch.straight_through` (scale 1)."""
    one = torch.ones((), dtype=t.dtype, device=t.device)
    zp = None if zero_point is None else zero_point.to(t.dtype)
    if zero_point_first and zp is not None:
        return straight_through(t + zp, one, None, lo, hi, False)
    return straight_through(t, one, zp, lo, hi, False)


def _requantize(acc: torch.Tensor, multiplier: torch.Tensor, zero_point: torch.Tensor | None, lo: int, hi: int,
                zero_point_first: bool = False) -> torch.Tensor:
    """``saturate(round_half_even(acc * multiplier) + zero_point)``: MLAS's requantization of an integer
    accumulator, in its float order (the multiplier first, ``x_scale * w_scale / y_scale``). Its gradient,
    ``multiplier`` where nothing saturated, is that of quantizing the real value ``acc * x_scale * w_scale``
    with ``y_scale``."""
    return _levels_of(acc * multiplier.to(acc.dtype), zero_point, lo, hi, zero_point_first)


def _quantize(real: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None, lo: int, hi: int,
              zero_point_first: bool = False) -> torch.Tensor:
    """QuantizeLinear of a real value: ``saturate(round_half_even(real / scale) + zero_point)``."""
    if not zero_point_first:
        zp = None if zero_point is None else zero_point.to(real.dtype)
        return straight_through(real, scale.to(real.dtype), zp, lo, hi, False)
    return _levels_of(real / scale.to(real.dtype), zero_point, lo, hi, zero_point_first=True)


def _fma(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``x * y + z`` rounded once to ``x``'s float type, as a fused multiply-add does (computed in float64,
    where an 8-bit level times a float32 scale plus a float32 term of like size is exact)."""
    return (x.double() * y.double() + z.double()).to(x.dtype)


def _refuse_channels_last(node: _Node) -> None:
    if node.attr("channels_last", 0):
        raise _Unmappable(f"{node.op_type} with channels_last=1")


# -- convolution and matrix products ------------------------------------------------------------------

def _conv_of(node: _Node, weight_input: int) -> Callable:
    """The float convolution of a quantized conv node (its attributes are Conv's); the weight is input
    ``weight_input``, not 1, so a missing ``kernel_shape`` is taken from it here."""
    if "kernel_shape" not in node.attrs:
        weight = node.const(weight_input)
        if weight is None:
            raise _Unmappable(f"{node.op_type} without kernel_shape and with a weight computed at run time")
        node = copy.copy(node)
        node.attrs = {**node.attrs, "kernel_shape": list(weight.shape[2:])}
    return _conv_builder(node)


@_op("QLinearConv")
def _qlinear_conv(node):
    """x, x_scale, x_zero_point, w, w_scale, w_zero_point (per tensor or per output channel), y_scale,
    y_zero_point, optional int32 bias B."""
    lo, hi = _out_range(node, 7, 2)
    conv = _conv_of(node, 3)

    def qlinear_conv(x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp=None, bias=None):
        dtype = x.dtype if x.is_floating_point() else torch.float32
        x_c = _centered(x, x_zp, dtype)
        w_c = _centered(w, None if w_zp is None else _per_axis(w_zp, 0, w.dim()), dtype)
        acc = conv(x_c, w_c, None if bias is None else bias.to(dtype))
        return _requantize(acc, _per_axis(x_scale * w_scale / y_scale, 1, acc.dim()), y_zp, lo, hi)
    return qlinear_conv


@_op("QLinearMatMul")
def _qlinear_matmul(node):
    """a, a_scale, a_zero_point (per tensor or per row), b, b_scale, b_zero_point (per tensor or per
    column), y_scale, y_zero_point."""
    lo, hi = _out_range(node, 7, 2)

    def qlinear_matmul(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp=None):
        dtype = a.dtype if a.is_floating_point() else torch.float32
        acc = torch.matmul(_centered(a, _rows(a_zp), dtype), _centered(b, b_zp, dtype))
        return _requantize(acc, _rows(a_scale) * b_scale / _rows(y_scale), _rows(y_zp), lo, hi)
    return qlinear_matmul


@_op("QGemm", domain=MS)
def _qgemm(node):
    """A, a_scale, a_zero_point, B, b_scale, b_zero_point (per tensor or per column), optional int32 C,
    optional y_scale, y_zero_point; transA, transB, alpha. Without y_scale / y_zero_point the output is
    the float ``alpha * a_scale * b_scale * acc``."""
    if node.has(7) != node.has(8):
        raise _Unmappable("QGemm with only one of y_scale and y_zero_point")
    quantized = node.has(8)
    lo, hi = _out_range(node, 8, 2) if quantized else (0, 0)
    trans_a, trans_b, alpha = node.attr("transA", 0), node.attr("transB", 0), node.attr("alpha", 1.0)

    def qgemm(a, a_scale, a_zp, b, b_scale, b_zp, c=None, y_scale=None, y_zp=None):
        dtype = a.dtype if a.is_floating_point() else torch.float32
        a_c = _centered(a, a_zp, dtype)
        # B's zero point runs along N: its columns, or its rows when it is stored transposed.
        b_c = _centered(b, None if b_zp is None else _per_axis(b_zp, 0 if trans_b else 1, 2), dtype)
        acc = torch.matmul(a_c.t() if trans_a else a_c, b_c.t() if trans_b else b_c)
        if c is not None:
            acc = acc + c.to(dtype)
        multiplier = alpha * a_scale * b_scale
        if not quantized:
            return acc * multiplier.to(dtype)
        return _requantize(acc, multiplier / y_scale, y_zp, lo, hi)
    return qgemm


@_op("ConvInteger")
def _conv_integer(node):
    """x, w, optional x_zero_point, optional w_zero_point (per output channel): the int32 accumulator."""
    conv = _conv_of(node, 1)

    def conv_integer(x, w, x_zp=None, w_zp=None):
        dtype = x.dtype if x.is_floating_point() else torch.float32
        w_c = _centered(w, None if w_zp is None else _per_axis(w_zp, 0, w.dim()), dtype)
        return conv(_centered(x, x_zp, dtype), w_c)
    return conv_integer


@_op("MatMulInteger")
def _matmul_integer(node):
    """a, b, optional a_zero_point (per tensor or per row), optional b_zero_point (per tensor or per column)."""
    def matmul_integer(a, b, a_zp=None, b_zp=None):
        dtype = a.dtype if a.is_floating_point() else torch.float32
        return torch.matmul(_centered(a, _rows(a_zp), dtype), _centered(b, b_zp, dtype))
    return matmul_integer


# -- element-wise -----------------------------------------------------------------------------------------

@_op("QLinearAdd", domain=MS)
def _qlinear_add(node):
    """A, A_scale, A_zero_point, B, B_scale, B_zero_point, C_scale, optional C_zero_point.

    ``(A_scale (A - A_zp) + B_scale (B - B_zp)) / C_scale + C_zp``, rounded, in the float order of MLAS's x86
    kernel: ``fma(A, A_scale / C_scale, fma(B, B_scale / C_scale, C_zp - (A_zp A_scale / C_scale + B_zp B_scale /
    C_scale)))`` on the levels themselves, then rounded (other kernels: within one level)."""
    lo, hi = _out_range(node, 7, 2, 5)

    def qlinear_add(a, a_scale, a_zp, b, b_scale, b_zp, c_scale, c_zp=None):
        dtype = a.dtype if a.is_floating_point() else torch.float32
        ratio_a, ratio_b = (a_scale / c_scale).to(dtype), (b_scale / c_scale).to(dtype)
        zero = torch.zeros((), dtype=dtype, device=a.device)
        zp_a, zp_b, zp_c = (zero if z is None else z.to(dtype) for z in (a_zp, b_zp, c_zp))
        fixed = zp_c - (ratio_a * zp_a + ratio_b * zp_b)
        levels = _fma(a.to(dtype), ratio_a, _fma(b.to(dtype), ratio_b, fixed))
        return _levels_of(levels, None, lo, hi)
    return qlinear_add


@_op("QLinearMul", domain=MS)
def _qlinear_mul(node):
    """A, A_scale, A_zero_point, B, B_scale, B_zero_point, C_scale, optional C_zero_point:
    ``(A - A_zp)(B - B_zp) * (A_scale * B_scale / C_scale) + C_zp``, rounded (the zero point added before
    rounding, as MLAS's SSE2 and NEON kernels do)."""
    lo, hi = _out_range(node, 7, 2, 5)

    def qlinear_mul(a, a_scale, a_zp, b, b_scale, b_zp, c_scale, c_zp=None):
        dtype = a.dtype if a.is_floating_point() else torch.float32
        acc = _centered(a, a_zp, dtype) * _centered(b, b_zp, dtype)
        return _requantize(acc, a_scale * b_scale / c_scale, c_zp, lo, hi, zero_point_first=True)
    return qlinear_mul


def _lookup_op(fn_of: Callable[[_Node], Callable]) -> Callable[[_Node], Callable]:
    """X, X_scale, X_zero_point, Y_scale, Y_zero_point: ``quantize(fn(dequantize(X)))``, what ONNX Runtime's
    256-entry lookup table holds."""
    def build(node):
        lo, hi = _out_range(node, 4, 2)
        fn = fn_of(node)

        def qlinear_lookup(x, x_scale, x_zp, y_scale, y_zp=None):
            dtype = x.dtype if x.is_floating_point() else torch.float32
            return _quantize(fn(x_scale.to(dtype) * _centered(x, x_zp, dtype)), y_scale, y_zp, lo, hi)
        return qlinear_lookup
    return build


_op("QLinearSigmoid", domain=MS)(_lookup_op(lambda node: torch.sigmoid))
_op("QLinearLeakyRelu", domain=MS)(_lookup_op(
    lambda node: (lambda x, alpha=node.attr("alpha", 0.01): torch.where(x >= 0, x, alpha * x))))


@_op("QLinearConcat", domain=MS)
def _qlinear_concat(node):
    """Y_scale, Y_zero_point, then (X, X_scale, X_zero_point) per input; attribute axis. An input with the
    output's scale and zero point is copied, any other requantized to them."""
    if len(node.inputs) < 5 or (len(node.inputs) - 2) % 3:
        raise _Unmappable("QLinearConcat whose inputs are not (tensor, scale, zero point) triples")
    axis = node.attr("axis")
    lo, hi = _out_range(node, 1, 4)
    count = (len(node.inputs) - 2) // 3

    def same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
        if a is None or b is None:
            return a is None and b is None
        return a.numel() == b.numel() and bool(torch.equal(a.reshape(-1).double(), b.reshape(-1).double()))

    def known_same(i: int) -> bool:
        """Input i's scale and zero point are constants equal to the output's."""
        scale, zp = node.const(3 + 3 * i), node.const(4 + 3 * i)
        if node.const(0) is None or scale is None or (node.has(4 + 3 * i) and zp is None) \
                or (node.has(1) and node.const(1) is None):
            return False
        return same(scale, node.const(0)) and same(zp, node.const(1))

    copied = [known_same(i) for i in range(count)]

    def qlinear_concat(y_scale, y_zp, *triples):
        parts = []
        for i in range(count):
            x, x_scale, x_zp = triples[3 * i: 3 * i + 3]
            dtype = x.dtype if x.is_floating_point() else torch.float32
            if copied[i]:
                parts.append(x.to(dtype))
            else:
                parts.append(_quantize(x_scale.to(dtype) * _centered(x, x_zp, dtype), y_scale, y_zp, lo, hi))
        return torch.cat(parts, axis)
    return qlinear_concat


# -- pooling -------------------------------------------------------------------------------------------------

def _global_average(x, x_scale, x_zp, y_scale, y_zp, lo, hi):
    dtype = x.dtype if x.is_floating_point() else torch.float32
    acc = _centered(x, x_zp, dtype).sum(dim=tuple(range(2, x.dim())), keepdim=True)
    return _requantize(acc, x_scale / (y_scale * math.prod(x.shape[2:])), y_zp, lo, hi)


@_op("QLinearGlobalAveragePool", domain=MS)
def _qlinear_global_average_pool(node):
    """X, x_scale, x_zero_point, y_scale, y_zero_point; attribute channels_last (0 only)."""
    _refuse_channels_last(node)
    lo, hi = _out_range(node, 4, 2)
    return lambda x, x_scale, x_zp, y_scale, y_zp=None: _global_average(x, x_scale, x_zp, y_scale, y_zp, lo, hi)


@_op("QLinearAveragePool", domain=MS)
def _qlinear_average_pool(node):
    """X, x_scale, x_zero_point, y_scale, y_zero_point; AveragePool's attributes, channels_last 0 only."""
    _refuse_channels_last(node)
    lo, hi = _out_range(node, 4, 2)
    pool = _pool_builder("avg")(node)
    kernel = list(node.attr("kernel_shape"))
    unpadded = node.attr("auto_pad", "NOTSET") in ("NOTSET", "VALID") and not any(node.attr("pads", []))

    def qlinear_average_pool(x, x_scale, x_zp, y_scale, y_zp=None):
        if unpadded and list(x.shape[2:]) == kernel:  # ONNX Runtime runs this case as the global pool
            return _global_average(x, x_scale, x_zp, y_scale, y_zp, lo, hi)
        dtype = x.dtype if x.is_floating_point() else torch.float32
        real = pool(x_scale.to(dtype) * _centered(x, x_zp, dtype))
        return _quantize(real, y_scale, y_zp, lo, hi, zero_point_first=True)  # as ONNX Runtime's kernel
    return qlinear_average_pool
