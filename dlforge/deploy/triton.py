"""Hand engines to NVIDIA Triton Inference Server: write a model repository, and validate one.

A repository written by :func:`write_repository` holds, per engine::

    REPO/<name>/config.pbtxt          Triton's ModelConfig, in protobuf text format
    REPO/<name>/1/model.onnx          the engine's payload (model.plan for a TensorRT engine)
    REPO/<name>/labels.txt            class labels, one per line (classifiers)
    REPO/<name>/dlforge-card.json     the engine's card: what validate checks the config against

The config is built as Triton's own ``ModelConfig`` message (``tritonclient.grpc.model_config_pb2``,
the ``serve`` extra) and printed with protobuf's text format, so it is syntactically what Triton
parses. :func:`validate_repository` parses every ``config.pbtxt`` with the same message type and
checks it against the model file beside it and the card: each kind of mistake is one
:class:`Problem` with its own code and one line. Triton's rules used here are those of its model
configuration documentation (``docs/user_guide/model_configuration.md``, ``model_repository.md``):
with ``max_batch_size > 0`` the dims exclude the batch dimension, with 0 they are the full shape;
``-1`` is a variable dimension; the default model file is ``model.onnx`` for ``onnxruntime_onnx``
and ``model.plan`` for ``tensorrt_plan``; version folders are positive integers.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from dlforge.artifact import ArtifactWriter, Card, open_artifact, sha256_file
from dlforge.backends import BACKENDS
from dlforge.backends.ort.session import SAFE_LEVELS
from dlforge.errors import InputError, MissingDependency


def platforms() -> dict[str, tuple[str, str]]:
    """Backend name -> (Triton platform, file name in the version folder), from each backend's registry entry."""
    return {name: (b.triton_platform, b.triton_file or b.payload) for name, b in BACKENDS.items() if b.triton_platform}


CARD_FILE = "dlforge-card.json"
MARKER = ".dlforge-triton-repository"  # at the root: `--force` may replace the repository (Triton reads folders only)
LABELS_FILE = "labels.txt"
DEFAULT_MAX_BATCH = 64  # for engines without an upper batch limit
# numpy dtype name -> Triton DataType (model_config.proto)
DTYPES = {"bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "uint32": "TYPE_UINT32",
          "uint64": "TYPE_UINT64", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32",
          "int64": "TYPE_INT64", "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64",
          "bfloat16": "TYPE_BF16"}
KINDS = ("auto", "cpu", "gpu")


def model_config_pb2():
    """Triton's ModelConfig protobuf module (from tritonclient)."""
    try:
        from tritonclient.grpc import model_config_pb2 as pb2
    except ImportError as exc:
        raise MissingDependency("tritonclient", "serve", "writing and validating Triton model repositories") from exc
    return pb2


# ---------------------------------------------------------------------------------------------- write


def batch_range(card: Card) -> tuple[int, int | None] | None:
    """The engine's batch range, or None when its batch dimension is fixed (no batching)."""
    first = card.model.inputs[0].shape[0] if card.model.inputs[0].shape else None
    if isinstance(first, int):
        return None
    lo, hi = card.sections.get("batch_range") or (1, None)
    return int(lo), None if hi is None else int(hi)


def triton_dims(shape, batching: bool) -> list[int]:
    """Triton's dims for a card shape: symbolic dimensions become -1; the batch dimension is dropped when batching."""
    dims = [d if isinstance(d, int) else -1 for d in shape]
    return dims[1:] if batching else dims


