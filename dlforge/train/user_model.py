"""A PyTorch model of the user's own as a checkpoint artifact, by one of two routes; neither unpickles.

The card's ``architecture`` section records the route, and :func:`dlforge.train.load_checkpoint`
follows it:

- ``program`` (the default): the model as a ``torch.export`` program, ``program.pt2`` in the
  artifact, exported with a dynamic batch where torch.export can, else with a fixed batch of 1
  (recorded; the loaded module then runs a larger batch one slice at a time). Every load vets the
  archive (:mod:`dlforge.train.pt2_archive`), hands torch a fresh archive assembled from the vetted
  entries, and checks that the graph it built calls ATen operators only.
- ``factory``: ``package.module:callable`` (with JSON keyword arguments) builds the model and the
  artifact's ``model.safetensors`` is loaded into it strictly. The module is the user's own code,
  imported by the name they gave, so it must be importable wherever the checkpoint is loaded.

A ``normalization`` the model expects is recorded and applied in front of it by ``load_checkpoint``
(:mod:`dlforge.train.normalization`): checkpoints, exports and engines all take pixels.

Kept in one module (about 550 lines): both routes share the checks of what a user hands in (module,
sample input, labels, normalization) and the card they write; the archive vetting is apart
(:mod:`dlforge.train.pt2_archive`).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import math
import operator
import os
import warnings
import zipfile
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from dlforge.artifact import Artifact, ArtifactWriter, Card, ModelInfo, TensorSpec, sha256_file
from dlforge.card_validation import FACTORY
from dlforge.env import environment
from dlforge.errors import ArtifactError, InputError
from dlforge.train.checkpoint import WEIGHTS, quality_metrics, load_weights, preprocessing_text, save_weights
from dlforge.train.import_options import ImportOptions
from dlforge.train.normalization import normalization_section, with_normalization
from dlforge.train.options import parse_normalize
from dlforge.train.pt2_archive import vetted_entries

PROGRAM = "program.pt2"
# What a vetted program's graph may call besides ATen operators: the size arithmetic torch.export emits.
SIZE_ARITHMETIC = frozenset((
    operator.getitem, operator.eq, operator.ne, operator.le, operator.ge, operator.lt, operator.gt, operator.neg,
    operator.pos, operator.mul, operator.add, operator.sub, operator.floordiv, operator.mod, operator.pow,
    operator.truediv, operator.and_, operator.or_, operator.lshift, operator.rshift, math.trunc, torch.sym_not,
    torch.sym_int, torch.sym_float, torch.sym_ite, torch.sym_max, torch.sym_min, torch.sym_sqrt))


class ProgramModule(nn.Module):
    """The module of a ``torch.export`` program, as an ``nn.Module`` the other stages can use.

    The program was captured in eval mode, so ``train()`` / ``eval()`` only set the flag (the
    module torch builds refuses them). With a fixed batch, a batch of another size runs slice by
    slice, the last slice padded with zeros and its padding dropped from the output.
    """

    def __init__(self, program: nn.Module, batch: int | None):
        super().__init__()
        self.program = program
        self.batch = batch

    def train(self, mode: bool = True) -> ProgramModule:
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.batch is None or x.shape[0] == self.batch:
            return self.program(x)
        outs = []
        for i in range(0, x.shape[0], self.batch):
            part = x[i:i + self.batch]
            n = part.shape[0]
            if n < self.batch:
                part = torch.cat([part, part.new_zeros((self.batch - n, *part.shape[1:]))])
            outs.append(self.program(part)[:n])
        return torch.cat(outs)


def checkpoint_from_module(
    model: nn.Module,
    out_dir: str | os.PathLike,
    *,
    input_shape: Sequence[int] | None = None,
    labels: Sequence[str] | None = None,
    num_classes: int | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
    data: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    normalization: str | dict | tuple | None = None,
    name: str | None = None,
    task: str = "classification",
    factory: str | None = None,
    factory_kwargs: dict | None = None,
    force: bool = False,
) -> Artifact:
    """Write ``model`` (an ``nn.Module`` of your own) to ``out_dir`` as a checkpoint artifact.

    By default the model is saved as a ``torch.export`` program; with ``factory``
    (``"package.module:callable"``, called with ``factory_kwargs``) its weights are saved instead,
    and loading rebuilds it by calling the factory (checked here: the rebuilt model must compute
    what ``model`` computes).

    Args:
        input_shape: one input without the batch, e.g. ``(1, 28, 28)``; default: ``data``'s images.
        labels: class names in output order (or ``num_classes``); default: ``data``'s classes.
        value_range: the pixels' range the model takes.
        data: the dataset later stages verify, calibrate and attack on (``"digits"``, ``"mnist"``,
            a ``.npz`` file, ...); its test accuracy is measured and recorded.
        normalization: what the model expects its inputs normalized with, applied inside the
            checkpoint so that it takes pixels: ``"MEAN/STD"``, ``(mean, std)`` or
            ``{"mean": [...], "std": [...]}``, one value per channel or one for all.
        task: ``"classification"`` (logits out) or ``"reconstruction"``.

    Raises:
        InputError: a bad option, a model that does not run on ``input_shape`` or does not output
            what ``task`` needs, one torch.export cannot export, or a factory that does not rebuild
            it (nothing is written).
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"checkpoint_from_module needs a torch.nn.Module, got {type(model).__name__}")
    options = ImportOptions(
        input_shape=tuple(input_shape or ()), labels=tuple(str(label) for label in labels or ()),
        num_classes=num_classes, value_range=tuple(value_range), data=None if data is None else os.fspath(data),
        data_dir=None if data_dir is None else os.fspath(data_dir), normalize=_normalize_spec(normalization),
        task=task, name=name or type(model).__name__, kwargs=dict(factory_kwargs or {}))
    if factory is not None and not FACTORY.fullmatch(str(factory)):
        raise InputError(f"factory {factory!r} is not package.module:callable")
    source = f"{type(model).__module__}.{type(model).__qualname__}"
    with ArtifactWriter(out_dir, force=force) as writer:
        dataset, shape, labels = _resolve_io(options)
        was_training = model.training
        model.eval()
        try:
            _check_forward(model, shape, options, labels, batch=2, what=options.name)
            if factory is None:
                program, architecture = _export(model, shape, options.name)
                with _quiet():
                    torch.export.save(program, writer.file(PROGRAM))
                try:
                    program = load_program(writer.file(PROGRAM), error=InputError,
                                           where=f"the program torch.export made of {options.name}")[0]
                except InputError as exc:
                    raise InputError(f"{exc}; or pass factory='package.module:callable' to save the weights and "
                                     "rebuild the model from your code") from None
                rebuilt = program_module(program, error=InputError)
                payload = PROGRAM
            else:
                save_weights(model, writer.file(WEIGHTS))
                rebuilt = module_from_factory(factory, options.kwargs, error=InputError)
                load_weights(rebuilt, writer.file(WEIGHTS), what=f"the model {factory} builds", error=InputError,
                             fix="pass the factory that builds this model")
                architecture = {"route": "factory", "factory": factory, "kwargs": options.kwargs}
                payload = WEIGHTS
            _check_same(model, rebuilt.eval(), shape, "the exported program" if factory is None else factory)
        finally:
            model.train(was_training)
        return _commit(writer, rebuilt, options, source=source if factory is None else factory,
                       architecture=architecture, payload=payload, dataset=dataset, shape=shape, labels=labels)


