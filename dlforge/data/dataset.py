"""The :class:`Dataset` container and :func:`load_dataset`, the one entry point by name."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlforge.errors import InputError

SPLIT_SEED = 0
VAL_FRACTION = 0.1
# More classes than this is a labelling mistake, not a dataset: a stray label of 10**9 would
# otherwise ask for a terabyte-sized output layer.
MAX_CLASSES = 10_000
IDX_DATASETS = ("mnist", "fashion-mnist")  # downloadable IDX datasets (dlforge.data.idx.SOURCES)


@dataclass(frozen=True)
class Dataset:
    """Images in [0, 1] as float32 ``(N, C, H, W)``, labels as int64, in three splits.

    ``details`` is what :meth:`describe` adds for the card beyond the common fields: an image folder
    records how to reload exactly the same images and splits (``image_folder``).
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
        for split in ("train", "val", "test"):
            if len(getattr(self, f"y_{split}")) == 0:
                raise InputError(f"dataset {self.name} ({self.source}) has no {split} images; "
                                 "give it enough images for the train, validation and test splits")
        if not 2 <= len(self.labels) <= MAX_CLASSES:
            raise InputError(f"dataset {self.name} ({self.source}) has {len(self.labels)} class(es); "
                             f"dlforge trains on 2 to {MAX_CLASSES} classes")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

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
    return ("digits", *IDX_DATASETS)


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *, input_shape: tuple | None = None,
                 split_seed: int | None = None) -> Dataset:
    """Load a dataset by name (``digits``, ``mnist``, ``fashion-mnist``), from a ``.npz`` path, or from a
    folder of images with one sub-folder per class (:mod:`dlforge.data.image_folder`).

    Args:
        name: a dataset name, the path of a ``.npz`` file with ``x`` and ``y`` arrays, or an image folder.
        data_dir: directory of the IDX files for MNIST / Fashion-MNIST. Default:
            ``$DLFORGE_HOME/data/<name>`` (``~/.cache/dlforge/data/<name>``).
        input_shape: image folders only: the ``(C, H, W)`` to convert and resize every image to (C or
            H, W may be None: the images' own). Other datasets ignore it (their shape is checked
            against the model's where they are used).
        split_seed: image folders only: seed of the test and validation splits (default 0).
    """
    if name == "digits":
        from dlforge.data.digits import load_digits

        return load_digits()
    if name in IDX_DATASETS:
        from dlforge.data.idx import load_idx_dataset

        return load_idx_dataset(name, Path(data_dir) if data_dir else default_data_dir(name))
    if name.endswith(".npz"):
        from dlforge.data.npz import load_npz

        return load_npz(Path(name))
    if is_image_folder(name):
        from dlforge.data.image_folder import load_image_folder

        return load_image_folder(Path(name), input_shape=input_shape, split_seed=split_seed)
    raise InputError(f"unknown dataset {name!r}; expected one of {', '.join(dataset_names())}, a path to a .npz "
                     "file, or an image folder (one sub-folder of images per class)")


def is_image_folder(name: str) -> bool:
    """Whether :func:`load_dataset` reads ``name`` as an image folder (a dataset's name wins over a folder)."""
    return name not in dataset_names() and not name.endswith(".npz") and os.path.isdir(name)


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
    return load_spec(DatasetSpec(data, data_dir, input_shape=model.image_shape if model else None,
                                 split_seed=found.split_seed if found else None))


def load_spec(spec) -> Dataset:
    """Load the dataset a :class:`dlforge.artifact.DatasetSpec` names, as it says to read it.

    Raises:
        InputError: as :func:`load_dataset`; or the image folder's content no longer matches the
            fingerprint recorded at training (its test split would no longer be held out).
    """
    dataset = load_dataset(spec.name, spec.data_dir, input_shape=spec.input_shape, split_seed=spec.split_seed)
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