def model_config(card: Card, name: str, *, max_batch_size: int | None = None, instances: int = 1,
                 kind: str = "auto", dynamic_batching: bool = True, queue_delay_us: int = 100):
    """The ModelConfig message serving ``card``'s engine as ``name``."""
    pb2 = model_config_pb2()
    backend = card.sections.get("backend", "ort")
    known = platforms()
    if backend not in known:
        raise InputError(f"{name}: a {backend} engine has no Triton platform; deploy an engine of {', '.join(known)}")
    if kind not in KINDS:
        raise InputError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if instances < 1:
        raise InputError(f"--instances must be >= 1, got {instances}")
    if max_batch_size is not None and max_batch_size < 0:
        raise InputError(f"--max-batch-size must be >= 0 (0: no batching), got {max_batch_size}")
    platform, filename = known[backend]
    config = pb2.ModelConfig(name=name, platform=platform, default_model_filename=filename)
    limits = batch_range(card)
    if max_batch_size == 0:  # the user turned batching off: full shapes, the batch dimension variable
        limits = None
    elif limits is None:
        if max_batch_size:
            raise InputError(f"{name}: the engine's batch dimension is fixed at {card.model.inputs[0].shape[0]}; "
                             "Triton cannot batch it, so --max-batch-size does not apply (re-export with "
                             "--dynamic-batch to serve batches)")
    if limits is not None:
        lo, hi = limits
        if lo > 1:
            raise InputError(f"{name}: the engine's smallest batch is {lo} (its profile), but Triton sends batches "
                             "from 1; rebuild it with --min-batch 1")
        want = max_batch_size or min(hi or DEFAULT_MAX_BATCH, DEFAULT_MAX_BATCH)
        if hi is not None and want > hi:
            raise InputError(f"{name}: --max-batch-size {want} exceeds the engine's largest batch {hi}; "
                             f"use at most {hi} or rebuild with a larger --max-batch")
        config.max_batch_size = want
    batching = config.max_batch_size > 0
    for spec, inputs in ((card.model.inputs, config.input), (card.model.outputs, config.output)):
        for tensor in spec:
            if tensor.dtype not in DTYPES:
                raise InputError(f"{name}: tensor {tensor.name!r} has dtype {tensor.dtype}, which Triton has no type for")
            entry = inputs.add(name=tensor.name, data_type=pb2.DataType.Value(DTYPES[tensor.dtype]),
                               dims=triton_dims(tensor.shape, batching))
            if spec is card.model.outputs and _classifier(card) and tensor is card.model.outputs[0]:
                entry.label_filename = LABELS_FILE
    if batching and dynamic_batching:
        config.dynamic_batching.max_queue_delay_microseconds = queue_delay_us
    group = config.instance_group.add(count=instances)
    needs_gpu = BACKENDS.get(backend).requires_gpu
    gpu = kind == "gpu" or (kind == "auto" and needs_gpu)
    if needs_gpu and kind == "cpu":
        raise InputError(f"{name}: a {backend} engine runs on a GPU; use --kind gpu or auto")
    group.kind = pb2.ModelInstanceGroup.Kind.Value("KIND_GPU" if gpu else "KIND_CPU")
    return config


def _classifier(card: Card) -> bool:
    """Whether the engine's first output is class scores that a labels file names."""
    return card.model.task == "classification" and bool(card.model.labels)


def default_name(card: Card) -> str:
    return f"{card.model.name}-{card.sections.get('backend', 'ort')}-{card.sections.get('precision', 'fp32')}"


def write_repository(engines: list[str | os.PathLike], repo: str | os.PathLike, *, names: list[str] | None = None,
                     force: bool = False, **settings) -> list[dict]:
    """Write a Triton model repository at ``repo`` serving each engine artifact; returns what was written.

    The repository is assembled by an :class:`~dlforge.artifact.ArtifactWriter` (a staging directory
    beside ``repo``, moved into place at the end): bad input leaves nothing behind, and ``force``
    replaces only a repository dlforge wrote (its ``MARKER`` file), never an input.
    """
    from google.protobuf import text_format

    if not engines:
        raise InputError("give at least one engine artifact directory to deploy")
    if names is not None and len(names) != len(engines):
        raise InputError(f"--names gives {len(names)} name(s) for {len(engines)} engine(s)")
    artifacts = [open_artifact(e, ["engine"]) for e in engines]
    names = names or [default_name(a.card) for a in artifacts]
    for n in names:
        if not n or n in (".", "..") or "/" in n or n.startswith("."):
            raise InputError(f"{n!r} is not a usable Triton model name (a directory name without '/')")
    seen = {}
    for n, a in zip(names, artifacts):
        if n in seen:
            raise InputError(f"{seen[n]} and {a.path} would both be served as {n!r}; give --names")
        seen[n] = a.path
    configs = [model_config(a.card, n, **settings) for n, a in zip(names, artifacts)]
    written = []
    with ArtifactWriter(repo, force=force, protect=[a.path for a in artifacts], marker=MARKER) as writer:
        writer.file(MARKER).write_text("written by dlforge deploy triton\n", encoding="utf-8")
        for n, a, config in zip(names, artifacts, configs):
            folder = writer.file(n)
            (folder / "1").mkdir(parents=True)
            (folder / "config.pbtxt").write_text(text_format.MessageToString(config), encoding="utf-8")
            shutil.copy2(a.payload_path, folder / "1" / config.default_model_filename)
            if a.payload_path.suffix == ".onnx":
                from dlforge.onnx_external import check_external_data

                for extra in check_external_data(a.payload_path):  # same place relative to the model file
                    target = folder / "1" / extra.resolve().relative_to(a.payload_path.parent.resolve())
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(extra, target)
            (folder / CARD_FILE).write_text(json.dumps(a.card.to_dict(), indent=2), encoding="utf-8")
            if _classifier(a.card):
                (folder / LABELS_FILE).write_text("\n".join(a.card.model.labels) + "\n", encoding="utf-8")
            written.append({"name": n, "engine": str(a.path), "platform": config.platform,
                            "max_batch_size": config.max_batch_size, **_saturation_note(a.card)})
        writer.place()
    return written


