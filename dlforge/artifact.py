"""Artifact directories and their ``card.json`` (stdlib only).

Every stage writes a directory holding its payload file and ``card.json``: what the model is,
where it came from (the parent's sha256, the stage's parameters) and what built it. A directory is
assembled in a hidden staging directory beside its destination and renamed into place only when
complete, with ``card.json`` written last, so a crash never leaves an artifact that loads.

Integrity rules, enforced when an artifact is opened:

- the card's values are checked (kinds, dtypes, shapes, value range, labels), not only its keys;
- the payload, and every external-data file the card lists, is a regular file inside the directory
  (no symbolic links, no ``..``) whose sha256 matches the card;
- a parent is trusted only when its payload's sha256 equals what the child recorded
  (:func:`parent_artifact`, :func:`source_checkpoint`).

Kept in one module (about 530 lines) on purpose: the card's types, the opening checks and the atomic
writer enforce one set of integrity rules together, and every layer imports this module, which must
stay stdlib-only; the card's value checks already live apart (:mod:`dlforge.card_validation`).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, NamedTuple

from dlforge.card_validation import validate_card
from dlforge.errors import ArtifactError, InputError
from dlforge.kinds import ARTIFACT_KINDS

SCHEMA_VERSION = 1
CARD_NAME = "card.json"


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor: ``shape`` holds ints, or ``"batch"`` (or another name) for dynamic dims."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: dict) -> TensorSpec:
        return cls(name=d["name"], shape=tuple(d["shape"]), dtype=d["dtype"])

    def __str__(self) -> str:
        return f"{self.name}: {self.dtype}[{', '.join(str(s) for s in self.shape)}]"


@dataclass(frozen=True)
class ModelInfo:
    """What the model is: enough for an application to feed it and read its answer."""

    name: str
    task: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    value_range: tuple[float, float] = (0.0, 1.0)
    labels: tuple[str, ...] = ()
    dataset: str | None = None
    preprocessing: str | None = None
    config: dict = field(default_factory=dict)
    # How a raw photograph becomes the input (``dlforge.data.evaluation.pixels``): resize, crop, channel order.
    # Empty: images are read at the input's size (an image folder resizes them to it).
    image_preprocessing: dict = field(default_factory=dict)
    # A model of sound (:mod:`dlforge.data.wav`): its sample rate and the peak its clips are normalized to.
    # Empty: the input is an image.
    audio: dict = field(default_factory=dict)

    @property
    def is_audio(self) -> bool:
        return bool(self.audio)

    @property
    def audio_peak(self) -> float:
        """The max |x| an audio model's clips are normalized to (dB budgets are relative to it)."""
        return float(self.audio.get("peak", 1.0))

    @property
    def image_shape(self) -> tuple[int, ...] | None:
        """The first input's shape without the batch dimension, when every dimension is fixed."""
        shape = tuple(self.inputs[0].shape[1:]) if self.inputs else ()
        return tuple(int(d) for d in shape) if shape and all(type(d) is int for d in shape) else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["inputs"] = [t.to_dict() for t in self.inputs]
        d["outputs"] = [t.to_dict() for t in self.outputs]
        d["value_range"] = list(self.value_range)
        d["labels"] = list(self.labels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelInfo:
        return cls(
            name=d["name"],
            task=d.get("task", "classification"),
            inputs=tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
            value_range=tuple(d.get("value_range", (0.0, 1.0))),
            labels=tuple(d.get("labels", ())),
            dataset=d.get("dataset"),
            preprocessing=d.get("preprocessing"),
            config=dict(d.get("config", {})),
            image_preprocessing=dict(d.get("image_preprocessing") or {}),
            audio=dict(d.get("audio") or {}),
        )


@dataclass
class Card:
    """The contents of ``card.json``. ``sections`` holds kind-specific blocks (``metrics``,
    ``verification``, ``evaluation``, ...) stored at the top level of the JSON."""

    kind: str
    payload: str
    model: ModelInfo | None
    params: dict
    env: dict
    parent: dict | None = None
    sha256: str | None = None
    sections: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    _CORE = ("schema_version", "kind", "payload", "sha256", "parent", "model", "params", "env")

    def to_dict(self) -> dict:
        d = {
            "schema_version": self.schema_version,
            "kind": self.kind,
            "payload": self.payload,
            "sha256": self.sha256,
            "parent": self.parent,
            "model": self.model.to_dict() if self.model else None,
            "params": self.params,
            "env": self.env,
        }
        d.update(self.sections)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Card:
        return cls(
            schema_version=d["schema_version"],
            kind=d["kind"],
            payload=d["payload"],
            sha256=d.get("sha256"),
            parent=d.get("parent"),
            model=ModelInfo.from_dict(d["model"]) if d.get("model") else None,
            params=d.get("params", {}),
            env=d.get("env", {}),
            sections={k: v for k, v in d.items() if k not in cls._CORE},
        )


@dataclass(frozen=True)
class Artifact:
    """An artifact directory that has been opened and checked."""

    path: Path
    card: Card

    @property
    def payload_path(self) -> Path:
        return self.path / self.card.payload

    @property
    def kind(self) -> str:
        return self.card.kind

    def lineage(self) -> dict:
        """``{"path", "sha256"}`` of this artifact, as a child records it in ``parent``."""
        return {"path": str(self.path.resolve()), "sha256": self.card.sha256}


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_artifact(path: str | os.PathLike) -> bool:
    return (Path(path) / CARD_NAME).is_file()


def _inside(directory: Path, name: str, card_path: Path, what: str) -> Path:
    """``directory/name``, refused unless it is a regular file (not a link) inside ``directory``."""
    path = directory / name
    if os.path.isabs(name) or ".." in Path(name).parts:
        raise ArtifactError(f"{card_path} names a {what} outside its directory ({name!r}); refusing it")
    current = directory
    for part in Path(name).parts:
        current = current / part
        if current.is_symlink():
            raise ArtifactError(f"{what} {current} is a symbolic link; an artifact's files must be regular files "
                                "inside its directory: copy the real file there or rebuild the artifact")
    if not path.is_file():
        raise ArtifactError(f"{directory} is incomplete: its {what} {name} is missing or not a regular file; "
                            "rebuild the artifact")
    return path


def _verify_hash(path: Path, expected: str | None, what: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise ArtifactError(
            f"{what} {path} does not match its card (sha256 {actual[:12]}..., card says {(expected or 'none')[:12]}...): "
            "the file was modified or corrupted; rebuild the artifact")


def _read_card(path: Path, want: str) -> Card:
    card_path = path / CARD_NAME
    if not path.exists():
        raise ArtifactError(f"{path} does not exist; expected {want} directory")
    if not card_path.is_file() or card_path.is_symlink():
        raise ArtifactError(f"{path} is not a dlforge artifact (no regular {CARD_NAME}); expected {want} directory")
    try:
        raw = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{card_path} is unreadable or not JSON ({exc}); rebuild the artifact") from exc
    if isinstance(raw, dict) and type(raw.get("schema_version")) is int and raw["schema_version"] > SCHEMA_VERSION:
        raise ArtifactError(f"{card_path} has schema version {raw['schema_version']}, newer than this dlforge "
                            f"understands ({SCHEMA_VERSION}); upgrade dlforge")
    validate_card(raw, card_path)
    return Card.from_dict(raw)


def open_artifact(
    path: str | os.PathLike, kinds: Iterable[str] | None = None, *, verify: bool = True
) -> Artifact:
    """Open an artifact directory, check its card, its kind and (by default) its files' sha256.

    ``verify=False`` skips only the hashing (for a quick look, e.g. ``inspect``); the card and the
    files' locations are always checked.

    Raises:
        ArtifactError: the directory is missing, its card is unreadable or invalid, it is of another
            kind, a file is missing, outside the directory or a link, or does not match its sha256.
    """
    path = Path(path)
    wanted = tuple(kinds) if kinds else None
    want = " or ".join(f"{'an' if k[0] in 'aeio' else 'a'} {k} artifact (from `{ARTIFACT_KINDS.get(k).produced_by}`)"
                       for k in wanted) if wanted else "an artifact"
    card = _read_card(path, want)
    card_path = path / CARD_NAME
    if wanted and card.kind not in wanted:
        raise ArtifactError(f"{path} is a {card.kind} artifact; expected {want}")
    payload = _inside(path, card.payload, card_path, "payload")
    if ARTIFACT_KINDS.get(card.kind).holds_model and payload.stat().st_size == 0:
        raise ArtifactError(f"{payload} is empty (0 bytes); rebuild the artifact")
    external = {name: _inside(path, name, card_path, "external-data file")
                for name in card.sections.get("external_data", {})}
    if verify:
        _verify_hash(payload, card.sha256, "payload")
        for name, file in external.items():
            _verify_hash(file, card.sections["external_data"][name], "external-data file")
    return Artifact(path=path, card=card)


# -- lineage -------------------------------------------------------------------------------------
def parent_artifact(artifact: Artifact) -> Artifact | None:
    """The artifact ``artifact`` was made from, verified: its payload's sha256 must equal what the
    child recorded. None when the card names no parent or the parent no longer exists.

    A parent recorded at an absolute path that is gone is also looked for beside the child (a run
    directory that was moved or copied); the hash check makes that safe.

    Raises:
        ArtifactError: the parent exists but is not the one the child was made from (modified,
            retrained at the same path, or replaced).
    """
    record = artifact.card.parent
    if not record or not record.get("path"):
        return None
    candidates = [Path(record["path"]), artifact.path.parent / Path(record["path"]).name]
    path = next((c for c in candidates if c.is_dir() and is_artifact(c)), None)
    if path is None:
        return None
    parent = open_artifact(path)
    if record.get("sha256") != parent.card.sha256:
        raise ArtifactError(
            f"{artifact.path} was made from {record['path']} with sha256 {str(record.get('sha256'))[:12]}..., but "
            f"{path} now holds sha256 {str(parent.card.sha256)[:12]}... (retrained, modified or replaced): its "
            "lineage cannot be trusted; rebuild the artifact from the current parent or restore the original")
    return parent


def lineage(artifact: Artifact, max_depth: int = 8) -> list[Artifact]:
    """``artifact`` and its verified ancestors, nearest first (see :func:`parent_artifact`)."""
    chain = [artifact]
    while len(chain) < max_depth and (parent := parent_artifact(chain[-1])) is not None:
        chain.append(parent)
    return chain


def source_checkpoint(artifact: Artifact) -> Artifact | None:
    """The checkpoint an artifact descends from (itself, if it is one), every hop verified; None when
    the chain ends before a checkpoint (a plain ONNX, a parent that no longer exists)."""
    return next((a for a in lineage(artifact) if a.kind == "checkpoint"), None)


class DatasetSpec(NamedTuple):
    """A model's training data: its name and directory, and for an image folder how to read it (the
    ``(C, H, W)`` of the model's input, the split seed, the content fingerprint: None where unknown)."""

    name: str
    data_dir: str | None = None
    input_shape: tuple[int, ...] | None = None
    split_seed: int | None = None
    fingerprint: str | None = None
    labels: tuple[str, ...] | None = None  # the model's label space: evaluation sets map their classes into it
    # the model's image_preprocessing for raw photographs, as sorted (key, value) pairs: a spec is hashable
    preprocess: tuple | None = None
    resample: bool = False  # audio: clips of another sample rate were resampled (train --resample)

    def for_model(self, info: ModelInfo | None) -> DatasetSpec:
        """This spec, reading images as the model ``info`` describes (input shape, labels, preprocessing)."""
        if info is None:
            return self
        frozen = tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                              for k, v in info.image_preprocessing.items())) or None
        return self._replace(input_shape=self.input_shape or info.image_shape, labels=info.labels or None,
                             preprocess=frozen)


