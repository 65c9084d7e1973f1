import dataclasses

import numpy as np
import pytest

from dlforge.data import load_dataset
from dlforge.data.dataset import IDX_DATASETS, MAX_CLASSES
from dlforge.data.idx import SOURCES
from dlforge.errors import InputError


def test_every_idx_dataset_has_a_download_source():
    assert set(IDX_DATASETS) == set(SOURCES)


def test_a_stray_huge_label_is_refused_before_anything_is_allocated(tmp_path):
    y = np.arange(100) % 3
    y[5] = 10**12
    np.savez(tmp_path / "d.npz", x=np.zeros((100, 8, 8), np.uint8), y=y)
    with pytest.raises(InputError, match=f"implies {10**12 + 1} classes; dlforge trains at most {MAX_CLASSES}"):
        load_dataset(str(tmp_path / "d.npz"))


def test_named_classes_may_be_absent_from_the_data(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((100, 8, 8), np.uint8), y=np.arange(100) % 2,
             labels=np.array(["cat", "dog", "eel"]))
    ds = load_dataset(str(tmp_path / "d.npz"))
    assert ds.labels == ("cat", "dog", "eel") and ds.num_classes == 3


def test_an_emptied_split_is_refused():
    ds = load_dataset("digits")
    with pytest.raises(InputError, match="has no train images"):
        dataclasses.replace(ds, x_train=ds.x_train[:0], y_train=ds.y_train[:0])