def _saturation_note(card) -> dict:
    """A note for an INT8 ONNX Runtime engine with full-range weights: Triton's onnxruntime backend opens it with
    ONNX Runtime's default U8S8 kernels, which saturate such weights on an x86 CPU without VNNI/AMX."""
    arithmetic = card.sections.get("build", {}).get("int8_arithmetic")
    if card.sections.get("backend") != "ort" or not arithmetic or arithmetic.get("weight_levels", 0) <= SAFE_LEVELS:
        return {}
    return {"note": f"INT8 weights use {arithmetic['weight_levels']} levels: on an x86 CPU without VNNI/AMX, Triton's "
                    "onnxruntime backend (U8S8 kernels) saturates them and answers other than the engine's card; "
                    "serve it on a VNNI CPU, or rebuild with dlforge build --reduce-range on"}


# ------------------------------------------------------------------------------------------- validate


@dataclass(frozen=True)
class Problem:
    """One mistake in a repository: which model, what kind (``code``), and a one-line message."""

    model: str
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.model}: {self.message} [{self.code}]"


def validate_repository(repo: str | os.PathLike) -> tuple[list[dict], list[Problem]]:
    """Check every model of a Triton repository; returns a summary per model and the problems found."""
    repo = Path(repo)
    if not repo.is_dir():
        raise InputError(f"{repo} is not a directory; give the model repository written by `dlforge deploy triton`")
    folders = sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise InputError(f"{repo} holds no model directories: nothing to validate")
    models, problems = [], []
    for folder in folders:
        found = validate_model(folder)
        problems += found
        models.append({"name": folder.name, "problems": [str(p) for p in found]})
    return models, problems


