"""``onnx_from_checkpoint``: torch.onnx (dynamo) export, checks, and numerical verification.

The exported graph must pass ``onnx.checker`` and strict shape inference, and ONNX Runtime's output
on real samples from the model's dataset must match eager PyTorch within ``atol``. If it does not,
the export fails (exit code 1) and nothing is saved: a model that silently computes something else
is worse than no model.
"""

from __future__ import annotations

import collections
import dataclasses
import contextlib
import io
import json
import logging
import os
import warnings
from typing import TYPE_CHECKING

from dlforge.artifact import Artifact, ArtifactWriter, Card, ModelInfo, TensorSpec
from dlforge.env import environment
from dlforge.errors import ArtifactError, InputError, StageFailed, require
from dlforge.export.options import ExportOptions

if TYPE_CHECKING:  # numpy and the datasets load when a model exports, not when the CLI starts
    import numpy as np

PAYLOAD = "model.onnx"


def onnx_from_checkpoint(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: ExportOptions | None = None,
    *,
    force: bool = False,
    **settings,
) -> Artifact:
    """Export a checkpoint to ONNX and verify it; write an onnx artifact to ``out_dir``.

    ``options`` (or ``settings``, its fields as keywords: ``opset=17``) says how; see
    :class:`ExportOptions`. The graph is verified against eager PyTorch on ``samples`` test images
    of the model's own dataset (see :func:`dlforge.data.load_training_data`).

    Raises:
        InputError: a bad option, checkpoint or dataset; a checkpoint whose PyTorch outputs are not
            finite (nothing to verify against).
        StageFailed: the export failed, or the verification exceeded ``atol`` (nothing is written).
    """
    options = ExportOptions.build(options, **settings)
    torch = require("torch", "toolkit", "export")
    onnx = require("onnx", "toolkit", "export")
    require("onnxscript", "toolkit", "export")
    from dlforge.train import load_checkpoint

    model, ckpt = load_checkpoint(checkpoint)
    info = ckpt.card.model
    architecture = ckpt.card.sections.get("architecture", {})
    if options.dynamic_batch and architecture.get("dynamic_batch") is False:
        raise InputError(f"{ckpt.path} holds a torch.export program with a fixed batch of {architecture.get('batch')} "
                         "(its batch could not be made dynamic); export it with --static-batch")
    with ArtifactWriter(out_dir, force=force, protect=[checkpoint]) as writer:
        x = _verification_images(ckpt, options)
        _check_outputs(torch, model, ckpt, x[:2])
        path = writer.file(PAYLOAD)
        _export(torch, model, x[:2] if options.dynamic_batch else x[:1], path, options.opset, options.dynamic_batch,
                options.exporter)
        proto = _checked_graph(onnx, path)
        model_info = _exported_info(info, options.dynamic_batch)
        _write_metadata(proto, model_info)
        _keep_fp32(proto, [f"{path}.{scope}" if path else scope for path, module in model.named_modules()
                           for scope in getattr(module, "keep_fp32", ())])
        onnx.save(proto, str(path))
        verification = verify_against_torch(model, path, x, atol=options.atol, dynamic_batch=options.dynamic_batch,
                                            classifier=info.task == "classification")
        _judge(verification, options.atol)
        counts = dict(collections.Counter(node.op_type for node in proto.graph.node))
        card = Card(kind="onnx", payload=PAYLOAD, model=model_info, parent=ckpt.lineage(),
                    params={**options.params(), "samples": len(x)}, env=environment(),
                    sections={"verification": verification,
                              "graph": {"opset": options.opset, "nodes": len(proto.graph.node), "ops": counts}})
        return writer.commit(card)


def _verification_images(ckpt: Artifact, options: ExportOptions) -> np.ndarray:
    """Up to ``options.samples`` test images of the checkpoint's dataset, checked against its input."""
    from dlforge.data import load_training_data

    info = ckpt.card.model
    dataset = load_training_data(ckpt, options.data, options.data_dir)
    expected = tuple(info.inputs[0].shape[1:])
    if tuple(dataset.input_shape) != expected:
        raise InputError(f"dataset {dataset.name} has images {dataset.input_shape}, the model expects "
                         f"{expected}; pass the --data it was trained on")
    return dataset.x_test[:options.samples]


def _check_outputs(torch, model, ckpt: Artifact, x: np.ndarray) -> None:
    """The model must produce what its card says (a classifier's logits, an autoencoder's images)."""
    info = ckpt.card.model
    with torch.inference_mode():
        got = tuple(model(torch.from_numpy(x)).shape[1:])
    promised = tuple(info.outputs[0].shape[1:])
    if got != promised:
        raise ArtifactError(f"{ckpt.path}: the card says {info.name} is a {info.task} model with outputs "
                            f"{info.outputs[0].name} {list(promised)} per image, but it produces {list(got)}; "
                            "the card does not belong to these weights: retrain the checkpoint")


