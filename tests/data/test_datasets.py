import gzip
import shutil

import numpy as np
import pytest

from dlforge.data import load_dataset
from dlforge.data.idx import read_idx
from dlforge.errors import InputError
from tests.helpers import shared_path


def test_digits_is_scaled_and_split_reproducibly():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    assert len(a.y_train) + len(a.y_val) + len(a.y_test) == 1797
    for x in (a.x_train, a.x_val, a.x_test):
        assert x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0
    np.testing.assert_array_equal(a.y_val, b.y_val)


def test_mnist_from_shared_idx_files(mnist_dir):
    ds = load_dataset("mnist", mnist_dir)
    assert ds.input_shape == (1, 28, 28)
    assert len(ds.y_train) == 54000 and len(ds.y_val) == 6000 and len(ds.y_test) == 10000
    # class counts of the MNIST test set, as published
    assert np.bincount(ds.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert ds.x_test.max() == 1.0 and ds.x_test.min() == 0.0


def test_fashion_mnist_has_its_class_names():
    ds = load_dataset("fashion-mnist", shared_path("fashion-mnist"))
    assert ds.labels[9] == "Ankle boot"
    assert np.bincount(ds.y_test).tolist() == [1000] * 10


def test_raw_idx_reads_like_gzip(tmp_path, mnist_dir):
    raw = tmp_path / "t10k-labels-idx1-ubyte"
    raw.write_bytes(gzip.decompress((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    np.testing.assert_array_equal(read_idx(raw, 2049), read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz", 2049))


def _copy_mnist(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        shutil.copy(f, dst / f.name)
    return dst


def test_truncated_idx_is_a_one_line_error(tmp_path, mnist_dir):
    d = _copy_mnist(mnist_dir, tmp_path / "mnist")
    raw = gzip.decompress((d / "t10k-images-idx3-ubyte.gz").read_bytes())
    (d / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(InputError, match=r"truncated: header says 10000x28x28 = 7840000 bytes"):
        load_dataset("mnist", d)


def test_swapped_idx_files_fail_on_magic(tmp_path, mnist_dir):
    d = _copy_mnist(mnist_dir, tmp_path / "mnist")
    shutil.copy(d / "t10k-labels-idx1-ubyte.gz", d / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(InputError, match="magic 2049, expected 2051"):
        load_dataset("mnist", d)


def test_missing_data_dir_says_where_to_put_files(tmp_path):
    with pytest.raises(InputError, match="does not exist; put the four IDX files"):
        load_dataset("mnist", tmp_path / "nowhere")


def test_npz_user_dataset(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    np.savez(path, x=rng.integers(0, 256, (200, 12, 12), dtype=np.uint8), y=rng.integers(0, 3, 200))
    ds = load_dataset(str(path))
    assert ds.input_shape == (1, 12, 12) and ds.num_classes == 3
    assert len(ds.y_test) == 40 and ds.x_train.max() <= 1.0


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((4, 8, 8), np.uint8)}, "has no 'y' array"),
    ({"x": np.zeros((4, 8, 8), np.float32) + 3, "y": np.zeros(4, np.int64)}, r"scale float images to \[0, 1\]"),
    ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.zeros(4, np.float32)}, "expected integer class labels"),
    ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.zeros(3, np.int64)}, "one label per image"),
    ({"x": np.zeros((4, 64), np.uint8), "y": np.zeros(4, np.int64)}, r"expected \(N, H, W\)"),
    ({"x": np.array([object()] * 4), "y": np.zeros(4, np.int64)}, "not a readable .npz of plain arrays"),
])
def test_bad_npz_is_refused(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(InputError, match=message):
        load_dataset(str(path))


def test_unknown_dataset():
    with pytest.raises(InputError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")
