"""Artifact directories and their ``card.json`` (stdlib only).

Every stage writes a directory holding its payload file and ``card.json``: what the model is,
where it came from (the parent's sha256, the stage's parameters) and what built it. A directory is
assembled in a hidden staging directory beside its destination and renamed into place only when
complete, with ``card.json`` written last, so a crash never leaves an artifact that loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from dlforge.errors import ArtifactError, InputError

SCHEMA_VERSION = 1
CARD_NAME = "card.json"
KINDS = ("checkpoint", "onnx", "engine", "bench", "audit", "poison")
# What a user runs to produce each kind: named in errors that ask for one kind and find another.
PRODUCED_BY = {
    "checkpoint": "dlforge train",
    "onnx": "dlforge export",
    "engine": "dlforge build",
    "bench": "dlforge bench -o",
    "audit": "dlforge audit -o",
    "poison": "dlforge poison",
}


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


def open_artifact(
    path: str | os.PathLike, kinds: Iterable[str] | None = None, *, verify: bool = True
) -> Artifact:
    """Open an artifact directory, check its kind and (by default) its payload's sha256.

    Raises:
        ArtifactError: the directory is missing, has no readable card, is of another kind, or
            its payload does not match the sha256 in its card.
    """
    path = Path(path)
    wanted = tuple(kinds) if kinds else None
    want = " or ".join(f"{k} artifact (from `{PRODUCED_BY[k]}`)" for k in wanted) if wanted else "artifact"
    if not path.exists():
        raise ArtifactError(f"{path} does not exist; expected a {want} directory")
    card_path = path / CARD_NAME
    if not card_path.is_file():
        raise ArtifactError(f"{path} is not a dlforge artifact (no {CARD_NAME}); expected a {want} directory")
    try:
        card = Card.from_dict(json.loads(card_path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{card_path} is unreadable or malformed ({exc}); rebuild the artifact") from exc
    if card.schema_version > SCHEMA_VERSION:
        raise ArtifactError(
            f"{card_path} has schema version {card.schema_version}, newer than this dlforge "
            f"understands ({SCHEMA_VERSION}); upgrade dlforge"
        )
    if wanted and card.kind not in wanted:
        raise ArtifactError(f"{path} is a {card.kind} artifact; expected a {want}")
    payload = path / card.payload
    if os.path.isabs(card.payload) or Path(os.path.normpath(payload)).parent != Path(os.path.normpath(path)):
        raise ArtifactError(f"{card_path} names a payload outside its directory ({card.payload!r}); refusing it")
    if not payload.is_file():
        raise ArtifactError(f"{path} is incomplete: its payload {card.payload} is missing; rebuild the artifact")
    if verify and card.sha256 != (actual := sha256_file(payload)):
        raise ArtifactError(
            f"{payload} does not match its card (sha256 {actual[:12]}..., card says "
            f"{(card.sha256 or 'none')[:12]}...): the file was modified or corrupted; rebuild the artifact"
        )
    return Artifact(path=path, card=card)


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


def source_checkpoint(artifact: Artifact, max_depth: int = 4) -> Artifact | None:
    """The checkpoint an artifact descends from (itself, if it is one), found by following ``parent``
    paths; None when the chain is broken or leads elsewhere."""
    node = artifact
    for _ in range(max_depth):
        if node.kind == "checkpoint":
            return node
        parent = node.card.parent
        if not parent or not parent.get("path") or not Path(parent["path"]).is_dir():
            return None
        try:
            node = open_artifact(parent["path"], verify=False)
        except ArtifactError:
            return None
    return None


class ArtifactWriter:
    """Assemble an artifact directory in a staging directory and move it into place on commit.

    Create it *before* the expensive work so an unusable output path fails fast::

        with ArtifactWriter(out_dir) as writer:
            save_weights(model, writer.file("model.safetensors"))
            artifact = writer.commit(card)

    Leaving the ``with`` block without ``commit`` (an error, Ctrl-C) removes the staging
    directory; the destination is untouched.
    """

    def __init__(self, out_dir: str | os.PathLike, *, force: bool = False):
        self.out_dir = Path(out_dir)
        self.force = force
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise InputError(f"output path {self.out_dir} exists and is not a directory; choose another -o")
        if self.out_dir.is_dir() and any(self.out_dir.iterdir()) and not force:
            raise InputError(f"output directory {self.out_dir} already exists and is not empty; "
                             "choose another -o or pass --force to replace it")
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
        """Hash the payload, write ``card.json`` last, and move the directory into place."""
        card.sha256 = sha256_file(self.staging / card.payload)
        write_json_atomic(self.staging / CARD_NAME, card.to_dict())
        os.chmod(self.staging, 0o777 & ~_umask())
        old = None
        if self.out_dir.exists():
            old = self.out_dir.with_name(f".{self.out_dir.name}.{os.getpid()}.old")
            os.replace(self.out_dir, old)
        os.replace(self.staging, self.out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self._committed = True
        return Artifact(path=self.out_dir, card=card)

    def discard(self) -> None:
        if not self._committed:
            shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> ArtifactWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.discard()
