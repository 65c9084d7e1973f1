"""Evaluation image sets: labelled photographs to measure and attack a model on, in the model's label space.

A pretrained model is audited on images it was not trained on, and usually on a few classes of
many: 20 ImageNet photographs cover 20 of 1000 classes. Such a set has no training split; its
labels are indices into the **model's** classes (the card's ``labels``), not a class list of its
own. Two layouts:

- **labelled files**: a folder of images whose names end in ``_<class index>``
  (``imagenet_00_243.jpg`` is class 243), the convention of Foolbox's and dlforge's sample sets;
- **class folders named after the model's classes**: ``FOLDER/<label>/...`` where ``<label>`` is a
  class name from the card, or an ImageNet WNID (``n01440764``) where the card's labels come from a
  ``synset.txt``; the folders may cover any subset of the classes.

Pixels follow the model's ``image_preprocessing`` (:func:`pixels`): resize the shorter side,
center-crop, channel order; without one, each image is resized to the input's size (bilinear), as
an image folder is. Every image lands in the test split: training refuses the set, and an INT8
build that calibrates on it says on the card that its evaluation is then not held out.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import numpy as np

from dlforge.data.dataset import Dataset
from dlforge.data.image_folder import GRAY_MODES, IMAGE_SUFFIXES
from dlforge.errors import InputError, require

_INDEXED = re.compile(r".*_(\d+)$")
_WNID = re.compile(r"n\d{8}")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_SUFFIXES)


def is_labelled_files(folder: str | Path) -> bool:
    """Whether ``folder`` holds images named ``*_<index>.<ext>`` and no class folders."""
    folder = Path(folder)
    if not folder.is_dir() or any(p.is_dir() and not p.name.startswith(".") for p in folder.iterdir()):
        return False
    files = _images(folder)
    return bool(files) and all(_INDEXED.fullmatch(p.stem) for p in files)


def load_evaluation_images(root: Path, *, labels: tuple[str, ...], input_shape: tuple | None,
                           preprocess: dict | None = None) -> Dataset:
    """The images under ``root`` (layouts: the module docstring) labelled in the model's classes ``labels``."""
    image = require("PIL.Image", "toolkit", "loading images")
    if not labels:
        raise InputError(f"{root} is an evaluation set labelled by class index; the model's card names no classes "
                         "to index into (import it with --labels or --labels-file)")
    files, y = _labelled(root, labels)
    if input_shape is None:
        input_shape = _own_shape(image, root, files)
    if len(input_shape) != 3 or any(not isinstance(d, int) for d in input_shape):
        raise InputError(f"{root}: the model's input shape {input_shape} is not fixed (C, H, W), so the images cannot "
                         "be sized for it; give the model a fixed input shape")
    channels, h, w = input_shape
    x = np.empty((len(files), channels, h, w), np.float32)
    fingerprint = hashlib.sha256()
    for i, path in enumerate(files):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read {path} ({exc.strerror or exc}); check its permissions") from None
        fingerprint.update(f"{path.relative_to(root).as_posix()}\0{len(data)}\0".encode())
        fingerprint.update(data)
        x[i] = pixels(image, path, data, (channels, h, w), preprocess)
    details = {"evaluation_only": True, "evaluation_images": {
        "path": str(root), "images": len(files), "classes_present": int(len(set(y.tolist()))),
        "label_space": len(labels), "preprocess": dict(preprocess or {}) or f"bilinear resize to {h}x{w}",
        "fingerprint": "sha256:" + fingerprint.hexdigest()}}
    empty_x, empty_y = x[:0], y[:0]
    return Dataset(name=str(root), x_train=empty_x, y_train=empty_y, x_val=empty_x, y_val=empty_y, x_test=x,
                   y_test=y, labels=tuple(labels), source=str(root), details=details)


def _labelled(root: Path, labels: tuple[str, ...]) -> tuple[list[Path], np.ndarray]:
    if is_labelled_files(root):
        files = _images(root)
        y = np.array([int(_INDEXED.fullmatch(p.stem).group(1)) for p in files], np.int64)
        bad = [(p, k) for p, k in zip(files, y) if k >= len(labels)]
        if bad:
            raise InputError(f"{bad[0][0]} names class {bad[0][1]}, but the model has {len(labels)} classes "
                             f"(0..{len(labels) - 1}); rename it or evaluate a model of that label space")
        return files, y
    index = {name: k for k, name in enumerate(labels)}
    for k, name in enumerate(labels):  # synset.txt labels ("n01440764 tench, Tinca tinca") match by WNID
        wnid = name.split(" ", 1)[0]
        if _WNID.fullmatch(wnid):
            index.setdefault(wnid, k)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise InputError(f"{root} holds no images named NAME_<class index>.jpg and no class folders; lay it out "
                         "as one of the two (see `dlforge audit --help`)")
    unknown = [p.name for p in folders if p.name not in index]
    if unknown:
        shown = ", ".join(list(index)[:3])
        raise InputError(f"{root}/{unknown[0]}/ names no class of the model ({len(labels)} classes, e.g. {shown}); "
                         "name class folders after the model's labels or WNIDs")
    files, y = [], []
    for folder in folders:
        found = _images(folder)
        if not found:
            raise InputError(f"class folder {folder} has no images; add some or remove the folder")
        files += found
        y += [index[folder.name]] * len(found)
    return files, np.array(y, np.int64)


