"""CIFAR-10 from its official "python version" batches (Krizhevsky 2009), read without running pickled code.

``cifar-10-python.tar.gz`` unpacks to ``cifar-10-batches-py/`` holding ``data_batch_1`` ..
``data_batch_5`` (50,000 training images), ``test_batch`` (10,000) and ``batches.meta`` (the class
names). Each batch is a Python pickle of a dict: ``data``, a uint8 array of shape (10000, 3072) (the
red, green and blue 32x32 planes of each image, row-major) and ``labels``, a list of ints 0..9.

A pickle can call any importable function, so the batches are read with an unpickler that builds
only plain containers and numpy arrays (numpy's own array-reconstruction functions, nothing else):
a batch that asks for anything more is refused, not run. ``dlforge download cifar10`` fetches the
archive and checks the MD5 its author publishes before unpacking it.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from dlforge.data.dataset import DATASETS, Dataset, split_train_val
from dlforge.data.download import checked_download
from dlforge.errors import InputError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# What a batch's pickle may ask for: numpy's array reconstruction, under numpy 1's and numpy 2's module names.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"the pickle asks for {module}.{name}")
        return super().find_class(module, name)


def _read_batch(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            batch = _ArraysOnly(f, encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise InputError(f"{path} is not a CIFAR-10 batch ({exc}); dlforge reads only arrays from it and runs "
                         "no code: replace it with the file from the official archive") from None
    except (OSError, EOFError, ValueError, TypeError, IndexError, LookupError, AttributeError) as exc:
        raise InputError(f"{path} is not a readable CIFAR-10 batch ({type(exc).__name__}: {exc}); replace it with "
                         "the file from the official archive") from None
    if not isinstance(batch, dict) or "data" not in batch or "labels" not in batch:
        raise InputError(f"{path} is not a CIFAR-10 batch (a dict with 'data' and 'labels'); replace it")
    return batch


def _arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _read_batch(path)
    data = batch["data"]
    try:
        labels = np.asarray(batch["labels"])
    except (ValueError, TypeError):
        raise InputError(f"{path}: 'labels' is not a flat list of integers; replace the file") from None
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        shape = getattr(data, "shape", None)
        raise InputError(f"{path}: 'data' is {type(data).__name__} {shape}, not uint8 rows of 3072 values "
                         "(3x32x32); replace the file")
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu" or (len(labels) and
                                                                        not 0 <= labels.min() <= labels.max() <= 9):
        raise InputError(f"{path}: 'labels' are not {len(data)} integers 0..9; replace the file")
    return data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0, labels.astype(np.int64)


def find_folder(data_dir: Path) -> Path:
    """The folder holding the batches: ``data_dir`` itself or its ``cifar-10-batches-py/``."""
    for folder in (data_dir / FOLDER, data_dir):
        if (folder / TEST_BATCH).is_file():
            return folder
    raise InputError(f"{data_dir} has no CIFAR-10 python batches ({FOLDER}/{TEST_BATCH} ...); run `dlforge download "
                     f"cifar10 --data-dir {data_dir}`, or unpack cifar-10-python.tar.gz there and pass --data-dir")


@DATASETS.register("cifar10")
def load_cifar10(data_dir: Path) -> Dataset:
    """CIFAR-10 from the python batches under ``data_dir``: 45,000 train / 5,000 validation (seeded) / 10,000 test."""
    folder = find_folder(data_dir)
    missing = [b for b in TRAIN_BATCHES if not (folder / b).is_file()]
    if missing:
        raise InputError(f"{folder} lacks {', '.join(missing)}; unpack the whole cifar-10-python.tar.gz there")
    parts = [_arrays(folder / b) for b in TRAIN_BATCHES]
    x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    x_test, y_test = _arrays(folder / TEST_BATCH)
    x_train, y_train, x_val, y_val = split_train_val(x, y)
    return Dataset(name="cifar10", x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test,
                   y_test=y_test, labels=LABELS, source=str(folder))


def download_cifar10(data_dir: Path, url: str = URL) -> list[Path]:
    """Download the archive into ``data_dir``, check its MD5, unpack the batches; returns the batch paths.

    The archive is unpacked only after its checksum matches, so an interrupted or tampered download leaves
    nothing that loads."""
    with checked_download(url, data_dir, algorithm="md5", expected=ARCHIVE_MD5,
                          by_hand=f"put cifar-10-python.tar.gz's contents in {data_dir} by hand") as archive:
        return unpack(archive, data_dir)


def unpack(archive: Path, data_dir: Path) -> list[Path]:
    """The batches of a checked archive into ``data_dir/cifar-10-batches-py`` (regular files of that folder only)."""
    wanted = {f"{FOLDER}/{name}" for name in (*TRAIN_BATCHES, TEST_BATCH, "batches.meta")}
    out = data_dir / FOLDER
    out.mkdir(exist_ok=True)
    written = []
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            if member.name in wanted and member.isfile():
                data = tar.extractfile(member).read()
                path = out / Path(member.name).name
                path.write_bytes(data)
                written.append(path)
    return sorted(written)


def write_batch(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    """Write images ``(N, 3, 32, 32)`` in [0, 1] and labels as one batch in the official format (for tests and
    for users who keep a subset)."""
    data = np.round(np.asarray(x) * 255).astype(np.uint8).reshape(len(x), 3072)
    buf = io.BytesIO()
    pickle.dump({"batch_label": "dlforge", "labels": [int(v) for v in y], "data": data,
                 "filenames": [f"{i}.png" for i in range(len(y))]}, buf, protocol=2)
    path.write_bytes(buf.getvalue())
