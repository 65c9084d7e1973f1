"""MNIST and Fashion-MNIST from IDX files (``.gz`` or raw), with strict validation.

The IDX format (LeCun et al.): a big-endian header ``0x00 0x00 <dtype> <ndim>`` followed by
``ndim`` uint32 dimensions, then the data. Images use magic 2051 (3 dims), labels 2049 (1 dim).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from dlforge.data.dataset import DATASETS, IDX_DATASETS, Dataset, split_train_val
from dlforge.data.download import checked_download
from dlforge.errors import InputError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

SOURCES = {
    "mnist": {
        "url": "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "md5": {
            "train_images": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train_labels": "d53e105ee54ea40749a09fcbcd1e9432",
            "test_images": "9fb629c4189551a2d022fa330f9573f3",
            "test_labels": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        "labels": tuple(str(i) for i in range(10)),
    },
    "fashion-mnist": {
        "url": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "md5": {
            "train_images": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train_labels": "25c81989df183df01b3e8a0aad5dffbe",
            "test_images": "bef4ecab320f06d8554ea6380940ec79",
            "test_labels": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        "labels": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    },
}


def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """Parse one IDX file (gzip-compressed or raw) into a uint8 array, validating every size."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path} is not a readable IDX file ({exc}); replace it with an intact copy") from exc
    if len(raw) < 8:
        raise InputError(f"{path} is truncated ({len(raw)} bytes, smaller than an IDX header); replace it")
    magic, = struct.unpack(">I", raw[:4])
    if magic != expected_magic:
        kind = "images" if expected_magic == IMAGES_MAGIC else "labels"
        raise InputError(f"{path} has IDX magic {magic}, expected {expected_magic} ({kind}); "
                         "is it the right file?")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InputError(f"{path} is truncated inside its header; replace it")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims))
    found = len(raw) - header
    if found != expected:
        what = "truncated" if found < expected else "longer than its header says"
        raise InputError(f"{path} is {what}: header says {'x'.join(map(str, dims))} = {expected} bytes "
                         f"of data, the file has {found}; replace it with an intact copy")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def find_idx_file(data_dir: Path, stem: str) -> Path | None:
    """The file for ``stem`` under its usual spellings (``train-images-idx3-ubyte[.gz]`` or
    ``train-images.idx3-ubyte``)."""
    dotted = stem.replace("-idx", ".idx")
    for name in (f"{stem}.gz", stem, f"{dotted}.gz", dotted):
        if (data_dir / name).is_file():
            return data_dir / name
    return None


def load_idx_dataset(name: str, data_dir: Path) -> Dataset:
    """Load MNIST or Fashion-MNIST from the four IDX files in ``data_dir``."""
    hint = (f"put the four IDX files ({', '.join(f + '.gz' for f in FILES.values())}) there, "
            f"pass --data-dir, or run `dlforge download {name} --data-dir {data_dir}`")
    if not data_dir.is_dir():
        raise InputError(f"data directory {data_dir} for {name} does not exist; {hint}")
    paths = {}
    for key, stem in FILES.items():
        path = find_idx_file(data_dir, stem)
        if path is None:
            raise InputError(f"{data_dir} has no {stem}(.gz) for {name}; {hint}")
        paths[key] = path
    arrays = {key: read_idx(p, IMAGES_MAGIC if key.endswith("images") else LABELS_MAGIC)
              for key, p in paths.items()}
    for split in ("train", "test"):
        n_img, n_lab = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_img != n_lab:
            raise InputError(f"{data_dir}: {split} has {n_img} images but {n_lab} labels; "
                             "the files do not belong together")
    labels = SOURCES[name]["labels"]
    for key in ("train_labels", "test_labels"):
        if len(arrays[key]) and arrays[key].max() >= len(labels):
            raise InputError(f"{paths[key]} has label {arrays[key].max()}, beyond the {len(labels)} "
                             f"classes of {name}")

    def images(a: np.ndarray) -> np.ndarray:
        return (a.astype(np.float32) / 255.0)[:, None, :, :]

    x_train, y_train, x_val, y_val = split_train_val(
        images(arrays["train_images"]), arrays["train_labels"].astype(np.int64))
    return Dataset(
        name=name,
        x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val,
        x_test=images(arrays["test_images"]), y_test=arrays["test_labels"].astype(np.int64),
        labels=labels,
        source=str(data_dir),
    )


def download_idx(name: str, data_dir: Path, base_url: str | None = None) -> list[Path]:
    """Download the four IDX files of ``name`` into ``data_dir``, checking each file's MD5.

    Each file is written to a temporary name and renamed only after its checksum matches, so an
    interrupted or tampered download never leaves a file that loads.
    """
    if name not in SOURCES:
        raise InputError(f"no download for {name!r}; expected one of {', '.join(SOURCES)}")
    source = SOURCES[name]
    base_url = base_url or source["url"]
    data_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for key, stem in FILES.items():
        target = data_dir / f"{stem}.gz"
        if target.is_file() and _md5(target) == source["md5"][key]:
            written.append(target)
            continue
        with checked_download(base_url + target.name, data_dir, algorithm="md5", expected=source["md5"][key],
                              by_hand=f"put {target.name} in {data_dir} by hand") as tmp:
            os.replace(tmp, target)
        written.append(target)
    return written


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


for _name in IDX_DATASETS:
    DATASETS.register(_name)(lambda data_dir, name=_name: load_idx_dataset(name, data_dir))
