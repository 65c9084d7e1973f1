"""The engine's own graph, made differentiable: what the audit's *white-box (engine)* route attacks.

An ONNX Runtime engine is an ONNX file (offline-optimized fp32 with ``com.microsoft`` fused ops,
or INT8 QDQ); a third-party model is an ONNX file; a TensorRT engine is a plan compiled from the
ONNX artifact it names as its parent. :func:`engine_graph` converts the first of these graphs that
:mod:`dlforge.onnx_torch` can map — the engine's own file first, then its verified ancestors — and
keeps it only when it computes what the engine computes, measured on the engine itself: fp32 max
abs logit difference <= 1e-4, quantized graphs top-1 agreement >= 99.5%, on the audit's clean
inputs and on the same inputs under uniform noise of the largest audited eps (attacks leave the
data manifold; the match must hold there too). Quantize/dequantize pairs get straight-through
gradients (BPDA, Athalye et al. 2018); the forward pass is the exact INT8 arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlforge.errors import InputError
from dlforge.runtime.deployed import DeployedModel

MATCH_SAMPLES = 256


@dataclass
class EngineGraph:
    """One engine's differentiable graph, or why there is none."""

    engine: str
    model: object | None = None  # TorchModel over the converted graph
    graph: str | None = None  # which ONNX file was converted
    origin: str | None = None  # "engine" (its own file) or the ancestor's kind ("onnx")
    match: dict | None = None
    reason: str | None = None  # why no graph is usable
    gradients: dict | None = None  # agreement of its input gradients with the source's (gradient_agreement)

    def describe(self) -> dict:
        return {"engine": self.engine, "graph": self.graph, "origin": self.origin, "match": self.match,
                "usable": self.model is not None, "reason": self.reason, "gradient_agreement": self.gradients}


def candidate_graphs(engine: DeployedModel) -> list[tuple[Path, str]]:
    """ONNX files that may compute what ``engine`` computes, nearest first: ``(path, origin)``."""
    if engine.artifact is None:
        return [(engine.path, "engine")]
    out = []
    for i, artifact in enumerate(engine.lineage()):
        if artifact.kind not in ("engine", "onnx") or artifact.payload_path.suffix != ".onnx":
            continue
        out.append((artifact.payload_path, "engine" if i == 0 else f"{artifact.kind} artifact {artifact.path}"))
    return out


def engine_graph(engine: DeployedModel, x: np.ndarray, *, noise: float, value_range, device: str = "cpu",
                 seed: int = 0) -> EngineGraph:
    """Convert and verify the first graph of ``engine`` that matches it on ``x`` (clean and noisy)."""
    from dlforge.adversarial.attacks.torch_model import TorchModel
    from dlforge.onnx_torch import UnsupportedGraph, match_engine, torch_module_from_onnx

    probe = _probe_inputs(x[:MATCH_SAMPLES], noise, value_range, seed)
    reasons = []
    candidates = candidate_graphs(engine)
    for path, origin in candidates:
        try:
            module = torch_module_from_onnx(path)
        except UnsupportedGraph as exc:
            reasons.append(f"{path.name} ({origin}): {exc}")
            continue
        match = match_engine(module.eval(), engine.predict, probe)  # on the CPU, before it moves to the device
        if match["passed"]:
            return EngineGraph(engine.label, TorchModel(module, device), str(path), origin, match)
        reasons.append(f"{path.name} ({origin}) does not match the engine: {_figures(match)}")
    if not candidates:
        reasons.append(f"{engine.backend} engine holds no ONNX graph and its lineage names no ONNX artifact")
    return EngineGraph(engine.label, reason="; ".join(reasons))


GRADIENT_SAMPLES = 64


def gradient_agreement(reference, graph, x: np.ndarray, y: np.ndarray) -> dict:
    """Per-sample cosine between the input gradients (cross-entropy) of ``graph`` and of ``reference`` (the
    PyTorch source), on up to :data:`GRADIENT_SAMPLES` inputs, and the ratio of their norms.

    An fp32 engine graph should agree to ~1; an INT8 graph's straight-through gradients differ, but
    not in direction only by chance: a median near 0 says the engine route's attacks are blind."""
    x, y = x[:GRADIENT_SAMPLES], y[:GRADIENT_SAMPLES]
    a = reference.input_gradients(x, y).reshape(len(x), -1).astype(np.float64)
    b = graph.input_gradients(x, y).reshape(len(x), -1).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    ok = (na > 0) & (nb > 0)
    cos = np.where(ok, (a * b).sum(1) / np.where(ok, na * nb, 1.0), np.nan)
    judged = cos[ok]
    return {"samples": int(ok.sum()), "cosine_median": float(np.median(judged)) if len(judged) else None,
            "cosine_min": float(judged.min()) if len(judged) else None,
            "norm_ratio_median": float(np.median(nb[ok] / na[ok])) if len(judged) else None,
            "cosine": [None if np.isnan(c) else round(float(c), 4) for c in cos]}


def _probe_inputs(x: np.ndarray, noise: float, value_range, seed: int) -> np.ndarray:
    if noise <= 0:
        return x
    rng = np.random.default_rng(seed)
    noisy = np.clip(x + rng.uniform(-noise, noise, size=x.shape).astype(x.dtype), *value_range)
    return np.concatenate([x, noisy.astype(x.dtype)])


def _figures(match: dict) -> str:
    return (f"max abs logit difference {match['max_abs_diff']:.3g}, top-1 agreement "
            f"{match['top1_agreement'] * 100:.2f}% on {match['samples']} inputs (needs {match['criterion']})")


def describe_match(g: dict) -> str:
    """One line for the report (``g``: :meth:`EngineGraph.describe`): which graph the engine's
    gradients come from, and how well it matches the engine."""
    if not g["usable"]:
        return f"{g['engine']}: none — {g['reason']}"
    where = "its own graph" if g["origin"] == "engine" else f"the graph of its {g['origin']}"
    agreement = g.get("gradient_agreement")
    cosine = (f"; input-gradient cosine with the source median {agreement['cosine_median']:.3f} (min "
              f"{agreement['cosine_min']:.3f}, norm ratio {agreement['norm_ratio_median']:.3g}) on "
              f"{agreement['samples']} inputs" if agreement and agreement.get("cosine_median") is not None else "")
    return f"{g['engine']}: {where} ({Path(g['graph']).name}; {_figures(g['match'])}{cosine})"


def require_graphs(graphs: list[EngineGraph]) -> None:
    """Raise when engine gradients were required but an engine has no usable graph."""
    missing = [g for g in graphs if g.model is None]
    if missing:
        raise InputError("--engine-gradients require: " + "; ".join(f"{g.engine}: {g.reason}" for g in missing))
