"""The differentiable module and the loader."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import torch

from dlforge.artifact import is_artifact, open_artifact
from dlforge.errors import InputError
from dlforge.onnx_external import check_external_data
from dlforge.onnx_torch.graph import _GraphReader, _dead_code_eliminated, _fused, _op_name
from dlforge.onnx_torch.nodes import UnsupportedGraph, _CONV_OPS, _DTYPES, _QUANTIZED_OPS


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
        # every value the program computes, by its ONNX name (what :meth:`values` reads)
        self.value_names = {name: slot_index[slot] for name, slot in reader.slots.items() if slot in slot_index}

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

    def values(self, x: torch.Tensor, names: list[str]) -> list[torch.Tensor]:
        """The graph's intermediate values ``names`` (ONNX value names) on ``x``, differentiable; what a detector on
        the engine's features reads. Raises :class:`UnsupportedGraph` for a value the program does not compute (one
        fused away or not on the way to the first output) and for a graph run per fixed-size group."""
        missing = [n for n in names if n not in self.value_names]
        if missing:
            raise UnsupportedGraph(f"the converted graph does not compute {missing[0]!r} (fused away or not on the way "
                                   "to the first output)")
        if self.grouped:
            raise UnsupportedGraph(f"the graph's batch is fixed at {self.static_batch}; its intermediate values are "
                                   "only read from graphs that take any batch")
        env = self._execute(x)
        return [env[self.value_names[n]] for n in names]

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
