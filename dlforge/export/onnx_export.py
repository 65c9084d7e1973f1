"""``onnx_from_checkpoint``: torch.onnx (dynamo) export, checks, and numerical verification.

The exported graph must pass ``onnx.checker`` and strict shape inference, and ONNX Runtime's output
on real samples from the model's dataset must match eager PyTorch within ``atol``. If it does not,
the export fails (exit code 1) and nothing is saved: a model that silently computes something else
is worse than no model.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings

import numpy as np

from dlforge.artifact import Artifact, ArtifactWriter, Card, ModelInfo, TensorSpec
from dlforge.data import load_dataset
from dlforge.env import environment
from dlforge.errors import InputError, StageFailed, require

PAYLOAD = "model.onnx"
EXPORTERS = ("dynamo", "torchscript")
DEFAULT_OPSET = 18


def onnx_from_checkpoint(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    atol: float = 1e-4,
    samples: int = 512,
    exporter: str = "dynamo",
    data: str | None = None,
    data_dir: str | os.PathLike | None = None,
    force: bool = False,
) -> Artifact:
    """Export a checkpoint to ONNX and verify it; write an onnx artifact to ``out_dir``.

    Args:
        opset: ONNX opset to target.
        dynamic_batch: export the batch dimension as dynamic (``"batch"``); otherwise fixed at 1.
        atol: largest allowed absolute difference between ONNX Runtime and eager PyTorch outputs.
        samples: how many test images to verify on.
        exporter: ``"dynamo"`` (torch.export based) or, as an explicit fallback, ``"torchscript"``.
        data, data_dir: where to find the model's dataset, if not where training found it.

    Raises:
        StageFailed: the verification exceeded ``atol`` (nothing is written).
    """
    if exporter not in EXPORTERS:
        raise InputError(f"unknown exporter {exporter!r}; expected one of {', '.join(EXPORTERS)}")
    if not 7 <= opset <= 23:
        raise InputError(f"--opset {opset} is outside the range dlforge exports (7..23)")
    if atol <= 0 or samples <= 0:
        raise InputError("--atol and --samples must be positive")
    torch = require("torch", "toolkit", "export")
    onnx = require("onnx", "toolkit", "export")
    require("onnxscript", "toolkit", "export")
    from dlforge.train import load_checkpoint

    model, ckpt = load_checkpoint(checkpoint)
    info = ckpt.card.model
    with ArtifactWriter(out_dir, force=force) as writer:
        dataset = load_dataset(data or ckpt.card.params["data"], data_dir or ckpt.card.params.get("data_dir"))
        if tuple(dataset.input_shape) != tuple(info.inputs[0].shape[1:]):
            raise InputError(f"dataset {dataset.name} has images {dataset.input_shape}, the model expects "
                             f"{tuple(info.inputs[0].shape[1:])}; pass the --data it was trained on")
        x = dataset.x_test[:samples]
        path = writer.file(PAYLOAD)
        _export(torch, model, x[:2] if dynamic_batch else x[:1], path, opset, dynamic_batch, exporter)
        proto = onnx.load(str(path))
        try:
            onnx.checker.check_model(proto, full_check=True)
            proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
            raise StageFailed(f"the exported graph fails the ONNX checker: {exc}".splitlines()[0]) from exc
        batch = "batch" if dynamic_batch else 1
        model_info = ModelInfo(
            name=info.name, task=info.task,
            inputs=(TensorSpec("input", (batch, *info.inputs[0].shape[1:]), "float32"),),
            outputs=(TensorSpec(info.outputs[0].name, (batch, *info.outputs[0].shape[1:]), "float32"),),
            value_range=info.value_range, labels=info.labels, dataset=info.dataset,
            preprocessing=info.preprocessing, config=info.config,
        )
        _write_metadata(proto, model_info)
        onnx.save(proto, str(path))
        verification = verify_against_torch(model, path, x, atol=atol, dynamic_batch=dynamic_batch)
        if not verification["passed"]:
            raise StageFailed(
                f"ONNX output differs from PyTorch by up to {verification['max_abs_diff']:.3g} "
                f"(> --atol {atol:g}; top-1 agreement {verification['top1_agreement']:.4f}); nothing was "
                f"saved. Try another --opset or --exporter, or raise --atol if the difference is acceptable")
        counts = {}
        for node in proto.graph.node:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
        card = Card(
            kind="onnx", payload=PAYLOAD, model=model_info, parent=ckpt.lineage(),
            params={"opset": opset, "dynamic_batch": dynamic_batch, "atol": atol, "exporter": exporter,
                    "samples": len(x)},
            env=environment(),
            sections={"verification": verification,
                      "graph": {"opset": opset, "nodes": len(proto.graph.node), "ops": counts}},
        )
        return writer.commit(card)


def _export(torch, model, example: np.ndarray, path, opset: int, dynamic_batch: bool, exporter: str) -> None:
    """Run torch.onnx.export with its chatter (progress prints, warnings) kept off stdout."""
    args = (torch.from_numpy(example),)
    noise = io.StringIO()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(noise):
        warnings.simplefilter("ignore")
        try:
            if exporter == "dynamo":
                dynamic = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
                program = torch.onnx.export(model, args, dynamo=True, opset_version=opset, input_names=["input"],
                                            output_names=["output"], dynamic_shapes=dynamic, verbose=False)
                program.save(str(path), external_data=False)
            else:
                axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
                torch.onnx.export(model, args, str(path), dynamo=False, opset_version=opset,
                                  input_names=["input"], output_names=["output"], dynamic_axes=axes)
        except Exception as exc:  # the exporters raise many types; each is a failed export
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            other = "torchscript" if exporter == "dynamo" else "dynamo"
            raise StageFailed(f"torch.onnx.export ({exporter}) failed: {first}; try --exporter {other} "
                              "or another --opset") from exc


def _write_metadata(proto, info: ModelInfo) -> None:
    """Store the model's facts in the graph itself, so a bare .onnx still says what it expects."""
    out_name = info.outputs[0].name
    proto.graph.output[0].name = out_name
    for node in proto.graph.node:
        node.output[:] = [out_name if o == "output" else o for o in node.output]
    meta = {
        "dlforge.model": info.name,
        "dlforge.task": info.task,
        "dlforge.value_range": json.dumps(list(info.value_range)),
        "dlforge.labels": json.dumps(list(info.labels)),
        "dlforge.preprocessing": info.preprocessing or "",
        "dlforge.inputs": json.dumps([t.to_dict() for t in info.inputs]),
    }
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def verify_against_torch(model, onnx_path, x: np.ndarray, *, atol: float, dynamic_batch: bool) -> dict:
    """Compare ONNX Runtime with eager PyTorch on ``x``: max abs diff and top-1 agreement."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    if dynamic_batch:
        chunks = [x[:1], x[1:8], x[8:]]  # batch 1, a small batch and a large one exercise the dynamic dim
        got = np.concatenate([session.run(None, {name: c})[0] for c in chunks if len(c)])
    else:
        got = np.concatenate([session.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    result = {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "samples": int(len(x)),
        "atol": atol,
    }
    if expected.ndim == 2:
        result["top1_agreement"] = float((got.argmax(1) == expected.argmax(1)).mean())
    else:
        result["top1_agreement"] = None  # not a classifier: the numerics alone decide
    result["passed"] = bool(result["max_abs_diff"] <= atol and np.isfinite(got).all())
    return result