def dataset_spec(artifact: Artifact) -> DatasetSpec | None:
    """The dataset the model was trained on, by the rule of :func:`training_data`, with what it takes
    to reload an image folder exactly (recorded in the checkpoint card's ``dataset`` section)."""
    ckpt = source_checkpoint(artifact)
    if ckpt is not None and ckpt.card.params.get("data"):
        section = ckpt.card.sections.get("dataset")
        section = section if isinstance(section, dict) else {}
        folder = section.get("image_folder")
        if folder is None:
            return DatasetSpec(ckpt.card.params["data"], ckpt.card.params.get("data_dir"),
                               resample=bool(ckpt.card.params.get("resample"))).for_model(ckpt.card.model)
        shape = section.get("input_shape")
        if not (isinstance(folder, dict) and isinstance(folder.get("path"), str) and isinstance(shape, list)
                and len(shape) == 3 and all(type(d) is int for d in shape)):
            raise ArtifactError(f"{ckpt.path}/{CARD_NAME}: dataset.image_folder does not say where the images are "
                                "and how they were read; retrain the checkpoint")
        return DatasetSpec(folder["path"], None, tuple(shape), folder.get("split_seed"), folder.get("fingerprint"))
    model = artifact.card.model
    if model is None or not model.dataset:
        return None
    return DatasetSpec(model.dataset, ckpt.card.params.get("data_dir") if ckpt is not None else None).for_model(model)


