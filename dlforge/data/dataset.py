"""The :class:`Dataset` container and :func:`load_dataset`, the one entry point by name."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from dlforge.errors import InputError
from dlforge.registry import Registry

SPLIT_SEED = 0
VAL_FRACTION = 0.1
# More classes than this is a labelling mistake, not a dataset: a stray label of 10**9 would
# otherwise ask for a terabyte-sized output layer.
MAX_CLASSES = 10_000
IDX_DATASETS = ("mnist", "fashion-mnist")  # downloadable IDX datasets (dlforge.data.idx.SOURCES)

# Named datasets: name -> loader(data_dir: Path) -> Dataset, registered in the module that reads them
# (digits.py, idx.py, cifar.py); every module of dlforge.data is discovered.
DATASETS: Registry = Registry("dataset", packages=["dlforge.data"])


@dataclass(frozen=True)
class DataFormat:
    """A file format a dataset can be given in (``--data PATH``): ``matches(path)`` says whether ``path`` is
    one, ``load(path)`` reads it. Registered in :data:`DATA_FORMATS`, tried before image folders."""

    matches: Callable[[Path], bool]
    load: Callable[[Path], Dataset]
    description: str = ""


DATA_FORMATS: Registry[DataFormat] = Registry("data format", packages=["dlforge.data"])


@dataclass(frozen=True)
class Dataset:
    """Images in [0, 1] as float32 ``(N, C, H, W)``, labels as int64, in three splits.

    ``details`` is what :meth:`describe` adds for the card beyond the common fields: an image folder
    records how to reload exactly the same images and splits (``image_folder``). An evaluation set
    (:mod:`dlforge.data.evaluation`, ``details["evaluation_only"]``) has only a test split, labelled in
    a model's label space: it may cover a few of many classes.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    labels: tuple[str, ...]
    source: str
    details: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse a dataset that cannot be trained or evaluated on: an empty split, too few classes."""
        for split in ("test",) if self.evaluation_only else ("train", "val", "test"):
            if len(getattr(self, f"y_{split}")) == 0:
                raise InputError(f"dataset {self.name} ({self.source}) has no {split} images; "
                                 "give it enough images for the train, validation and test splits")
        if not 2 <= len(self.labels) <= MAX_CLASSES:
            raise InputError(f"dataset {self.name} ({self.source}) has {len(self.labels)} class(es); "
                             f"dlforge trains on 2 to {MAX_CLASSES} classes")

    @property
    def evaluation_only(self) -> bool:
        return bool(self.details.get("evaluation_only"))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_test.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` of ``"train"``, ``"val"`` or ``"test"``."""
        if name not in ("train", "val", "test"):
            raise InputError(f"unknown split {name!r}; expected train, val or test")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    def describe(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "train": len(self.y_train),
            "val": len(self.y_val),
            "test": len(self.y_test),
            **self.details,
        }


def dataset_names() -> tuple[str, ...]:
    """The registered dataset names, the embedded default first."""
    names = DATASETS.names()
    return tuple(sorted(names, key=lambda n: (n != "digits", n)))


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *, input_shape: tuple | None = None,
                 split_seed: int | None = None, labels: tuple[str, ...] | None = None,
                 preprocess: dict | None = None, resample: bool = False) -> Dataset:
    """Load a dataset by name (``digits``, ``mnist``, ``fashion-mnist``, ``cifar10``), from a ``.npz`` path, from a
    folder of images with one sub-folder per class (:mod:`dlforge.data.image_folder`), or, for a model
    whose ``labels`` are given, an evaluation set of labelled photographs (:mod:`dlforge.data.evaluation`).

    Args:
        name: a dataset name, the path of a ``.npz`` file with ``x`` and ``y`` arrays, or an image folder.
        data_dir: directory of the IDX files for MNIST / Fashion-MNIST. Default:
            ``$DLFORGE_HOME/data/<name>`` (``~/.cache/dlforge/data/<name>``).
        input_shape: image folders only: the ``(C, H, W)`` to convert and resize every image to (C or
            H, W may be None: the images' own). Other datasets ignore it (their shape is checked
            against the model's where they are used).
        split_seed: image folders only: seed of the test and validation splits (default 0).
        labels: the label space of the model the data is for; with it, a folder of ``NAME_<index>`` images,
            or a folder whose class folders name some of these labels (a subset), loads as an evaluation set.
        preprocess: the model's ``image_preprocessing`` for an evaluation set (resize, crop, channel order).
        resample: audio read from WAV files (speech-commands, WAV folders): resample clips of another rate.
    """
    if name in DATASETS:
        return _call(DATASETS.get(name), name, resample, Path(data_dir) if data_dir else default_data_dir(name))
    for _, fmt in DATA_FORMATS.items():
        if fmt.matches(Path(name)):
            return _call(fmt.load, name, resample, Path(name))
    if resample:
        raise InputError(f"--resample applies to audio read from WAV files (speech-commands, a WAV folder); {name} "
                         "is not one")
    if labels and os.path.isdir(name) and _evaluation_set(Path(name), labels, preprocess):
        from dlforge.data.evaluation import load_evaluation_images

        return load_evaluation_images(Path(name).resolve(), labels=tuple(labels), input_shape=input_shape,
                                      preprocess=preprocess)
    if is_image_folder(name):
        from dlforge.data.image_folder import load_image_folder

        return load_image_folder(Path(name), input_shape=input_shape, split_seed=split_seed)
    formats = ", ".join(f.description or n for n, f in DATA_FORMATS.items())
    raise InputError(f"unknown dataset {name!r}; expected one of {', '.join(dataset_names())}, a file of a known "
                     f"format ({formats}), or an image folder (one sub-folder of images per class)")