def _checked_graph(onnx, path):
    """The exported graph, after ``onnx.checker`` and strict shape inference."""
    proto = onnx.load(str(path))
    try:
        onnx.checker.check_model(proto, full_check=True)
        return onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise StageFailed(f"the exported graph fails the ONNX checker: {exc}".splitlines()[0]) from exc


def _exported_info(info: ModelInfo, dynamic_batch: bool) -> ModelInfo:
    """The checkpoint's model description with the batch dimension the export fixed."""
    batch = "batch" if dynamic_batch else 1
    return dataclasses.replace(
        info,
        inputs=(TensorSpec("input", (batch, *info.inputs[0].shape[1:]), "float32"),),
        outputs=(TensorSpec(info.outputs[0].name, (batch, *info.outputs[0].shape[1:]), "float32"),),
    )


def _judge(verification: dict, atol: float) -> None:
    """Raise :class:`StageFailed` unless ONNX Runtime matched PyTorch within ``atol``."""
    if verification["passed"]:
        return
    agreement = verification.get("top1_agreement")
    agreement = f"; top-1 agreement {agreement:.4f}" if agreement is not None else ""
    if not verification["onnx_finite"]:
        raise StageFailed("ONNX Runtime's output holds NaN or infinite values where PyTorch's is finite; nothing "
                          "was saved. Try another --opset or --exporter")
    raise StageFailed(
        f"ONNX output differs from PyTorch by up to {verification['max_abs_diff']:.3g} "
        f"(> --atol {atol:g}{agreement}); nothing was "
        f"saved. Try another --opset or --exporter, or raise --atol if the difference is acceptable")


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


def _keep_fp32(proto, scopes) -> None:
    """Record the modules that an INT8 build must leave in fp32 (a module's ``keep_fp32`` names its sub-modules, e.g.
    an audio model's feature front end: the power spectrum's dynamic range does not fit eight bits), by their full
    path (``1.frontend`` inside a normalization wrapper)."""
    if scopes:
        entry = proto.metadata_props.add()
        entry.key, entry.value = KEEP_FP32_KEY, json.dumps(list(scopes))


KEEP_FP32_KEY = "dlforge.keep_fp32"


def _write_metadata(proto, info: ModelInfo) -> None:
    """Name the output as the card does and store the model's facts in the graph (:func:`set_metadata`)."""
    out_name = info.outputs[0].name
    proto.graph.output[0].name = out_name
    for node in proto.graph.node:
        node.output[:] = [out_name if o == "output" else o for o in node.output]
    set_metadata(proto, info)


def set_metadata(proto, info: ModelInfo) -> None:
    """Store the model's facts in the graph itself, so a bare .onnx still says what it expects."""
    meta = {
        "dlforge.model": info.name,
        "dlforge.task": info.task,
        "dlforge.value_range": json.dumps(list(info.value_range)),
        "dlforge.labels": json.dumps(list(info.labels)),
        "dlforge.preprocessing": info.preprocessing or "",
        "dlforge.inputs": json.dumps([t.to_dict() for t in info.inputs]),
    }
    if info.audio:
        meta["dlforge.audio"] = json.dumps(info.audio)
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def verify_against_torch(model, onnx_path, x: np.ndarray, *, atol: float, dynamic_batch: bool,
                         classifier: bool = True) -> dict:
    """Compare ONNX Runtime with eager PyTorch on ``x``: max abs diff and (classifiers) top-1 agreement.

    ``passed`` needs every output finite and within ``atol``: a NaN difference never passes.

    Raises:
        InputError: PyTorch's own outputs are not finite (the checkpoint is broken: nothing to verify).
    """
    import numpy as np
    import onnxruntime as ort
    import torch

    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    if not np.isfinite(expected).all():
        bad = int((~np.isfinite(expected.reshape(len(x), -1))).any(1).sum())
        raise InputError(f"the checkpoint's own PyTorch outputs are NaN or infinite on {bad} of {len(x)} test images "
                         "(its weights hold NaN/inf, or training diverged): there is nothing to verify the export "
                         "against; retrain the checkpoint")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    if dynamic_batch:
        chunks = [x[:1], x[1:8], x[8:]]  # batch 1, a small batch and a large one exercise the dynamic dim
    else:
        chunks = [x[i:i + 1] for i in range(len(x))]
    got = np.concatenate([session.run(None, {name: c})[0] for c in chunks if len(c)])
    finite = bool(np.isfinite(got).all())
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    result = {
        "max_abs_diff": float(diff.max()) if finite else None,
        "mean_abs_diff": float(diff.mean()) if finite else None,
        "samples": int(len(x)),
        "atol": atol,
        "onnx_finite": finite,
        # not a classifier: the numerics alone decide
        "top1_agreement": float((got.argmax(1) == expected.argmax(1)).mean()) if classifier else None,
    }
    result["passed"] = bool(finite and result["max_abs_diff"] <= atol)
    return result
