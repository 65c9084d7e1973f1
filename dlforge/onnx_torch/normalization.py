"""Reductions and normalization (batch, instance, layer, RMS, ONNX Runtime's skip layer norm)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from dlforge.onnx_torch.nodes import MS, _Node, _Unmappable, _op


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