def _call(load: Callable, name: str, resample: bool, where: Path) -> Dataset:
    """``load(where)``, with ``resample=True`` where asked, which only WAV readers take."""
    if not resample:
        return load(where)
    import inspect

    if "resample" not in inspect.signature(load).parameters:
        raise InputError(f"--resample applies to audio read from WAV files (speech-commands, a WAV folder); {name} "
                         "is not one")
    return load(where, resample=True)


def _evaluation_set(folder: Path, labels, preprocess: dict | None) -> bool:
    """A folder to read as an evaluation set for a model of ``labels``: labelled files; or class folders that
    name only the model's labels but not all of them, or for a model that preprocesses raw photographs."""
    from dlforge.data.evaluation import is_labelled_files

    if is_labelled_files(folder):
        return True
    classes = {p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")}
    names = set(labels) | {label.split(" ", 1)[0] for label in labels}
    return bool(classes) and classes <= names and (len(classes) < len(labels) or bool(preprocess))


def is_image_folder(name: str) -> bool:
    """Whether :func:`load_dataset` reads ``name`` as an image folder (a dataset's name wins over a folder)."""
    return (name not in DATASETS and not any(f.matches(Path(name)) for _, f in DATA_FORMATS.items())
            and os.path.isdir(name))


def load_training_data(artifact, data: str | None = None, data_dir: str | os.PathLike | None = None,
                       *, flag: str = "--data") -> Dataset:
    """The dataset the model in ``artifact`` was trained on (the rule is
    :func:`dlforge.artifact.dataset_spec`); ``data`` / ``data_dir`` override it.

    An image folder is read as it was for training (same channels, size and split seed); another
    folder given as ``data`` is resized to the model's input.

    Raises:
        InputError: the lineage does not say, and ``data`` was not given; the data is unusable; or
            the image folder changed since the model was trained on it.
    """
    from dlforge.artifact import DatasetSpec, dataset_spec

    found = dataset_spec(artifact)
    if data is None and found is None:
        raise InputError(f"cannot tell which dataset {artifact.path} was trained on; pass {flag} "
                         "(and --data-dir), e.g. --data mnist --data-dir DIR")
    if found is not None and (data is None or _same_data(data, found.name)):
        return load_spec(found._replace(data_dir=data_dir or found.data_dir))
    model = artifact.card.model
    return load_spec(DatasetSpec(data, data_dir, split_seed=found.split_seed if found else None,
                                 resample=found.resample if found else False).for_model(model))


def load_spec(spec) -> Dataset:
    """Load the dataset a :class:`dlforge.artifact.DatasetSpec` names, as it says to read it.

    Raises:
        InputError: as :func:`load_dataset`; or the image folder's content no longer matches the
            fingerprint recorded at training (its test split would no longer be held out).
    """
    dataset = load_dataset(spec.name, spec.data_dir, input_shape=spec.input_shape, split_seed=spec.split_seed,
                           labels=spec.labels, preprocess=dict(spec.preprocess) if spec.preprocess else None,
                           resample=spec.resample)
    actual = dataset.details.get("image_folder", {}).get("fingerprint")
    if spec.fingerprint and actual and actual != spec.fingerprint:
        raise InputError(f"image folder {dataset.source} changed since the model was trained on it (fingerprint "
                         f"{actual[7:19]}..., the card says {spec.fingerprint[7:19]}...): images were added, removed "
                         "or edited, so its test split is no longer held out; restore the folder or retrain")
    return dataset


def _same_data(data: str, name: str) -> bool:
    return data == name or (is_image_folder(data) and Path(data).resolve() == Path(name).resolve())


def default_data_dir(name: str) -> Path:
    home = os.environ.get("DLFORGE_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "dlforge")
    return Path(home) / "data" / name


def split_train_val(x: np.ndarray, y: np.ndarray, fraction: float = VAL_FRACTION):
    """Carve a validation split off the training set with a fixed seed."""
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    n_val = max(1, int(round(len(y) * fraction)))
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]


def holdout_test(x: np.ndarray, y: np.ndarray, fraction: float = 0.2):
    """Set aside a fixed, seeded test split from data that ships without one."""
    order = np.random.default_rng(SPLIT_SEED + 1).permutation(len(y))
    n_test = max(1, int(round(len(y) * fraction)))
    test, rest = order[:n_test], order[n_test:]
    return x[rest], y[rest], x[test], y[test]