def _own_shape(image, root: Path, files: list[Path]) -> tuple[int, int, int]:
    """``(C, H, W)`` the images share (C 1 if all are grayscale), for a set read without a model's shape."""
    sizes, gray = set(), True
    for path in files:
        try:
            with image.open(path) as img:
                sizes.add((img.height, img.width))
                gray = gray and img.mode in GRAY_MODES
        except (OSError, ValueError, SyntaxError) as exc:
            raise InputError(f"{path} is not a readable image ({exc}); replace it or delete it") from None
    if len(sizes) != 1:
        raise InputError(f"images in {root} have {len(sizes)} sizes; give --input-shape C,H,W (and --resize / --crop "
                         "for photographs) so they can be read at the model's size")
    return (1 if gray else 3, *sizes.pop())


def check_preprocess(spec: dict, input_shape: tuple) -> dict:
    """A card's ``image_preprocessing``, checked against the input shape it must produce."""
    c, h, w = input_shape
    resize, crop = spec.get("resize"), spec.get("crop")
    if resize is not None and (not isinstance(resize, int) or resize < 1):
        raise InputError(f"--resize expects the shorter side in pixels (a positive integer), got {resize!r}")
    if crop is not None and (list(crop) != [h, w]):
        raise InputError(f"--crop {crop} does not give the model's input size {h}x{w}")
    if resize is not None and resize < min(h, w):
        raise InputError(f"--resize {resize} is smaller than the crop {h}x{w}; resize to at least {max(h, w)}")
    if spec.get("interpolation", "bilinear") not in INTERPOLATIONS:
        raise InputError(f"--interpolation must be one of {', '.join(INTERPOLATIONS)}")
    if spec.get("channel_order", "RGB") not in ("RGB", "BGR"):
        raise InputError("--channel-order must be RGB or BGR")
    if c not in (1, 3):
        raise InputError(f"images convert to 1 or 3 channels, the model takes {c}")
    return {"resize": resize, "crop": [h, w] if resize is not None or crop is not None else None,
            "interpolation": spec.get("interpolation", "bilinear"), "channel_order": spec.get("channel_order", "RGB")}


def pixels(image, path: Path, data: bytes, shape: tuple[int, int, int], preprocess: dict | None) -> np.ndarray:
    """One photograph as float32 ``(C, H, W)`` in [0, 1], preprocessed as the model's card says.

    With ``resize`` the shorter side is scaled to it and the center ``H x W`` is cut out (torchvision's
    ``Resize(resize)`` then ``CenterCrop((H, W))`` on a PIL image, the ImageNet evaluation recipe);
    without it the whole image is resized to ``H x W``."""
    c, h, w = shape
    spec = preprocess or {}
    resample = {"bilinear": image.Resampling.BILINEAR, "bicubic": image.Resampling.BICUBIC,
                "nearest": image.Resampling.NEAREST}[spec.get("interpolation", "bilinear")]
    try:
        with image.open(io.BytesIO(data)) as img:
            img = img.convert("L" if c == 1 else "RGB")
            if spec.get("resize"):
                short = spec["resize"]
                iw, ih = img.size
                size = (short, int(short * ih / iw)) if iw <= ih else (int(short * iw / ih), short)
                img = img.resize(size, resample)
            if img.size != (w, h):
                if spec.get("resize") or spec.get("crop"):
                    iw, ih = img.size
                    if iw < w or ih < h:
                        raise InputError(f"{path} is {iw}x{ih} after resizing, smaller than the crop {w}x{h}")
                    left, top = int(round((iw - w) / 2.0)), int(round((ih - h) / 2.0))
                    img = img.crop((left, top, left + w, top + h))
                else:
                    img = img.resize((w, h), resample)
            arr = np.asarray(img, dtype=np.uint8).astype(np.float32) / 255.0
    except InputError:
        raise
    except (OSError, ValueError, SyntaxError, image.DecompressionBombError) as exc:
        raise InputError(f"{path} is not a readable image ({exc}); replace it or delete it") from None
    arr = arr[None] if c == 1 else arr.transpose(2, 0, 1)
    if spec.get("channel_order") == "BGR":
        arr = arr[::-1]
    return np.ascontiguousarray(arr)
