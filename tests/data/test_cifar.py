"""CIFAR-10's python batches: read as arrays only, in the official layout; downloads checked by MD5."""

from __future__ import annotations

import io
import pickle
import tarfile

import numpy as np
import pytest

from dlforge.data import load_dataset
from dlforge.data.cifar import TEST_BATCH, TRAIN_BATCHES, download_cifar10, unpack, write_batch
from dlforge.errors import DownloadFailed, InputError


def _batches(folder, n=20, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    written = {}
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        x = rng.integers(0, 256, (n, 3, 32, 32)).astype(np.float32) / 255
        y = rng.integers(0, 10, n)
        write_batch(folder / name, x, y)
        written[name] = (x, y)
    return written


def test_batches_load_in_the_official_layout(tmp_path):
    written = _batches(tmp_path / "cifar-10-batches-py")
    ds = load_dataset("cifar10", tmp_path)
    assert ds.input_shape == (3, 32, 32) and ds.labels[0] == "airplane" and ds.labels[9] == "truck"
    assert len(ds.y_train) + len(ds.y_val) == 100 and len(ds.y_test) == 20
    x, y = written[TEST_BATCH]
    np.testing.assert_array_equal(ds.y_test, y)
    np.testing.assert_allclose(ds.x_test, x, atol=1e-6)  # the planes are R, G, B of each image, in order


def test_a_batch_that_asks_for_code_is_refused(tmp_path):
    _batches(tmp_path / "cifar-10-batches-py")
    evil = io.BytesIO()
    pickle.dump({"data": np.zeros((1, 3072), np.uint8), "labels": [0], "x": __import__("os").getcwd}, evil)
    (tmp_path / "cifar-10-batches-py" / TEST_BATCH).write_bytes(evil.getvalue())
    with pytest.raises(InputError, match="asks for posix.getcwd.*runs no code"):
        load_dataset("cifar10", tmp_path)


def test_missing_batches_say_how_to_get_them(tmp_path):
    with pytest.raises(InputError, match="dlforge download cifar10"):
        load_dataset("cifar10", tmp_path)


def test_download_refuses_a_wrong_archive_and_leaves_nothing(tmp_path):
    src = tmp_path / "src"
    _batches(src / "cifar-10-batches-py")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    target = tmp_path / "data"
    with pytest.raises(DownloadFailed, match="expected c58f30108f718f92721af3b95e74349a"):
        download_cifar10(target, url=archive.as_uri())
    assert list(target.iterdir()) == []  # no temporary file, nothing unpacked
    paths = unpack(archive, target)  # what download does once the checksum matches
    assert [p.name for p in paths] == sorted((*TRAIN_BATCHES, TEST_BATCH))
    assert len(load_dataset("cifar10", target).y_test) == 20


def test_malformed_batches_are_bad_input_not_a_crash(tmp_path):
    _batches(tmp_path / "cifar-10-batches-py")
    ragged = io.BytesIO()
    pickle.dump({"data": np.zeros((2, 3072), np.uint8), "labels": [[1], [2, 3]]}, ragged, protocol=2)
    (tmp_path / "cifar-10-batches-py" / TEST_BATCH).write_bytes(ragged.getvalue())
    with pytest.raises(InputError, match="'labels' is not a flat list of integers"):
        load_dataset("cifar10", tmp_path)
