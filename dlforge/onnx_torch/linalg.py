"""Linear algebra, convolution, pooling and the LSTM."""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from dlforge.onnx_torch.elementwise import _activation
from dlforge.onnx_torch.nodes import MS, _Node, _Unmappable, _op


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
