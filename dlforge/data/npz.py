"""A user's own images from a ``.npz`` file: ``x`` (N, H, W) or (N, C, H, W), ``y`` integer labels.

Optional keys: ``x_test`` / ``y_test`` (otherwise a fixed 20% is held out) and ``labels``
(class names). ``x`` is uint8 in 0..255 or float in [0, 1].
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from dlforge.data.dataset import DATA_FORMATS, MAX_CLASSES, DataFormat, Dataset, holdout_test, split_train_val
from dlforge.errors import InputError


def load_npz(path: Path) -> Dataset:
    """The dataset in ``path``; registered as the ``npz`` data format (any path ending in ``.npz``)."""
    if not path.is_file():
        raise InputError(f"dataset file {path} does not exist; pass a .npz with 'x' and 'y' arrays")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"{path} is not a readable .npz of plain arrays ({exc}); "
                         "save it with numpy.savez(path, x=..., y=...)") from exc
    for key in ("x", "y"):
        if key not in arrays:
            raise InputError(f"{path} has no {key!r} array (found: {', '.join(arrays) or 'nothing'}); "
                             "save it with numpy.savez(path, x=images, y=labels)")
    x, y = _images(path, "x", arrays["x"]), _labels(path, "y", arrays["y"], len(arrays["x"]))
    if "x_test" in arrays or "y_test" in arrays:
        if not ("x_test" in arrays and "y_test" in arrays):
            raise InputError(f"{path} has only one of 'x_test' / 'y_test'; provide both or neither")
        x_test = _images(path, "x_test", arrays["x_test"])
        y_test = _labels(path, "y_test", arrays["y_test"], len(x_test))
        if x_test.shape[1:] != x.shape[1:]:
            raise InputError(f"{path}: x_test images are {x_test.shape[1:]}, x images are {x.shape[1:]}")
    else:
        x, y, x_test, y_test = holdout_test(x, y)
    labels = _class_names(path, arrays.get("labels"), np.concatenate([y, y_test]))
    x_train, y_train, x_val, y_val = split_train_val(x, y)
    return Dataset(name=path.stem, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val,
                   x_test=x_test, y_test=y_test, labels=labels, source=str(path))


def _class_names(path: Path, names: np.ndarray | None, y: np.ndarray) -> tuple[str, ...]:
    """The class names: the ``labels`` array if given, else ``"0"``..``"K-1"`` for the K classes ``y`` uses.

    Every label must name a class. Without ``labels``, the classes are 0..max(y) and each must
    occur: a gap (labels 0, 1, 2 and 40) is a stray label, not 38 empty classes.
    """
    fix = "fix y or the 'labels' array" if names is not None else "fix y, or add a 'labels' array naming every class"
    if names is not None:
        if names.ndim != 1 or not (names.dtype.kind in "US" or np.issubdtype(names.dtype, np.integer)):
            raise InputError(f"{path}: 'labels' has dtype {names.dtype} and shape {names.shape}; expected a 1-D "
                             "array of class names, e.g. labels=np.array(['cat', 'dog'])")
        n_classes = len(names)
    else:
        n_classes = int(y.max()) + 1
    source = "'labels' names" if names is not None else f"y's largest label, {n_classes - 1}, implies"
    if n_classes > MAX_CLASSES:
        raise InputError(f"{path}: {source} {n_classes} classes; dlforge trains at most {MAX_CLASSES}; {fix}")
    if n_classes > len(y):
        raise InputError(f"{path}: {source} {n_classes} classes but there are only {len(y)} images "
                         f"(each class needs at least one); {fix}")
    if names is not None:
        if y.max() >= n_classes:
            raise InputError(f"{path}: y has label {int(y.max())}, but 'labels' names only {n_classes} classes "
                             f"(labels must be 0..{n_classes - 1}); {fix}")
        return tuple(str(s) for s in names)
    present = np.unique(y)
    if len(present) != n_classes:
        missing = np.setdiff1d(np.arange(n_classes), present)
        raise InputError(f"{path}: y uses labels up to {n_classes - 1} but no image has label "
                         f"{', '.join(map(str, missing[:5]))}{'...' if len(missing) > 5 else ''} "
                         f"({len(missing)} empty classes): a stray label? {fix}")
    return tuple(map(str, range(n_classes)))


def _images(path: Path, key: str, x: np.ndarray) -> np.ndarray:
    if len(x) == 0:
        raise InputError(f"{path}: {key!r} holds no images; a dataset needs images to train and test on")
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise InputError(f"{path}: {key!r} has shape {x.shape}; expected (N, H, W) or (N, C, H, W) images")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    if np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            raise InputError(f"{path}: {key!r} has {int((~np.isfinite(x)).sum())} NaN or infinite pixel values; "
                             "every pixel must be a number in [0, 1]")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise InputError(f"{path}: {key!r} values span [{lo}, {hi}]; scale float images to [0, 1] "
                             "or store them as uint8")
        return x.astype(np.float32)
    raise InputError(f"{path}: {key!r} has dtype {x.dtype}; expected uint8 (0..255) or float in [0, 1]")


def _labels(path: Path, key: str, y: np.ndarray, n: int) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"{path}: {key!r} has dtype {y.dtype}; expected integer class labels")
    if y.ndim != 1 or len(y) != n:
        raise InputError(f"{path}: {key!r} has shape {y.shape}; expected ({n},), one label per image")
    if len(y) and y.min() < 0:
        raise InputError(f"{path}: {key!r} has negative labels; expected 0..num_classes-1")
    return y.astype(np.int64)


DATA_FORMATS.register("npz")(DataFormat(matches=lambda path: path.name.endswith(".npz") and not path.is_dir(),
                                        load=load_npz, description="a .npz with x and y arrays"))
