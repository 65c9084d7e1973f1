"""The :class:`Dataset` container and :func:`load_dataset`, the one entry point by name."""

from __future__ import annotations

import os
from dataclasses import dataclass
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
    """Images in [0, 1] as float32 ``(N, C, H, W)``, labels as int64, in three splits."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    labels: tuple[str, ...]
    source: str

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
        }


def dataset_names() -> tuple[str, ...]:
    return ("digits", *IDX_DATASETS)


def load_dataset(name: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load a dataset by name (``digits``, ``mnist``, ``fashion-mnist``) or from a ``.npz`` path.

    Args:
        name: a dataset name, or the path of a ``.npz`` file with ``x`` and ``y`` arrays.
        data_dir: directory of the IDX files for MNIST / Fashion-MNIST. Default:
            ``$DLFORGE_HOME/data/<name>`` (``~/.cache/dlforge/data/<name>``).
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
    raise InputError(
        f"unknown dataset {name!r}; expected one of {', '.join(dataset_names())} or a path to a .npz file"
    )


def load_training_data(artifact, data: str | None = None, data_dir: str | os.PathLike | None = None,
                       *, flag: str = "--data") -> Dataset:
    """The dataset the model in ``artifact`` was trained on (the rule is
    :func:`dlforge.artifact.training_data`); ``data`` / ``data_dir`` override it.

    Raises:
        InputError: the lineage does not say, and ``data`` was not given; or the data is unusable.
    """
    from dlforge.artifact import training_data

    found = training_data(artifact)
    if data is None and found is None:
        raise InputError(f"cannot tell which dataset {artifact.path} was trained on; pass {flag} "
                         "(and --data-dir), e.g. --data mnist --data-dir DIR")
    name = data or found[0]
    directory = data_dir or (found[1] if found and name == found[0] else None)
    return load_dataset(name, directory)


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