def checkpoint_from_file(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: ImportOptions | None = None,
    *,
    force: bool = False,
    **settings,
) -> Artifact:
    """Import a model from a ``.pt2`` file (``torch.export.save``) or ``package.module:factory`` (with
    ``weights``, a safetensors file) into a checkpoint artifact: ``dlforge import``.

    ``options`` (or ``settings``, the same fields as keywords) describe the model; see
    :class:`~dlforge.train.import_options.ImportOptions`.

    Raises:
        InputError: a missing or refused file, a factory that cannot be imported or called, weights
            that do not fit, a model that does not take ``input_shape`` or does not output what its
            task needs (nothing is written).
    """
    options = ImportOptions.build(options, **settings)
    source = os.fspath(source)
    if source.lower().endswith(".onnx"):
        from dlforge.export.onnx_import import onnx_from_file

        return onnx_from_file(source, out_dir, options, force=force)
    zoo = _is_zoo_name(source)
    factory = not zoo and FACTORY.fullmatch(source) is not None and not Path(source).exists()
    if not (zoo or factory) and not (source.endswith(".pt2") or Path(source).exists()):
        raise InputError(f"MODEL {source!r} is neither a zoo model (dlforge models), a .pt2 file (torch.export.save) "
                         "nor package.module:factory")
    if zoo or factory:
        if options.weights is None:
            raise InputError(f"{source} is a {'zoo model' if zoo else 'factory'}; give its weights with --weights "
                             "FILE (.safetensors, or a PyTorch state dict .pt/.pth/.th)")
        if not Path(options.weights).is_file():
            raise InputError(f"--weights {options.weights} does not exist or is not a file")
        if zoo and options.kwargs:
            raise InputError(f"--kwargs is for a package.module:factory model; zoo model {source} is built from "
                             "--input-shape and the classes")
        if zoo and options.name not in (None, source):
            raise InputError(f"--name: a zoo model keeps its zoo name ({source}) so later stages can rebuild it")
        protect = [options.weights]
    else:
        if options.weights is not None or options.kwargs:
            raise InputError(f"--weights and --kwargs are for a zoo or package.module:factory model; the program in "
                             f"{source} holds its own weights")
        if not Path(source).is_file():
            raise InputError(f"{source} does not exist or is not a file; expected a .pt2 archive from "
                             "torch.export.save")
        protect = [source]
    name = options.name or (source if zoo else source.rpartition(":")[2] if factory else Path(source).stem)
    options = ImportOptions.build(options, name=name)
    fix = ("pass the weights saved from this model (torch.save(model.state_dict(), path) or "
           "safetensors.torch.save_file(model.state_dict(), path))")
    with ArtifactWriter(out_dir, force=force, protect=protect) as writer:
        dataset, shape, labels = _resolve_io(options)
        config = None
        if zoo or factory:
            module = _zoo_module(source, shape, labels, options) if zoo else \
                module_from_factory(source, options.kwargs, error=InputError)
            fixups = load_weights(module, options.weights, what=f"the model {source} builds", error=InputError,
                                  fix=fix)
            save_weights(module, writer.file(WEIGHTS))  # exactly what was loaded
            payload, batch = WEIGHTS, 2
            architecture = {"route": "factory", "factory": source, "kwargs": options.kwargs} if factory else None
            config = module.config if zoo else None
            weights = {"file": os.path.basename(options.weights), "sha256": sha256_file(options.weights),
                       "fixups": fixups}
        else:
            program, data = load_program(source, error=InputError)
            writer.file(PROGRAM).write_bytes(data)
            architecture, payload = _program_architecture(program), PROGRAM
            module, batch = program_module(program, error=InputError), architecture.get("batch", 2)
            weights = None
        _check_forward(module.eval(), shape, options, labels, batch=batch, what=source)
        return _commit(writer, module, options, source=source, architecture=architecture, payload=payload,
                       dataset=dataset, shape=shape, labels=labels, config=config, weights=weights)


