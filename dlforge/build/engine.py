"""``engine_from_onnx``: compile an ONNX artifact for a backend and precision, with an accuracy gate.

Every engine is evaluated against its parent ONNX model on the held-out test split; the card
records accuracy, parent accuracy, the drop in percentage points and top-1 agreement, and
``max_accuracy_drop`` turns the drop into a hard failure. ``precision="auto"`` builds the
candidates, measures accuracy and latency side by side, and keeps the fastest within the budget.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from dlforge.artifact import Artifact, ArtifactWriter, Card, DatasetSpec, dataset_spec, open_artifact
from dlforge.build.backends import BACKENDS, Backend
from dlforge.build.options import BuildOptions
from dlforge.data import load_spec
from dlforge.env import environment
from dlforge.errors import InputError, StageFailed


def engine_from_onnx(onnx_dir: str | os.PathLike, out_dir: str | os.PathLike, options: BuildOptions | None = None, *,
                     force: bool = False, report: Callable[[str], None] = lambda line: None,
                     **overrides) -> Artifact:
    """Build an engine from the onnx artifact at ``onnx_dir`` and write it to ``out_dir``.

    Args:
        options: the build's settings (:class:`BuildOptions`); keyword ``overrides`` replace fields.
        force: replace an existing engine artifact at ``out_dir`` (never the input).
        report: receives human-readable progress lines (e.g. ``auto``'s table).
    """
    options = BuildOptions.build(options, **overrides)
    parent = open_artifact(onnx_dir, ["onnx"])
    info = parent.card.model
    backend: Backend = BACKENDS.get(options.backend)(options, info)
    if options.precision not in (*backend.precisions, "auto"):
        raise InputError(f"backend {options.backend} builds {', '.join(backend.precisions)}, not {options.precision}"
                         + ("; fp16 needs --backend tensorrt" if options.precision == "fp16" else ""))
    with ArtifactWriter(out_dir, force=force, protect=[parent.path]) as writer:
        data = _build_data(parent, options)
        with tempfile.TemporaryDirectory(prefix="dlforge-build-") as tmp:
            built = _compile_candidates(backend, parent, options, data, Path(tmp))
            chosen, selection = _select(built, data, options, report)
            result = built[chosen]
            _gate(chosen, result["evaluation"], options.max_accuracy_drop)
            shutil.copyfile(result["path"], writer.file(backend.payload))
        card = _engine_card(parent, backend, options, chosen, result, data, selection)
        return writer.commit(card)


def _model_dataset(spec: DatasetSpec, info, flag: str):
    dataset = load_spec(spec)
    if tuple(dataset.input_shape) != tuple(info.inputs[0].shape[1:]):
        raise InputError(f"dataset {dataset.name} has images {dataset.input_shape}; the model expects "
                         f"{tuple(info.inputs[0].shape[1:])}: check {flag}")
    return dataset


def _build_data(parent: Artifact, options: BuildOptions) -> dict:
    """The evaluation split (the model's own test data) and the calibration images."""
    info = parent.card.model
    calib_spec = DatasetSpec(options.calib_data, options.data_dir, info.image_shape) if options.calib_data else None
    trained_on = dataset_spec(parent) or calib_spec
    if trained_on is None:
        raise InputError(f"{parent.path} does not say which dataset its model was trained on; pass --calib-data "
                         "(and --data-dir) naming one with the model's input shape")
    dataset = _model_dataset(trained_on._replace(data_dir=options.data_dir or trained_on.data_dir), info, "--data-dir")
    calib = _model_dataset(calib_spec, info, "--calib-data") if calib_spec else dataset
    if options.precision in ("int8", "auto") and options.calib_samples > len(calib.y_train):
        raise InputError(f"--calib-samples {options.calib_samples} asks for more images than the calibration set "
                         f"({calib.name} training split) has: {len(calib.y_train)}")
    n = options.eval_samples
    if len(dataset.y_test) == 0:
        raise InputError(f"dataset {dataset.name} has no test images to evaluate the engine on")
    static_batch = None if parent.card.params.get("dynamic_batch", True) else 1
    return {"dataset": dataset, "calib": calib, "x": dataset.x_test[:n], "y": dataset.y_test[:n],
            "calibration": {"calib_x": calib.x_train[:options.calib_samples], "calib_method": options.calib_method,
                            "per_channel": options.per_channel, "static_batch": static_batch}}


def _compile_candidates(backend: Backend, parent: Artifact, options: BuildOptions, data: dict, tmp: Path) -> dict:
    """Compile each candidate precision into ``tmp`` and evaluate it against the parent."""
    from dlforge.build.evaluate import compare
    from dlforge.runtime import DeployedModel, open_deployed

    candidates = list(backend.precisions) if options.precision == "auto" else [options.precision]
    built: dict[str, dict] = {}
    with open_deployed(parent) as reference:
        for cand in candidates:
            start = time.perf_counter()
            path = tmp / cand / backend.payload
            path.parent.mkdir()
            details = backend.compile(cand, parent.payload_path, path, data["calibration"])
            engine = DeployedModel(path=path, session=backend.open(path, details, parent.card.model))
            built[cand] = {"path": path, "details": details, "build_s": time.perf_counter() - start,
                           "engine": engine, "batch_range": backend.batch_range(details),
                           "evaluation": compare(engine, reference, data["x"], data["y"], parent.card.model.task)}
    return built


def _select(built: dict, data: dict, options: BuildOptions, report) -> tuple[str, dict | None]:
    try:
        if options.precision != "auto":
            return options.precision, None
        from dlforge.build.auto import choose

        return choose({name: b["engine"] for name, b in built.items()},
                      {name: b["evaluation"] for name, b in built.items()}, data["x"], options, report)
    finally:
        for b in built.values():
            b["engine"].close()


def _gate(chosen: str, ev: dict, max_drop: float | None) -> None:
    drop = ev["accuracy_drop"]
    if max_drop is not None and drop is not None and drop > max_drop:
        raise StageFailed(
            f"{chosen} engine accuracy {ev['accuracy']:.4f} is {drop:.2f} points below its parent's "
            f"{ev['parent_accuracy']:.4f} (> --max-accuracy-drop {max_drop:g}); nothing was saved. Try more "
            "--calib-samples, --calib-method entropy or percentile, or fp32")


def _engine_card(parent: Artifact, backend: Backend, options: BuildOptions, chosen: str, result: dict, data: dict,
                 selection: dict | None) -> Card:
    sections = {
        "backend": options.backend,
        "precision": chosen,
        "evaluation": {**result["evaluation"], "dataset": data["dataset"].name, "split": "test"},
        "build": {**result["details"], "seconds": round(result["build_s"], 3)},
        **backend.card_sections(result["details"]),
    }
    if result["batch_range"] is not None:
        sections["batch_range"] = list(result["batch_range"])
    if selection:
        sections["selection"] = selection
    params = {**options.params(), "calib_data": data["calib"].name, "eval_samples": len(data["y"])}
    return Card(kind="engine", payload=backend.payload, model=parent.card.model, parent=parent.lineage(),
                params=params, env={**environment(), **backend.card_env(result["details"])}, sections=sections)
