"""A user's own images from a folder: one sub-folder per class, PNG / JPEG / BMP / GIF / WebP files.

Layouts (class names are the sorted sub-folder names; the labels are their indices)::

    FOLDER/cat/1.png  FOLDER/dog/2.jpg ...                  # a seeded 20% of each class is the test split
    FOLDER/train/cat/1.png  FOLDER/test/cat/9.png ...       # train/ and test/ hold the same class folders

The validation split is a seeded 10% of each class's training images. Both splits are stratified
(every class keeps its share) and depend only on ``split_seed`` and the file names, so the same
folder and seed give the same splits on any machine.

Files: hidden files (``.DS_Store``, ``._x.png``) and ``Thumbs.db`` / ``desktop.ini`` are ignored, and so
are non-image files beside the class folders (a README). Inside a class folder any other file, or
a sub-folder, is refused: a stray ``.tif`` or a nested folder is more likely a mistake than
something to skip silently.

Pixels: 8-bit images scale as uint8 / 255, 16-bit grayscale PNGs as uint16 / 65535. With an
``input_shape`` ``(C, H, W)`` every image is converted to C channels (Pillow's ``"L"`` or ``"RGB"``)
and resized to HxW with Pillow's bilinear filter: the same as
``Image.open(f).convert("L").resize((W, H), Image.BILINEAR)`` in an application. Without it the
images must share one size, and the channels are 1 when every image is grayscale, else 3. EXIF
orientation is not applied (as with a plain ``Image.open``). ``train/`` and ``test/`` match in any case
(``Train/``).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlforge.data.dataset import MAX_CLASSES, VAL_FRACTION, Dataset
from dlforge.errors import InputError, require

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
IGNORED_NAMES = ("Thumbs.db", "desktop.ini")  # operating-system litter, like the hidden files
TEST_FRACTION = 0.2
GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")
SIXTEEN_BIT_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
SPLITS = ("train", "test")


@dataclass(frozen=True)
class ImageFile:
    path: Path
    relative: str  # posix path below the folder: what the fingerprint and the split order use
    label: int
    split: str | None  # "train" / "test" in the train/test layout, else None


def load_image_folder(root: Path, *, input_shape: tuple | None = None, split_seed: int | None = None) -> Dataset:
    """Load the image folder ``root`` (layouts and pixel rules: the module docstring).

    Args:
        root: the folder.
        input_shape: ``(C, H, W)`` to convert every image to; C or H, W may be None to keep the
            images' own (then those must agree). None keeps both.
        split_seed: seed of the test / validation splits (default 0).

    Raises:
        InputError: the folder's layout, a file, or the image sizes are unusable (the message names
            the file or folder and the fix).
    """
    image = require("PIL.Image", "toolkit", "loading an image folder")
    root = root.resolve()
    split_seed = 0 if split_seed is None else split_seed
    if not isinstance(split_seed, int) or split_seed < 0:
        raise InputError(f"split_seed must be a non-negative integer, got {split_seed!r}")
    channels, size = _requested(input_shape)
    classes, files = _scan(root)
    headers = [_header(image, f.path) for f in files]
    if channels is None:
        channels = 1 if all(mode in GRAY_MODES for _, mode in headers) else 3
    if size is None:
        size = _common_size(root, files, headers)
    x = np.empty((len(files), channels, *size), dtype=np.float32)
    fingerprint = hashlib.sha256()
    for i, f in enumerate(files):
        data = _read_bytes(f.path)
        fingerprint.update(f"{f.relative}\0{len(data)}\0".encode())
        fingerprint.update(data)
        x[i] = _pixels(image, f.path, data, channels, size)
    y = np.array([f.label for f in files], dtype=np.int64)
    in_test = np.array([f.split == "test" for f in files])
    train, val, test = _split(files, y, in_test, len(classes), split_seed)
    requested = None if input_shape is None else list(input_shape)
    details = {
        "image_folder": {
            "path": str(root),
            "layout": "train/ and test/ folders" if files[0].split else "class folders",
            "split_seed": split_seed,
            "split": (f"stratified per class: test = test/, validation {VAL_FRACTION:.0%} of train/"
                      if files[0].split else
                      f"stratified per class: test {TEST_FRACTION:.0%}, validation {VAL_FRACTION:.0%} of the rest"),
            "requested_input_shape": requested,
            "channels": channels,
            "resize": (f"bilinear (Pillow) to {size[0]}x{size[1]}" if requested and None not in requested[1:]
                       else "none"),
            "files_per_class": {name: int((y == k).sum()) for k, name in enumerate(classes)},
            "fingerprint": "sha256:" + fingerprint.hexdigest(),
        }
    }
    return Dataset(name=str(root), x_train=x[train], y_train=y[train], x_val=x[val], y_val=y[val],
                   x_test=x[test], y_test=y[test], labels=tuple(classes), source=str(root), details=details)


def _requested(input_shape) -> tuple[int | None, tuple[int, int] | None]:
    """``(channels, (H, W))`` from ``input_shape``; None where the images decide."""
    if input_shape is None:
        return None, None
    if len(input_shape) != 3:
        raise InputError(f"input_shape {input_shape!r} is not (C, H, W); e.g. (1, 28, 28) or (3, 32, 32)")
    c, h, w = input_shape
    if c not in (None, 1, 3):
        raise InputError(f"image folders load as 1 (grayscale) or 3 (RGB) channels, not {c}; pass --channels 1 or 3")
    if (h is None) != (w is None) or any(s is not None and (not isinstance(s, int) or s < 1) for s in (h, w)):
        raise InputError(f"image size {h}x{w} is not two positive integers; pass --image-size 28 or 28x32 (HxW)")
    return c, (None if h is None else (int(h), int(w)))


# -- finding the files ---------------------------------------------------------------------------
def _ignored(path: Path) -> bool:
    return path.name.startswith(".") or path.name in IGNORED_NAMES


def _scan(root: Path) -> tuple[list[str], list[ImageFile]]:
    """The class names and every image file, in a fixed order (split, class, file name)."""
    if not root.is_dir():
        raise InputError(f"image folder {root} does not exist; pass a folder with one sub-folder per class")
    folders = _subfolders(root)
    split_dirs = {name.lower(): root / name for name in folders if name.lower() in SPLITS}  # Train/ too
    if len(split_dirs) == len(SPLITS):
        extra = [name for name in folders if name.lower() not in SPLITS]
        if extra:
            raise InputError(f"{root} has train/ and test/ folders and also {extra[0]}/; move every class folder "
                             "into train/ and test/ (validation is carved from train/), or use class folders only")
        per_split = {s: _classes(split_dirs[s]) for s in SPLITS}
        if per_split["train"] != per_split["test"]:
            differ = sorted(set(per_split["train"]) ^ set(per_split["test"]))
            raise InputError(f"{root}: train/ and test/ hold different class folders ({', '.join(differ[:5])} "
                             "only in one); give both the same class sub-folders")
        classes = per_split["train"]
        files = [f for s in SPLITS for f in _class_files(root, split_dirs[s], classes, s)]
    else:
        classes = _classes(root)
        files = _class_files(root, root, classes, None)
    return classes, files


def _subfolders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not _ignored(p))


def _classes(folder: Path) -> list[str]:
    """The class folders of ``folder``; images lying beside them are a layout mistake."""
    classes = _subfolders(folder)
    loose = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if loose:
        raise InputError(f"{folder} holds images directly ({loose[0]}, ...); put each class's images in its own "
                         f"sub-folder, e.g. {folder}/cat/{loose[0]}")
    if not 2 <= len(classes) <= MAX_CLASSES:
        found = f" ({', '.join(classes)})" if classes else ""
        raise InputError(f"{folder} has {len(classes)} class folder(s){found}; an image folder needs one sub-folder "
                         f"per class, 2 to {MAX_CLASSES} of them, e.g. {folder}/cat/ and {folder}/dog/")
    return classes


def _class_files(root: Path, folder: Path, classes: list[str], split: str | None) -> list[ImageFile]:
    files = []
    for label, name in enumerate(classes):
        found = []
        for path in sorted((folder / name).iterdir()):
            if _ignored(path):
                continue
            if path.is_dir():
                raise InputError(f"{path} is a folder inside class folder {folder / name}; class folders hold "
                                 "images only: move its images up or remove it")
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise InputError(f"{path} is not an image file ({', '.join(IMAGE_SUFFIXES)}); move it out of "
                                 "the class folder or delete it")
            found.append(ImageFile(path, path.relative_to(root).as_posix(), label, split))
        if not found:
            raise InputError(f"class folder {folder / name} has no images; add some or remove the folder")
        files += found
    return files


# -- reading the images --------------------------------------------------------------------------
def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path} ({exc.strerror or exc}); check its permissions") from exc


def _header(image, path: Path) -> tuple[tuple[int, int], str]:
    """``((H, W), mode)`` of an image file, from its header."""
    try:
        with image.open(path) as img:
            return (img.height, img.width), img.mode
    except (OSError, ValueError, SyntaxError, image.DecompressionBombError) as exc:
        raise InputError(f"{path} is not a readable image ({exc}); replace it or delete it") from exc


def _common_size(root: Path, files: list[ImageFile], headers: list) -> tuple[int, int]:
    sizes: dict[tuple[int, int], str] = {}
    for f, (size, _) in zip(files, headers):
        sizes.setdefault(size, f.relative)
    if len(sizes) > 1:
        shown = " and ".join(f"{h}x{w} ({example})" for (h, w), example in list(sizes.items())[:3])
        raise InputError(f"images in {root} have sizes {shown}{' ...' if len(sizes) > 3 else ''}; "
                         "pass --image-size HxW (input_shape in Python) to resize them all to one size")
    return next(iter(sizes))


def _pixels(image, path: Path, data: bytes, channels: int, size: tuple[int, int]) -> np.ndarray:
    """One image as float32 ``(channels, H, W)`` in [0, 1], converted and resized (bilinear)."""
    h, w = size
    try:
        with image.open(io.BytesIO(data)) as img:
            img.load()
            if img.mode in SIXTEEN_BIT_MODES:
                return _sixteen_bit(image, path, img, channels, size)
            img = img.convert("L" if channels == 1 else "RGB")
            if img.size != (w, h):
                img = img.resize((w, h), image.Resampling.BILINEAR)
            pixels = np.asarray(img, dtype=np.uint8).astype(np.float32) / 255.0
    except (OSError, ValueError, SyntaxError, image.DecompressionBombError) as exc:
        raise InputError(f"{path} is not a readable image ({exc}); replace it or delete it") from exc
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def _sixteen_bit(image, path: Path, img, channels: int, size: tuple[int, int]) -> np.ndarray:
    """A 16-bit grayscale image scaled by 65535, resized in float (Pillow's 8-bit modes would clip it)."""
    plane = np.asarray(img).astype(np.float32)
    if plane.min() < 0 or plane.max() > 65535:
        raise InputError(f"{path} has pixel values beyond 16 bits ({plane.min():g} to {plane.max():g}); "
                         "save it as an 8- or 16-bit image")
    plane /= 65535.0
    h, w = size
    if plane.shape != (h, w):
        plane = np.asarray(image.fromarray(plane).resize((w, h), image.Resampling.BILINEAR), dtype=np.float32)
    return np.repeat(plane[None], channels, axis=0)


# -- splitting -----------------------------------------------------------------------------------
def _split(files: list[ImageFile], y: np.ndarray, in_test: np.ndarray, n_classes: int,
           seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified, seeded index arrays of the train / validation / test splits, each in a seeded order.

    Each class draws from its own generator (seed, class index), so adding a class leaves the others'
    splits alone; the final shuffle mixes the classes (a prefix of a split is not one class).
    """
    has_test_folder = bool(in_test.any())
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for k in range(n_classes):
        pool = np.flatnonzero((y == k) & ~in_test)
        needed = 2 if has_test_folder else 3
        if len(pool) < needed:
            splits = "train and validation" if has_test_folder else "train, validation and test"
            raise InputError(f"class folder {files[pool[0]].path.parent} has {len(pool)} image(s); each class needs "
                             f"at least {needed} ({splits}): add images or remove the folder")
        pool = np.random.default_rng([seed, k]).permutation(pool)
        if has_test_folder:
            parts["test"].append(np.flatnonzero((y == k) & in_test))
        else:
            n_test = max(1, int(round(len(pool) * TEST_FRACTION)))
            parts["test"].append(pool[:n_test])
            pool = pool[n_test:]
        n_val = max(1, int(round(len(pool) * VAL_FRACTION)))
        parts["val"].append(pool[:n_val])
        parts["train"].append(pool[n_val:])
    rng = np.random.default_rng([seed, n_classes])
    train, val, test = (rng.permutation(np.concatenate(parts[s])) for s in ("train", "val", "test"))
    return train, val, test
