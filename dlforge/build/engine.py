"""``engine_from_onnx``: compile an ONNX artifact for a backend and precision, with an accuracy gate.

Every engine is evaluated against its parent ONNX model on the held-out test split; the card
records accuracy, parent accuracy, the drop in percentage points and top-1 agreement, and
``max_accuracy_drop`` turns the drop into a hard failure. ``precision="auto"`` builds the
candidates, measures accuracy and latency side by side, and keeps the fastest within the budget.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from dlforge.artifact import (
    Artifact,
    ArtifactWriter,
    Card,
    DatasetSpec,
    dataset_spec,
    open_artifact,
)
from dlforge.backends.base import BACKENDS, Backend
from dlforge.build.options import BuildOptions
from dlforge.data import load_spec
from dlforge.env import environment
from dlforge.errors import InputError, StageFailed
from dlforge.precision import Calibration
from dlforge.progress import ProgressLike, as_progress
from dlforge.reporting import to_json_text


def engine_from_onnx(onnx_dir: str | os.PathLike, out_dir: str | os.PathLike, options: BuildOptions | None = None, *,
                     force: bool = False, progress: ProgressLike = None, **overrides) -> Artifact:
    """Build an engine from the onnx artifact at ``onnx_dir`` and write it to ``out_dir``.

    Args:
        options: the build's settings (:class:`BuildOptions`); keyword ``overrides`` replace fields.
        force: replace an existing engine artifact at ``out_dir`` (never the input).
        progress: a :class:`~dlforge.progress.Progress`; its ``message`` receives ``auto``'s table.
    """
    options = BuildOptions.build(options, **overrides)
    report = as_progress(progress).message
    parent = open_artifact(onnx_dir, ["onnx"])
    info = parent.card.model
    backend: Backend = BACKENDS.get(options.backend)(options, info)
    if options.precision not in (*backend.precisions, "auto"):
        raise InputError(f"backend {options.backend} builds {', '.join(backend.precisions)}, not {options.precision}"
                         + ("; fp16 needs --backend tensorrt" if options.precision == "fp16" else ""))
    if options.precision_plan is not None and options.precision != "int8":
        raise InputError("--precision-plan applies to --precision int8 (the plan says which nodes stay fp32)")
    if options.max_robust_drop is not None and options.precision != "auto":
        raise InputError("--max-robust-drop is a budget of the per-layer search: use it with --precision auto")
    if _imported_int8(parent) and options.precision != "fp32":
        raise InputError(f"{parent.path} holds an already quantized graph (imported INT8); build it with --precision "
                         "fp32, which compiles it as it is (the card then records its precision as int8)")
    with ArtifactWriter(out_dir, force=force, protect=[parent.path]) as writer:
        data = _build_data(parent, options)
        with tempfile.TemporaryDirectory(prefix="dlforge-build-") as tmp:
            if options.precision in ("int8", "auto"):
                _model_keeps(parent, data, Path(tmp))
            plan = _plan_for(parent, options, data, Path(tmp))
            built, search = _compile_candidates(backend, parent, options, data, Path(tmp))
            if plan is not None:
                built["int8"]["plan"] = plan
            chosen, selection = _select(built, search, data, options, report)
            result = built[chosen]
            _gate(chosen, result["evaluation"], options.max_accuracy_drop)
            shutil.copyfile(result["path"], writer.file(backend.payload))
            if "plan" in result:
                writer.file("plan.json").write_text(to_json_text(result["plan"]), encoding="utf-8")
                chosen = "mixed" if result["plan"]["keep_fp32"] else chosen
            if search is not None:
                from dlforge.build.mixed_report import write_report

                write_report(writer.file("precision.html"), selection, chosen)
        card = _engine_card(parent, backend, options, chosen, result, data, selection)
        return writer.commit(card)


def _prepared_units(parent: Artifact, data: dict, tmp: Path) -> list:
    """Pre-process the parent for quantization once (the calibration's ``prepared`` graph, reused by every
    compile) and return its quantizable nodes, the units a precision plan names."""
    from dlforge.precision import prepare_for_quantization
    from dlforge.precision.plan import plan_units

    prepared = prepare_for_quantization(parent.payload_path, tmp / "prepared.onnx")
    data["calibration"] = data["calibration"].replace(prepared=prepared)
    return plan_units(prepared, parent.payload_path)


def _model_keeps(parent: Artifact, data: dict, tmp: Path) -> None:
    """The nodes of the modules the model keeps in fp32 (the export's ``dlforge.keep_fp32``), into the calibration."""
    import onnx

    from dlforge.export.onnx_export import KEEP_FP32_KEY

    meta = {p.key: p.value for p in onnx.load(str(parent.payload_path), load_external_data=False).metadata_props}
    scopes = set(json.loads(meta.get(KEEP_FP32_KEY, "[]")))
    if scopes:
        units = _prepared_units(parent, data, tmp)
        keep = tuple(u.name for u in units if u.module and any(u.module == s or u.module.startswith(s + ".")
                                                               for s in scopes))
        data["calibration"] = data["calibration"].replace(keep=keep)


def _plan_for(parent: Artifact, options: BuildOptions, data: dict, tmp: Path) -> dict | None:
    """``--precision-plan``: the plan's kept nodes, checked against this model's graph, into the calibration."""
    if options.precision_plan is None:
        return None
    from dlforge.precision.plan import plan_document, read_plan

    units = _prepared_units(parent, data, tmp)
    kept = read_plan(options.precision_plan, units)
    data["calibration"] = data["calibration"].replace(exclude=kept)
    return plan_document(kept, units)


def _model_dataset(spec: DatasetSpec, info, flag: str):
    dataset = load_spec(spec)
    if tuple(dataset.input_shape) != tuple(info.inputs[0].shape[1:]):
        raise InputError(f"dataset {dataset.name} has images {dataset.input_shape}; the model expects "
                         f"{tuple(info.inputs[0].shape[1:])}: check {flag}")
    return dataset


def _build_data(parent: Artifact, options: BuildOptions) -> dict:
    """The evaluation split (the model's own test data) and the calibration images."""
    info = parent.card.model
    calib_spec = DatasetSpec(options.calib_data, options.data_dir).for_model(info) if options.calib_data else None
    trained_on = dataset_spec(parent) or calib_spec
    if trained_on is None:
        raise InputError(f"{parent.path} does not say which dataset its model was trained on; pass --calib-data "
                         "(and --data-dir) naming one with the model's input shape")
    dataset = _model_dataset(trained_on._replace(data_dir=options.data_dir or trained_on.data_dir), info, "--data-dir")
    calib = _model_dataset(calib_spec, info, "--calib-data") if calib_spec else dataset
    # An evaluation set has test images only: calibrating on them is allowed (a few photographs of a
    # pretrained model is often all there is) and the card says the evaluation is then not held out.
    calib_x = calib.x_test if calib.evaluation_only else calib.x_train
    if options.precision in ("int8", "auto") and options.calib_samples > len(calib_x) and not calib.evaluation_only:
        raise InputError(f"--calib-samples {options.calib_samples} asks for more images than the calibration set "
                         f"({calib.name} {'evaluation images' if calib.evaluation_only else 'training split'}) has: "
                         f"{len(calib_x)}")
    n = options.eval_samples
    if len(dataset.y_test) == 0:
        raise InputError(f"dataset {dataset.name} has no test images to evaluate the engine on")
    static_batch = None if parent.card.params.get("dynamic_batch", True) else 1
    return {"dataset": dataset, "calib": calib, "x": dataset.x_test[:n], "y": dataset.y_test[:n],
            "calibration": Calibration(calib_x[:options.calib_samples], method=options.calib_method,
                                       per_channel=options.per_channel, static_batch=static_batch)}


def _compile_candidates(backend: Backend, parent: Artifact, options: BuildOptions, data: dict,
                        tmp: Path) -> tuple[dict, dict | None]:
    """Compile each candidate precision into ``tmp`` and evaluate it against the parent.

    ``auto`` runs the per-layer search (:mod:`dlforge.build.mixed`) when the backend builds INT8 and the
    model is a classifier, and adds its plan as candidate ``mixed``. Returns the candidates and the
    search's record (None without a search).
    """
    from dlforge.build.evaluate import compare
    from dlforge.runtime import open_deployed

    candidates = list(backend.precisions) if options.precision == "auto" else [options.precision]
    built: dict[str, dict] = {}
    search = None
    try:
        with open_deployed(parent) as reference:
            for cand in candidates:
                start = time.perf_counter()
                path = tmp / cand / backend.payload
                path.parent.mkdir()
                details, engine = _compile(backend, parent, cand, path, data["calibration"])
                built[cand] = {"path": path, "details": details, "build_s": time.perf_counter() - start,
                               "engine": engine, "batch_range": backend.batch_range(details)}
                built[cand]["evaluation"] = compare(engine, reference, data["x"], data["y"], parent.card.model.task)
            if options.precision == "auto" and "int8" in built and parent.card.model.task == "classification":
                search, mixed = _search_mixed(backend, parent, options, data, tmp, built, reference)
                if mixed is not None:
                    built["mixed"] = mixed
    except BaseException:  # a later candidate failed: close the engines already open (the caller never sees them)
        for b in built.values():
            b["engine"].close()
        raise
    return built, search


def _search_mixed(backend: Backend, parent: Artifact, options: BuildOptions, data: dict, tmp: Path, built: dict,
                  reference) -> tuple[dict, dict | None]:
    """Run the per-layer search: its record, and its best plan compiled and evaluated (None when that is
    all-INT8 or fp32, which are candidates already)."""
    import numpy as np

    from dlforge.build.auto import timing_batch
    from dlforge.build.evaluate import compare
    from dlforge.build.mixed import PlanSearch, SearchContext
    from dlforge.precision.plan import plan_document
    from dlforge.runtime import DeployedModel

    units = _prepared_units(parent, data, tmp)
    calibration = data["calibration"].replace(cache=tmp / "calibration.json")

    def compile_plan(kept: tuple[str, ...], dst: Path) -> DeployedModel:
        return _compile(backend, parent, "int8", dst, calibration.replace(exclude=kept))[1]

    x, y = data["x"], data["y"]
    ctx = SearchContext(
        compile=compile_plan, units=units, reference_predict=reference.predict, fp32_engine=built["fp32"]["engine"],
        x_calib=data["calibration"].calib_x, x_tune=x[0::2], y_tune=y[0::2],
        timing_batch=np.ascontiguousarray(np.resize(x, (timing_batch(built["fp32"]["batch_range"], options.opt),
                                                        *x.shape[1:]))),
        budget=options.budget, robust_budget=options.max_robust_drop, robust_eps=options.robust_eps,
        value_range=tuple(parent.card.model.value_range), workdir=tmp / "plans")
    record = PlanSearch(ctx).run(built["int8"]["engine"])
    kept = tuple(record["best"]["keep_fp32"]) if record["best"] else ()
    if not kept or len(kept) == len(units):
        return record, None
    start = time.perf_counter()
    path = tmp / "mixed" / backend.payload
    path.parent.mkdir()
    details, engine = _compile(backend, parent, "int8", path, calibration.replace(exclude=kept))
    try:
        evaluation = compare(engine, reference, x, y, parent.card.model.task)
        evaluation["check_half"] = compare(engine, reference, x[1::2], y[1::2], parent.card.model.task)
    except BaseException:  # not among the candidates yet: nobody else would close it
        engine.close()
        raise
    return record, {"path": path, "details": details, "build_s": time.perf_counter() - start, "engine": engine,
                    "batch_range": backend.batch_range(details), "evaluation": evaluation,
                    "plan": plan_document(kept, units)}


def _compile(backend: Backend, parent: Artifact, precision: str, dst: Path, calibration: Calibration):
    """``(details, engine)``: ``precision`` compiled from the parent's ONNX into ``dst`` and opened for evaluation."""
    from dlforge.runtime import DeployedModel

    details = backend.compile(precision, parent.payload_path, dst, calibration)
    return details, DeployedModel(path=dst, session=backend.open(dst, details, parent.card.model))


def _select(built: dict, search: dict | None, data: dict, options: BuildOptions, report) -> tuple[str, dict | None]:
    try:
        if options.precision != "auto":
            return options.precision, None
        from dlforge.build.auto import choose

        chosen, selection = choose({name: b["engine"] for name, b in built.items()},
                                   {name: b["evaluation"] for name, b in built.items()}, data["x"], options, report,
                                   robust_drops=_robust_drops(search))
        if search is not None:
            from dlforge.build.mixed import search_summary

            report(search_summary(search))
            selection["plan_search"] = search
        return chosen, selection
    finally:
        for b in built.values():
            b["engine"].close()


def _imported_int8(parent: Artifact) -> bool:
    """Whether the parent onnx artifact holds an already quantized graph (``dlforge import`` of an INT8 model)."""
    return bool(parent.card.sections.get("graph", {}).get("quantized"))


def _robust_drops(search: dict | None) -> dict:
    """Each candidate's PGD robust-accuracy drop as the per-layer search measured it: ``int8`` is its all-INT8
    plan, ``mixed`` its best plan (the one compiled as that candidate)."""
    if not search:
        return {}
    rows = {r["plan"]: r for r in search["evaluations"]}
    found = {}
    if "all-int8" in rows:
        found["int8"] = rows["all-int8"]["robust_drop"]
    if search.get("best"):
        found["mixed"] = search["best"]["robust_drop"]
    return found


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
        # an imported INT8 graph compiled as it is: int8, whatever precision the build added (none)
        "precision": "int8" if _imported_int8(parent) else chosen,
        "evaluation": {**result["evaluation"], "dataset": data["dataset"].name, "split": "test"},
        "build": {**result["details"], "seconds": round(result["build_s"], 3)},
        **backend.card_sections(result["details"]),
    }
    if result["batch_range"] is not None:
        sections["batch_range"] = list(result["batch_range"])
    if selection:
        sections["selection"] = selection
    if "plan" in result:
        sections["plan"] = result["plan"]
    params = {**options.params(), "calib_data": data["calib"].name, "eval_samples": len(data["y"])}
    params["backend_options"] = {**params["backend_options"], **backend.resolved_options(result["details"])}
    if data["calib"].evaluation_only and options.precision in ("int8", "auto"):
        params["calib_samples"] = len(data["calibration"].calib_x)
        params["calibration_note"] = ("calibrated on the test images of an evaluation set"
                                      + (", the same images the accuracy is measured on: not held out"
                                         if data["calib"].source == data["dataset"].source else ""))
    return Card(kind="engine", payload=backend.payload, model=parent.card.model, parent=parent.lineage(),
                params=params, env={**environment(), **backend.card_env(result["details"])}, sections=sections)
