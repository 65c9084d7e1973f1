"""Image folders as datasets: real handwritten digits written as PNG files, read back by dlforge."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from dlforge.artifact import dataset_spec, open_artifact
from dlforge.cli import cli
from dlforge.data import load_dataset, load_training_data
from dlforge.errors import InputError

PER_CLASS = 12  # 10 classes: 120 images, test 2-3 per class


@pytest.fixture(scope="module")
def digits():
    """``(images uint8 (N, 8, 8), labels)``: scikit-learn's digits scaled to 0..255, PER_CLASS of each."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    keep = np.concatenate([np.flatnonzero(bunch.target == k)[:PER_CLASS] for k in range(10)])
    return np.clip(bunch.images[keep] * 16, 0, 255).astype(np.uint8), bunch.target[keep]


def rgb_of(image: np.ndarray) -> np.ndarray:
    """A colour image whose channels differ: the digit in red, its negative in green, half in blue."""
    return np.stack([image, 255 - image, image // 2], axis=-1)


def write_folder(root, images, labels, *, rgb=False, suffix=".png"):
    for i, (image, label) in enumerate(zip(images, labels)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb_of(image) if rgb else image).save(root / str(label) / f"{i:03d}{suffix}")
    return root


def all_splits(ds):
    return (np.concatenate([ds.x_train, ds.x_val, ds.x_test]), np.concatenate([ds.y_train, ds.y_val, ds.y_test]))


def assert_same_images(ds, images, labels, to_pixels=lambda image: image[None]):
    """Every loaded image is exactly one written image / 255 with its label, and every written one is there."""
    x, y = all_splits(ds)
    expected = sorted((int(label), to_pixels(image).astype(np.float32).tobytes())
                      for image, label in zip(images, labels))
    found = sorted((int(label), (image * 255.0).round().astype(np.float32).tobytes()) for image, label in zip(x, y))
    assert found == expected
    np.testing.assert_array_equal(x, np.round(x * 255.0).astype(np.float32) / 255.0)  # exactly uint8 / 255


def test_a_grayscale_folder_loads_its_pixels_and_class_names(tmp_path, digits):
    images, labels = digits
    ds = load_dataset(str(write_folder(tmp_path / "digits", images, labels)))
    assert ds.input_shape == (1, 8, 8) and ds.labels == tuple(str(k) for k in range(10))
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert_same_images(ds, images, labels)
    folder = ds.describe()["image_folder"]
    assert folder["path"] == str((tmp_path / "digits").resolve()) and folder["channels"] == 1
    assert folder["files_per_class"] == {str(k): PER_CLASS for k in range(10)} and folder["resize"] == "none"


def test_an_rgb_folder_keeps_its_three_channels(tmp_path, digits):
    images, labels = digits
    ds = load_dataset(str(write_folder(tmp_path / "rgb", images, labels, rgb=True)))
    assert ds.input_shape == (3, 8, 8)
    assert_same_images(ds, images, labels, to_pixels=lambda image: rgb_of(image).transpose(2, 0, 1))


def test_grayscale_beside_colour_images_becomes_three_equal_channels(tmp_path, digits):
    images, labels = digits
    root = write_folder(tmp_path / "mixed", images, labels)
    Image.fromarray(rgb_of(images[0])).save(root / str(labels[0]) / "colour.png")
    ds = load_dataset(str(root))
    assert ds.input_shape == (3, 8, 8)
    x, _ = all_splits(ds)
    gray = [image for image in x if (image[0] == image[1]).all() and (image[1] == image[2]).all()]
    assert len(gray) == len(images)


def test_input_shape_resizes_bilinearly_and_converts_channels_as_pillow_does(tmp_path, digits):
    images, labels = digits
    root = write_folder(tmp_path / "rgb", images[:30], labels[:30], rgb=True)  # classes 0, 1 and 2
    ds = load_dataset(str(root), input_shape=(1, 28, 28))
    assert ds.input_shape == (1, 28, 28) and ds.describe()["image_folder"]["resize"] == "bilinear (Pillow) to 28x28"
    x, _ = all_splits(ds)
    assert x.min() >= 0.0 and x.max() <= 1.0
    first = Image.open(root / "0" / "000.png").convert("L").resize((28, 28), Image.Resampling.BILINEAR)
    expected = np.asarray(first, dtype=np.uint8).astype(np.float32)[None] / 255.0
    assert any(np.array_equal(image, expected) for image in x)
    assert load_dataset(str(root), input_shape=(None, 16, 12)).input_shape == (3, 16, 12)


def test_a_16_bit_png_scales_by_65535(tmp_path):
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(3):
            Image.fromarray(np.full((4, 4), 1000 * (i + 1), np.uint16)).save(tmp_path / label / f"{i}.png")
    x, _ = all_splits(load_dataset(str(tmp_path)))
    assert sorted(np.unique(x).tolist()) == pytest.approx([1000 / 65535, 2000 / 65535, 3000 / 65535])


def test_the_split_is_stratified_seeded_and_recorded(tmp_path, digits):
    images, labels = digits
    root = str(write_folder(tmp_path / "digits", images, labels))
    a, b, other = load_dataset(root), load_dataset(root, split_seed=0), load_dataset(root, split_seed=7)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(a.split(split)[0], b.split(split)[0])
    assert set(map(bytes, a.x_test)) != set(map(bytes, other.x_test))  # other images, not just another order
    # stratified: every class gives round(20%) of its 12 images to test, then 1 of the other 10 to validation
    assert np.bincount(a.y_test).tolist() == [2] * 10 and np.bincount(a.y_val).tolist() == [1] * 10
    assert not (np.diff(a.y_test) == 0).all()  # the classes are mixed, not in blocks
    assert other.describe()["image_folder"]["split_seed"] == 7
    assert a.describe()["image_folder"]["fingerprint"] == b.describe()["image_folder"]["fingerprint"]


@pytest.mark.parametrize("train, test", [("train", "test"), ("Train", "Test")])
def test_train_and_test_folders_are_the_splits(tmp_path, digits, train, test):
    images, labels = digits
    is_test = np.arange(len(labels)) % PER_CLASS < 3
    write_folder(tmp_path / train, images[~is_test], labels[~is_test])
    write_folder(tmp_path / test, images[is_test], labels[is_test])
    ds = load_dataset(str(tmp_path))
    assert ds.describe()["image_folder"]["layout"] == "train/ and test/ folders"
    assert sorted(map(bytes, (ds.x_test * 255).round().astype(np.uint8))) == \
        sorted(map(bytes, images[is_test][:, None]))
    assert len(ds.y_train) + len(ds.y_val) == (~is_test).sum() and np.bincount(ds.y_val).tolist() == [1] * 10


def test_hidden_files_and_files_beside_the_class_folders_are_ignored(tmp_path, digits):
    images, labels = digits
    root = write_folder(tmp_path / "d", images[:24], labels[:24])
    (root / "0" / ".DS_Store").write_bytes(b"\0\1junk")
    (root / "README.md").write_text("my digits")
    (root / ".cache").mkdir()
    assert load_dataset(str(root)).num_classes == 2


def _small(root, digits):
    images, labels = digits
    return write_folder(root, images[:24], labels[:24])  # classes 0 and 1, 12 images each


@pytest.mark.parametrize("spoil, message", [
    (lambda r: (r / "1" / "013.png").write_bytes(b"not an image"), r"1/013.png is not a readable image"),
    (lambda r: (r / "1" / "013.png").write_bytes((r / "1" / "013.png").read_bytes()[:60]),
     r"1/013.png is not a readable image"),
    (lambda r: Image.fromarray(np.zeros((12, 10), np.uint8)).save(r / "1" / "big.png"),
     r"have sizes 8x8 \(0/000.png\) and 12x10 \(1/big.png\); pass --image-size"),
    (lambda r: (r / "2").mkdir(), r"class folder \S+/2 has no images"),
    (lambda r: shutil.rmtree(r / "1"), r"has 1 class folder\(s\) \(0\); an image folder needs one sub-folder"),
    (lambda r: (r / "1" / "notes.txt").write_text("x"), r"1/notes.txt is not an image file"),
    (lambda r: (r / "1" / "more").mkdir(), r"1/more is a folder inside class folder"),
    (lambda r: shutil.copy(r / "0" / "000.png", r / "loose.png"), r"holds images directly \(loose.png"),
    (lambda r: [p.unlink() for p in sorted((r / "1").iterdir())[2:]], r"class folder \S+/1 has 2 image\(s\); each "
                                                                        "class needs at least 3"),
])
def test_a_bad_folder_is_refused_naming_the_file_and_the_fix(tmp_path, digits, spoil, message):
    root = _small(tmp_path / "d", digits)
    spoil(root)
    with pytest.raises(InputError, match=message) as info:
        load_dataset(str(root))
    assert "\n" not in str(info.value)


def test_train_and_test_folders_must_hold_the_same_classes(tmp_path, digits):
    _small(tmp_path / "train", digits)
    _small(tmp_path / "test", digits)
    shutil.copytree(tmp_path / "train" / "1", tmp_path / "train" / "7")
    with pytest.raises(InputError, match=r"train/ and test/ hold different class folders \(7 only in one\)"):
        load_dataset(str(tmp_path))


def test_train_from_the_cli_then_reload_the_same_test_split(tmp_path, digits):
    images, labels = digits
    root = write_folder(tmp_path / "digits", images, labels)
    out = tmp_path / "ck"
    result = CliRunner().invoke(cli, ["train", "mlp", "--data", str(root), "--image-size", "16", "--epochs", "1",
                                      "--set", "hidden=[32]", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    card = json.loads(result.stdout)
    assert card["params"]["image_size"] == [16, 16] and card["model"]["inputs"][0]["shape"] == ["batch", 1, 16, 16]
    folder = card["dataset"]["image_folder"]
    assert folder["path"] == str(root.resolve()) and folder["requested_input_shape"] == [None, 16, 16]
    assert folder["split_seed"] == 0 and folder["fingerprint"].startswith("sha256:")

    ckpt = open_artifact(out)
    assert dataset_spec(ckpt).input_shape == (1, 16, 16)
    reloaded, trained = load_training_data(ckpt), load_dataset(str(root), input_shape=(None, 16, 16))
    np.testing.assert_array_equal(reloaded.x_test, trained.x_test)
    np.testing.assert_array_equal(reloaded.y_test, trained.y_test)

    shutil.copy(root / "3" / f"{3 * PER_CLASS:03d}.png", root / "3" / "extra.png")
    with pytest.raises(InputError, match=r"changed since the model was trained on it .* restore the folder or retrain"):
        load_training_data(ckpt)