def _is_zoo_name(source: str) -> bool:
    from dlforge_models import list_models

    return source in list_models() and not Path(source).exists()


def _zoo_module(name: str, shape: tuple[int, ...], labels: tuple[str, ...], options: ImportOptions) -> nn.Module:
    from dlforge_models import create_model, get_entry

    if get_entry(name).task != options.task:
        raise InputError(f"zoo model {name} is a {get_entry(name).task} model, not {options.task}; drop --task")
    try:
        return create_model(name, input_shape=shape, num_classes=max(len(labels), 1)).eval()
    except (ValueError, TypeError, RuntimeError) as exc:
        raise InputError(f"zoo model {name} cannot be built for inputs {list(shape)} ({exc}); give the "
                         "--input-shape it was trained with") from None


def model_from_card(artifact: Artifact) -> nn.Module:
    """The model of a checkpoint whose card names the program or factory route (without normalization)."""
    architecture = artifact.card.sections["architecture"]
    if architecture["route"] == "program":
        return program_module(load_program(artifact.payload_path, error=ArtifactError)[0])
    model = module_from_factory(architecture["factory"], architecture.get("kwargs", {}), error=ArtifactError,
                                where=f"{artifact.path}: ")
    load_weights(model, artifact.payload_path, what=f"the model {architecture['factory']} builds", error=ArtifactError,
                 fix="the factory's code changed since the import: restore it, or import the model again")
    return model


