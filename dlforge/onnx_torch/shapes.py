"""Shapes and indexing: reshape, transpose, slice, gather, pad and their kin."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dlforge.onnx_torch.nodes import _Unmappable, _op


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