def training_data(artifact: Artifact) -> tuple[str, str | None] | None:
    """``(dataset, data_dir)`` the model was trained on: the one rule every stage uses.

    The source checkpoint's ``params`` (``data``, ``data_dir``; for an image folder its recorded
    absolute path) when the lineage reaches one, else the dataset named in the card's model section;
    None when neither says. :func:`dataset_spec` adds how to read an image folder again.
    """
    spec = dataset_spec(artifact)
    return None if spec is None else (spec.name, spec.data_dir)


# -- writing -------------------------------------------------------------------------------------
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make cards unreadable to other users
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_atomic(path, (json.dumps(obj, indent=2) + "\n").encode("utf-8"))


_RENAME_EXCHANGE = 2


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if result != 0:
        err = ctypes.get_errno()
        if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: this kernel or file system cannot
            return False
        raise OSError(err, os.strerror(err), str(b))
    return True


def _check_replaceable(out_dir: Path, protect: Iterable[str | os.PathLike], marker: str | None = None) -> None:
    """``--force`` replaces a dlforge artifact only: never the input, a directory holding it, or other files."""
    resolved = out_dir.resolve()
    for p in protect:
        p = Path(p).resolve()
        if p == resolved or resolved in p.parents:
            raise InputError(f"-o {out_dir} {'is' if p == resolved else 'holds'} this command's input {p}; "
                             "--force never replaces an input: choose another -o")
    if resolved in Path.cwd().resolve().parents or resolved == Path.cwd().resolve():
        raise InputError(f"-o {out_dir} holds the current directory; choose another -o")
    if marker is not None:
        if not (out_dir / marker).is_file():
            raise InputError(f"output directory {out_dir} exists and was not written by dlforge (no {marker}); "
                             "--force only replaces what dlforge wrote: choose another -o or remove it yourself")
        return
    if not is_artifact(out_dir):
        raise InputError(f"output directory {out_dir} exists and is not a dlforge artifact (no {CARD_NAME}); "
                         "--force only replaces dlforge artifacts: choose another -o or remove it yourself")


