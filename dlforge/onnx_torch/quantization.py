"""QuantizeLinear / DequantizeLinear with the clipped straight-through gradient."""

from __future__ import annotations

from typing import Callable

import torch
from onnx import TensorProto

from dlforge.onnx_torch.nodes import MS, _Node, _QUANT_RANGES, _TORCH_QUANT_TYPES, _Unmappable, _op


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