# -- the program route ---------------------------------------------------------------------------
def load_program(path: str | os.PathLike, *, error: type[InputError] = ArtifactError, where: str | None = None):
    """The ``torch.export`` program in the ``.pt2`` file at ``path``, vetted; returns ``(program, file bytes)``.

    ``where`` names the file in errors (default: its path).

    torch reads a fresh archive assembled from the vetted entries (sample inputs dropped), never the
    file itself; the graph it builds must call ATen operators and size arithmetic only.

    Raises:
        error: the file is missing, not an archive, refused by the vetting, or not a program torch reads.
    """
    path = Path(path)
    where = where or str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise error(f"cannot read {where} ({exc.strerror or exc}); expected a .pt2 archive from torch.export.save") \
            from None
    entries = vetted_entries(data, where=where, error=error)
    fresh = io.BytesIO()
    with zipfile.ZipFile(fresh, "w", zipfile.ZIP_STORED) as archive:
        for name, content in entries.items():
            archive.writestr(f"archive/{name}", content)
    fresh.seek(0)
    try:
        with _quiet():
            program = torch.export.load(fresh)
    except Exception as exc:  # torch raises many types for an archive it cannot read; each is bad input
        raise error(f"{where}: torch.export.load cannot read the program ({_first_line(exc)}); save it again with "
                    f"torch.export.save from torch {torch.__version__.split('+')[0]}") from None
    for node in program.graph.nodes:
        target = node.target
        if node.op == "call_function" and not (
                (isinstance(target, torch._ops.OpOverload) and target.namespace == "aten")
                or target in SIZE_ARITHMETIC):
            raise error(f"{where} is refused: its graph calls {target!r}; only ATen operators and size arithmetic "
                        "are accepted")
        if node.op not in ("placeholder", "call_function", "get_attr", "output"):
            raise error(f"{where} is refused: its graph has a {node.op} node; re-export the model")
    return program, data


def program_module(program, *, error: type[InputError] = ArtifactError) -> ProgramModule:
    """An ``nn.Module`` running ``program`` (see :class:`ProgramModule`)."""
    batch = _program_architecture(program, error=error).get("batch")
    with _quiet():
        return ProgramModule(program.module(), batch)


def _program_architecture(program, *, error: type[InputError] = InputError) -> dict:
    """The card's ``architecture`` for a program: its one float32 image input and its batch dimension."""
    users = set(program.graph_signature.user_inputs)
    inputs = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in users]
    if len(inputs) != 1 or len(program.graph_signature.user_outputs) != 1:
        raise error(f"the program takes {len(inputs)} inputs and returns {len(program.graph_signature.user_outputs)} "
                         "outputs; dlforge needs a model of one image batch returning one tensor")
    value = inputs[0].meta.get("val")
    if value is None or value.dtype != torch.float32 or value.dim() < 2:
        raise error(f"the program's input is {getattr(value, 'dtype', '?')} of shape "
                         f"{list(getattr(value, 'shape', []))}; dlforge feeds float32 image batches (batch, ...)")
    batch = value.shape[0]
    if isinstance(batch, torch.SymInt):
        return {"route": "program", "dynamic_batch": True}
    return {"route": "program", "dynamic_batch": False, "batch": int(batch)}


def _export(model: nn.Module, shape: tuple[int, ...], name: str):
    """``model`` as a torch.export program with a dynamic batch; a batch of 1 if that cannot be exported."""
    batch = torch.export.Dim("batch", min=1)
    try:
        with _quiet():
            program = torch.export.export(model, (torch.zeros(2, *shape),), dynamic_shapes=({0: batch},))
        return program, _program_architecture(program)
    except InputError:
        raise
    except Exception as exc:  # torch.export raises many types; a fixed batch is the fallback for each
        dynamic_failure = _first_line(exc)
    try:
        with _quiet():
            program = torch.export.export(model, (torch.zeros(1, *shape),))
    except Exception as exc:
        raise InputError(f"torch.export cannot export {name} ({_first_line(exc)}); make its forward exportable "
                         "(see https://pytorch.org/docs/stable/export.html) or pass factory='package.module:callable' "
                         "to save its weights and rebuild it from your code") from None
    return program, {**_program_architecture(program), "dynamic_batch_error": dynamic_failure[:300]}