def check_output(out_dir: str | os.PathLike, *, force: bool = False, protect: Iterable[str | os.PathLike] = (),
                 marker: str | None = None) -> None:
    """Raise :class:`InputError` now if ``out_dir`` cannot receive an artifact; creates nothing.

    ``marker``: for outputs that are not artifacts (a Triton model repository), the file whose presence
    says dlforge wrote the directory, so ``force`` may replace it.

    Stages call this before any work, so bad input never leaves a directory behind.
    """
    out_dir = Path(out_dir)
    if out_dir.is_symlink() and not out_dir.exists():
        raise InputError(f"output path {out_dir} is a symbolic link to {os.readlink(out_dir)}, which does not exist; "
                         "choose another -o or create the link's target")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output path {out_dir} exists and is not a directory; choose another -o")
    occupied = out_dir.is_dir() and any(out_dir.iterdir())
    if occupied and not force:
        raise InputError(f"output directory {out_dir} already exists and is not empty; "
                         "choose another -o or pass --force to replace it")
    if occupied:
        _check_replaceable(out_dir, protect, marker)
    ancestor = out_dir.resolve().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"cannot write the output directory {out_dir}: {ancestor} is not a writable directory; "
                         "choose a writable -o")


class ArtifactWriter:
    """Assemble an artifact directory in a staging directory and move it into place on commit.

    Create it *before* the expensive work so an unusable output path fails fast::

        with ArtifactWriter(out_dir, protect=[input_dir]) as writer:
            save_weights(model, writer.file("model.safetensors"))
            artifact = writer.commit(card)

    Leaving the ``with`` block without ``commit`` (an error, Ctrl-C, SIGTERM under the CLI) removes
    the staging directory; the destination is untouched. ``force`` replaces an existing *artifact*
    only (never a directory of other files, an input named in ``protect`` or a directory holding one),
    and the swap is atomic where the OS allows it, so ``out_dir`` holds the old artifact or the new
    one at every instant.
    """

    def __init__(self, out_dir: str | os.PathLike, *, force: bool = False,
                 protect: Iterable[str | os.PathLike] = (), marker: str | None = None):
        self.out_dir = Path(out_dir)
        self.force = force
        check_output(self.out_dir, force=force, protect=protect, marker=marker)
        parent = self.out_dir.resolve().parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self.staging = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.", suffix=".partial", dir=parent))
        except OSError as exc:
            raise InputError(f"cannot write the output directory {self.out_dir}: {exc.strerror or exc}; "
                             "choose a writable -o") from exc
        self._committed = False

    def file(self, name: str) -> Path:
        """Path of a file inside the staging directory."""
        return self.staging / name

    def commit(self, card: Card) -> Artifact:
        """Check the card as ``open_artifact`` will, hash the payload (and listed external data), write
        ``card.json`` last, move into place: a card no reader would accept is never committed."""
        card.sha256 = sha256_file(self.staging / card.payload)
        if card.payload.endswith(".onnx"):
            from dlforge.onnx_external import check_external_data

            files = check_external_data(self.staging / card.payload)
            if files:
                card.sections["external_data"] = {f.relative_to(self.staging).as_posix(): sha256_file(f) for f in files}
        validate_card(json.loads(json.dumps(card.to_dict())), self.out_dir / CARD_NAME)  # as read back
        write_json_atomic(self.staging / CARD_NAME, card.to_dict())
        self.place()
        return Artifact(path=self.out_dir, card=card)

    def place(self) -> None:
        """Move the staging directory into place as it is (``commit`` without a card: outputs that are not
        artifacts, such as a Triton model repository, identified by the ``marker`` file instead)."""
        os.chmod(self.staging, 0o777 & ~_umask())
        if self.out_dir.is_dir() and exchange(self.staging, self.out_dir):
            shutil.rmtree(self.staging, ignore_errors=True)  # now holds the old artifact
        else:
            if self.out_dir.is_dir():  # no atomic swap here: a brief window with the old one aside
                old = self.out_dir.with_name(f".{self.out_dir.name}.{os.getpid()}.old")
                os.replace(self.out_dir, old)
                os.replace(self.staging, self.out_dir)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(self.staging, self.out_dir)
        self._committed = True

    def discard(self) -> None:
        if not self._committed:
            shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> ArtifactWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.discard()
