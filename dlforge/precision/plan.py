"""A per-layer precision plan: which ONNX nodes an INT8 graph keeps in fp32, named as the graph names them.

The plan lives in the QDQ graph itself (no Q/DQ pairs around a kept node), so every backend that
compiles the graph gets the same assignment. The search that finds a plan on measurements is the
build stage's (:mod:`dlforge.build.mixed`); this module names the units, reads and checks a plan
file, and writes the plan document saved beside an engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dlforge.errors import InputError


@dataclass(frozen=True)
class Unit:
    """A node the quantizer would put in INT8, and where it came from in PyTorch."""

    name: str
    op_type: str
    module: str | None  # PyTorch module path ("features.3"), "" for the top-level forward, None when unknown


def module_path(node) -> str | None:
    """The PyTorch module path of an exported ONNX node, or None when the graph does not say.

    torch.onnx's dynamo exporter stores ``namespace`` metadata: ``": pkg.Net/features: Sequential/
    features.3: Conv2d/conv2d: aten.conv2d.default"``, one ``name: type`` per scope, the last one the
    aten call; the path is the innermost module scope's name. The TorchScript exporter names nodes
    after their scope instead: ``/features/features.3/Conv``.
    """
    meta = {p.key: p.value for p in node.metadata_props}
    if "namespace" in meta:
        scopes = [s.split(": ", 1) for s in meta["namespace"].split("/")]
        modules = [s[0].strip() for s in scopes if len(s) == 2 and not s[1].startswith(("aten.", "prims."))]
        return modules[-1] if modules else ""
    if node.name.startswith("/") and node.name.count("/") >= 2:
        return node.name.strip("/").split("/")[-2]
    return None


def plan_units(prepared: Path, parent: Path | None = None) -> list[Unit]:
    """The named nodes of the ``prepared`` graph that ONNX Runtime's QDQ quantizer handles, in graph order.

    Module paths come from ``parent`` (the exported graph, whose metadata pre-processing drops),
    matched by node name; a node pre-processing added takes the module of the node computing its input.
    """
    import onnx

    from dlforge.precision.qdq import quantizable_ops

    quantizable = quantizable_ops()
    source = onnx.load(str(parent or prepared), load_external_data=False)
    modules = {n.name: module_path(n) for n in source.graph.node if n.name}
    model = onnx.load(str(prepared), load_external_data=False) if parent is not None else source
    made_by: dict[str, str | None] = {}  # tensor -> module of the node that computes it
    units: list[Unit] = []
    for n in model.graph.node:
        module = modules.get(n.name)
        if module is None:  # a node pre-processing added (a layout Transpose): its input's module
            module = next((made_by[i] for i in n.input if made_by.get(i) is not None), None)
        made_by.update({o: module for o in n.output})
        if n.name and n.op_type in quantizable:
            units.append(Unit(n.name, n.op_type, module))
    return units


def check_plan(kept: list[str], units: list[Unit], source: str) -> tuple[str, ...]:
    """``kept`` if every name is a quantizable node of the graph; else a one-line error naming the strays."""
    import difflib

    names = [u.name for u in units]
    unknown = [k for k in kept if k not in names]
    if unknown:
        hints = [m for k in unknown[:3] for m in difflib.get_close_matches(k, names, n=1)]
        raise InputError(f"precision plan {source} names {len(unknown)} node(s) the model has no quantizable node for: "
                         f"{', '.join(unknown[:5])}" + (f" (did you mean {', '.join(hints)}?)" if hints else "")
                         + "; plans name ONNX nodes of this model (dlforge inspect shows them)")
    return tuple(dict.fromkeys(kept))


def read_plan(path: str, units: list[Unit]) -> tuple[str, ...]:
    """The nodes kept in fp32 by a plan file (``plan.json`` of an engine, or that engine's directory)."""
    import json

    p = Path(path)
    p = p / "plan.json" if p.is_dir() else p
    try:
        plan = json.loads(p.read_text(encoding="utf-8"))
        kept = plan["keep_fp32"]
        if not isinstance(kept, list) or not all(isinstance(k, str) for k in kept):
            raise TypeError
    except FileNotFoundError:
        raise InputError(f"precision plan {path} not found: give a plan.json or an engine built with --precision auto")
    except (ValueError, KeyError, TypeError):
        raise InputError(f"precision plan {p} is not a plan: expected JSON with \"keep_fp32\": [node names]")
    return check_plan(kept, units, str(p))


def plan_document(kept: tuple[str, ...], units: list[Unit]) -> dict:
    """The plan as saved beside the engine: kept nodes with their op types and PyTorch module paths."""
    by_name = {u.name: u for u in units}
    return {"keep_fp32": list(kept), "quantizable_nodes": len(units),
            "nodes": [{"onnx_node": k, "op_type": by_name[k].op_type, "module": by_name[k].module} for k in kept]}