# -- the factory route ---------------------------------------------------------------------------
def module_from_factory(spec: str, kwargs: dict, *, error: type[InputError] = InputError, where: str = "") -> nn.Module:
    """Import ``package.module``, call its ``callable(**kwargs)``, and check it returns an ``nn.Module``."""
    if not FACTORY.fullmatch(spec):
        raise error(f"{where}factory {spec!r} is not package.module:callable")
    module_name, _, qualname = spec.partition(":")
    try:
        target = importlib.import_module(module_name)
    except ImportError as exc:
        raise error(f"{where}cannot import module {module_name!r} of factory {spec} ({exc}); put the folder that "
                    "holds it on PYTHONPATH") from None
    except Exception as exc:  # the user's module failed while importing: their code, reported in one line
        raise error(f"{where}importing {module_name!r} (factory {spec}) failed: {type(exc).__name__}: "
                    f"{_first_line(exc)}") from None
    for part in qualname.split("."):
        if not hasattr(target, part):
            raise error(f"{where}module {module_name!r} has no {qualname!r} (factory {spec})")
        target = getattr(target, part)
    if not callable(target):
        raise error(f"{where}{spec} is not callable (it is a {type(target).__name__}); name the function or class "
                    "that builds the model")
    try:
        model = target(**kwargs)
    except Exception as exc:  # the user's factory failed: their code, reported in one line
        raise error(f"{where}{spec}(**{kwargs}) raised {type(exc).__name__}: {_first_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise error(f"{where}{spec} returned a {type(model).__name__}, not a torch.nn.Module")
    return model.eval()


# -- shared checks and the card ------------------------------------------------------------------
def _normalize_spec(normalization) -> str:
    """The API's ``normalization`` as ``--normalize`` text."""
    if normalization is None:
        return "none"
    if isinstance(normalization, str):
        return normalization
    if isinstance(normalization, dict):
        normalization = (normalization.get("mean"), normalization.get("std"))
    def values(v) -> list:
        return [v] if isinstance(v, (int, float)) else list(v)

    try:
        mean, std = normalization
        return f"{','.join(map(str, values(mean)))}/{','.join(map(str, values(std)))}"
    except (TypeError, ValueError):
        raise InputError(f"normalization expects 'MEAN/STD', (mean, std) or {{'mean': ..., 'std': ...}}, "
                         f"got {normalization!r}") from None


def _resolve_io(options: ImportOptions):
    """``(dataset or None, input shape, labels)`` from the options, filled in from the dataset.

    Classes given with the options are the model's label space: a folder of labelled photographs then
    loads as an evaluation set in that space (:mod:`dlforge.data.evaluation`)."""
    given = options.given_labels()
    dataset = None
    if options.data:
        from dlforge.data import load_dataset

        dataset = load_dataset(options.data, options.data_dir, labels=given or None,
                               input_shape=tuple(options.input_shape) or None,
                               preprocess=_preprocess(options, tuple(options.input_shape)))
    elif options.data_dir:
        raise InputError("--data-dir needs --data (the dataset whose files it holds)")
    shape = tuple(options.input_shape) or (tuple(dataset.input_shape) if dataset is not None else ())
    if not shape:
        raise InputError("give --input-shape (one input without the batch, e.g. 1,28,28), or --data, whose images "
                         "set it")
    labels = given or (tuple(dataset.labels) if dataset is not None else ())
    if options.task == "classification" and len(labels) < 2:
        raise InputError("give the classes: --labels a,b,c or --num-classes N (2 or more), or --data, whose classes "
                         "set them")
    if dataset is not None:
        if tuple(dataset.input_shape) != shape:
            raise InputError(f"--data {options.data} has images {tuple(dataset.input_shape)}, but --input-shape is "
                             f"{shape}; give the dataset the model takes")
        if options.task == "classification" and len(labels) != dataset.num_classes:
            raise InputError(f"--data {options.data} has {dataset.num_classes} classes, but the labels name "
                             f"{len(labels)}; give matching --labels or --num-classes")
        if tuple(options.value_range) != (0.0, 1.0):
            raise InputError(f"--data {options.data} holds pixels in [0, 1], but --value-range is "
                             f"{list(options.value_range)}; a model taking another range cannot be measured on it")
    return dataset, shape, labels


def _preprocess(options: ImportOptions, shape: tuple) -> dict | None:
    """The options' photograph preprocessing for inputs of ``shape`` (None when none was asked for)."""
    if not options.preprocessing_asked:
        return None
    if not shape:
        raise InputError("--resize / --crop / --channel-order need the model's --input-shape C,H,W")
    return options.image_preprocessing(shape) or None


def _check_forward(model: nn.Module, shape: tuple[int, ...], options: ImportOptions, labels, *, batch: int,
                   what: str) -> None:
    """One forward pass on a zero batch: the model must take ``shape`` and output what its task needs."""
    x = torch.zeros(batch, *shape)
    try:
        with torch.inference_mode(), _quiet():
            out = model(x)
    except Exception as exc:  # the user's model failed on this shape: their input, reported in one line
        raise InputError(f"{what} does not run on a zero batch of shape {list(x.shape)} (--input-shape "
                         f"{','.join(map(str, shape))}): {type(exc).__name__}: {_first_line(exc)}") from None
    if not isinstance(out, torch.Tensor):
        raise InputError(f"{what} returns a {type(out).__name__}; dlforge needs one tensor "
                         f"({'logits' if options.task == 'classification' else 'the reconstruction'})")
    if options.task == "classification" and tuple(out.shape) != (batch, len(labels)):
        raise InputError(f"{what} outputs shape {list(out.shape)} for a batch of {batch}; a classifier of "
                         f"{len(labels)} classes (--labels / --num-classes / --data) must output logits "
                         f"[{batch}, {len(labels)}]")
    if options.task == "reconstruction" and tuple(out.shape) != tuple(x.shape):
        raise InputError(f"{what} outputs shape {list(out.shape)} for inputs {list(x.shape)}; a reconstruction "
                         "model must output its input's shape")


def _check_same(model: nn.Module, rebuilt: nn.Module, shape: tuple[int, ...], what: str) -> None:
    """``rebuilt`` (what loading the checkpoint will give) must compute what ``model`` computes."""
    x = torch.rand(4, *shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode(), _quiet():
        expected, got = model(x), rebuilt(x)
    diff = float((expected.float() - got.float()).abs().max())
    if not diff <= 1e-4 * max(1.0, float(expected.abs().max())):
        raise InputError(f"{what} computes something else than the model given (max abs diff {diff:.3g} on random "
                         "inputs); pass the factory that builds this model, or a model that exports faithfully")


def _commit(writer: ArtifactWriter, module: nn.Module, options: ImportOptions, *, source: str, architecture: dict | None,
            payload: str, dataset, shape: tuple[int, ...], labels: tuple[str, ...], config: dict | None = None,
            weights: dict | None = None) -> Artifact:
    """The checkpoint's card. ``architecture`` None is the zoo route (``config`` rebuilds the model by name);
    ``weights`` records the weights file the user gave and the fix-ups applied to it."""
    parsed = parse_normalize(options.normalize)
    normalization = normalization_section(*parsed, shape[0]) if parsed else None
    sections = {"architecture": architecture} if architecture is not None else {}
    if weights is not None:
        sections["weights"] = weights
    if normalization:
        sections["normalization"] = normalization
    if dataset is not None:
        model = with_normalization(module, normalization).eval()
        sections["dataset"] = dataset.describe()
        sections["metrics"] = {**quality_metrics(model, options.task, dataset, "cpu"),
                               "test_samples": len(dataset.y_test)}
    classifier = options.task == "classification"
    low, high = options.value_range
    info = ModelInfo(
        name=options.name, task=options.task,
        inputs=(TensorSpec("input", ("batch", *shape), "float32"),),
        outputs=(TensorSpec("logits", ("batch", len(labels)), "float32") if classifier
                 else TensorSpec("reconstruction", ("batch", *shape), "float32"),),
        value_range=(float(low), float(high)), labels=labels, dataset=dataset.name if dataset is not None else None,
        preprocessing=preprocessing_text(f"pixels in [{low:g}, {high:g}]", normalization), config=config or {},
        image_preprocessing=_preprocess(options, shape) or {})
    # the defaults filled in; the labels as read (the file they came from recorded beside them)
    recorded = ImportOptions.build(options, input_shape=shape, labels=labels, labels_file=None)
    card = Card(kind="checkpoint", payload=payload, model=info,
                params={"model": source, **recorded.params(), "labels_file": options.labels_file},
                env=environment(), sections=sections)
    return writer.commit(card)


@contextlib.contextmanager
def _quiet():
    """torch.export's warnings and log lines (tracebacks included) kept off the terminal."""
    loggers = [logging.getLogger(name) for name in ("torch.export", "torch._export", "torch.fx", "torch._dynamo")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