def validate_model(folder: Path) -> list[Problem]:
    """The problems of one model directory (empty when it is ready to serve)."""
    from google.protobuf import text_format

    pb2 = model_config_pb2()
    name = folder.name
    out: list[Problem] = []

    def problem(code: str, message: str) -> list[Problem]:
        out.append(Problem(name, code, message))
        return out

    path = folder / "config.pbtxt"
    if not path.is_file():
        return problem("missing-config", "no config.pbtxt (write one, or deploy with `dlforge deploy triton`)")
    try:
        config = text_format.Parse(path.read_text(encoding="utf-8"), pb2.ModelConfig())
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        return problem("unparsable-config", f"config.pbtxt is not a Triton ModelConfig: {str(exc).splitlines()[0]}")
    if config.name and config.name != name:
        problem("name-mismatch", f"config name {config.name!r} differs from its directory {name!r}; Triton requires "
                                 "them to match")
    platform = config.platform or {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}.get(config.backend)
    known = platforms()
    files = dict(known.values())  # Triton platform -> its default file name
    if platform not in files:
        return problem("unknown-platform", f"platform {config.platform or config.backend or '(none)'!r} is not one "
                                           f"dlforge deploys ({', '.join(files)})")
    filename = config.default_model_filename or files[platform]
    versions = sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0)
    if not versions:
        problem("missing-version", "no version folder (a directory named 1, 2, ...) holding the model file")
    for v in versions:
        if not (folder / str(v) / filename).is_file():
            problem("missing-model-file", f"version {v} has no {filename} (the file {platform} loads)")
    card_path = folder / CARD_FILE
    if not card_path.is_file():
        return problem("no-card", f"no {CARD_FILE}: the config cannot be checked against the engine (deploy it "
                                  "with `dlforge deploy triton`)")
    try:
        card = Card.from_dict(json.loads(card_path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as exc:
        return problem("bad-card", f"{CARD_FILE} is not a dlforge card: {exc}")
    if card.model is None or not card.model.inputs:
        return problem("bad-card", f"{CARD_FILE} does not describe the model's inputs and outputs; redeploy the "
                                   "engine with `dlforge deploy triton`")
    backend = card.sections.get("backend", "ort")
    if known.get(backend, (None,))[0] != platform:
        problem("platform-mismatch", f"platform {platform} cannot run the card's {backend} engine "
                                     f"(use {known.get(backend, ('none',))[0]})")
    for v in versions:
        file = folder / str(v) / filename
        if file.is_file() and card.sha256 and sha256_file(file) != card.sha256:
            problem("model-changed", f"version {v}'s {filename} is not the engine its card describes (sha256 differs)")
    _check_batching(config, card, problem)
    _check_tensors(folder, config, card, pb2, problem)
    if platform == "tensorrt_plan" and any(g.kind == pb2.ModelInstanceGroup.KIND_CPU for g in config.instance_group):
        problem("plan-on-cpu", "instance_group kind KIND_CPU cannot load a TensorRT plan; use KIND_GPU")
    return out


def _check_batching(config, card, problem) -> None:
    limits = batch_range(card)
    if config.max_batch_size < 0:
        problem("bad-max-batch", f"max_batch_size {config.max_batch_size} is negative")
    elif config.max_batch_size > 0:
        if limits is None:
            problem("batch-not-dynamic", f"max_batch_size {config.max_batch_size}, but the model's batch dimension is "
                                         f"fixed at {card.model.inputs[0].shape[0]}; set max_batch_size: 0 and "
                                         "give the full shape as dims")
        else:
            lo, hi = limits
            if hi is not None and config.max_batch_size > hi:
                problem("batch-over-profile", f"max_batch_size {config.max_batch_size} exceeds the engine's largest "
                                              f"batch {hi} (its profile)")
            if lo > 1:
                problem("batch-under-profile", f"the engine's smallest batch is {lo}, but Triton sends batches from 1")
    if config.HasField("dynamic_batching") and config.max_batch_size == 0:
        problem("dynamic-batching-without-batch", "dynamic_batching needs max_batch_size > 0")


def _check_tensors(folder, config, card, pb2, problem) -> None:
    batching = config.max_batch_size > 0
    labels = card.model.labels
    for kind, configured, expected in (("input", config.input, card.model.inputs),
                                       ("output", config.output, card.model.outputs)):
        by_name = {t.name: t for t in expected}
        for entry in configured:
            tensor = by_name.get(entry.name)
            if tensor is None:
                problem(f"unknown-{kind}", f"{kind} {entry.name!r} is not an {kind} of the model "
                                           f"({', '.join(by_name)})")
                continue
            want = DTYPES.get(tensor.dtype)
            got = pb2.DataType.Name(entry.data_type)
            if got != want:
                problem("wrong-dtype", f"{kind} {entry.name!r} is {got}, but the model's is {tensor.dtype} ({want})")
            dims, model_dims = list(entry.dims), triton_dims(tensor.shape, batching)
            if entry.HasField("reshape"):
                dims = list(entry.reshape.shape)
            if len(dims) != len(model_dims) or any(d != m and m != -1 for d, m in zip(dims, model_dims)):
                where = "without the batch dimension, as max_batch_size > 0" if batching else \
                    "the full shape, as max_batch_size is 0"
                problem("wrong-dims", f"{kind} {entry.name!r} dims {dims} disagree with the model's {model_dims} "
                                      f"({where})")
            if kind == "output" and entry.label_filename:
                _check_labels(folder, entry, labels, model_dims, problem)
        missing = [n for n in by_name if n not in {e.name for e in configured}]
        if missing and (kind == "input" or configured):
            problem(f"missing-{kind}", f"model {kind}(s) {', '.join(map(repr, missing))} are not in config.pbtxt")


def _check_labels(folder: Path, entry, labels, model_dims, problem) -> None:
    path = folder / entry.label_filename
    if not path.is_file():
        problem("missing-labels", f"output {entry.name!r} names label file {entry.label_filename!r}, which is not "
                                  "in the model directory")
        return
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    classes = model_dims[-1] if model_dims else None
    if classes not in (None, -1) and len(lines) != classes:
        problem("wrong-labels", f"{entry.label_filename} has {len(lines)} labels, but output {entry.name!r} has "
                                f"{classes} classes")
    elif labels and lines != list(labels):
        problem("wrong-labels", f"{entry.label_filename} differs from the card's labels")
