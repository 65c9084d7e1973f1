"""The graph as a program: constants folded, steps bound, fused and pruned."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import onnx
import torch
import torch.nn.functional as F

from dlforge.errors import InputError
from dlforge.onnx_torch.nodes import UnsupportedGraph, _BUILDERS, _CONTROL_FLOW, _MULTI, _Node, _Unmappable, _tensor


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
