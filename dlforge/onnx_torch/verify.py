"""Proving a converted graph against the engine it stands for."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from dlforge.onnx_torch.module import OnnxTorchModule
from dlforge.onnx_torch.nodes import FP32_ATOL, QUANTIZED_TOP1, UnsupportedGraph


# -- proving it against the engine ----------------------------------------------------------------------

def match_engine(module: OnnxTorchModule, predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, *,
                 batch_size: int = 256) -> dict:
    """Compare ``module(x)`` with ``predict(x)``, the engine's own numpy logits.

    fp32 graphs must agree within ``max |diff| <= 1e-4``; quantized graphs on the top-1 class of at
    least 99.5% of the samples (ONNX Runtime runs QDQ graphs in integer arithmetic, which rounds a
    few values to the neighbouring level, so their logits differ by about one quantization step).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    device = next(module.buffers(), torch.empty(0)).device
    with torch.no_grad():
        ours = np.concatenate([module(torch.from_numpy(x[i:i + batch_size]).to(device)).float().cpu().numpy()
                               for i in range(0, len(x), batch_size)])
    theirs = np.asarray(predict(x), dtype=np.float32)
    if ours.shape != theirs.shape:
        raise UnsupportedGraph(f"the converted graph gives outputs of shape {ours.shape}, the engine {theirs.shape}; "
                               "pass the engine's own predict for the same model")
    return judge_match(ours, theirs, module.quantized)


def judge_match(ours: np.ndarray, theirs: np.ndarray, quantized: bool) -> dict:
    """The match criterion of :func:`match_engine` on two sets of logits for the same inputs: fp32 within
    ``max |diff| <= 1e-4``, quantized on the top-1 class of at least 99.5% of the samples."""
    n = len(ours)
    max_abs_diff = float(np.max(np.abs(ours - theirs))) if ours.size else 0.0
    top1 = float(np.mean(ours.reshape(n, -1).argmax(1) == theirs.reshape(n, -1).argmax(1)))
    if quantized:
        criterion, passed = "top1_agreement>=0.995", top1 >= QUANTIZED_TOP1
    else:
        criterion, passed = "max_abs_diff<=1e-4", max_abs_diff <= FP32_ATOL
    return {"criterion": criterion, "max_abs_diff": max_abs_diff, "top1_agreement": top1, "samples": n,
            "passed": bool(passed)}


def check_matches_engine(module: OnnxTorchModule, predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, *,
                         what: str) -> dict:
    """:func:`match_engine`, raising :class:`UnsupportedGraph` when the module does not match the engine."""
    result = match_engine(module, predict, x)
    if not result["passed"]:
        raise UnsupportedGraph(
            f"{what}: the converted graph does not match the engine (max |diff| {result['max_abs_diff']:.3g}, top-1 "
            f"agreement {result['top1_agreement']:.2%} on {result['samples']} samples; needs {result['criterion']}); "
            "attack the PyTorch checkpoint instead, and report the graph's ops (dlforge inspect)")
    return result
