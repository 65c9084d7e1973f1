"""scikit-learn's handwritten digits: 1,797 8x8 images shipped inside scikit-learn (no download)."""

from __future__ import annotations

import numpy as np

from dlforge.data.dataset import DATASETS, Dataset, holdout_test, split_train_val
from dlforge.errors import require


@DATASETS.register("digits")
def _registered(data_dir=None) -> Dataset:
    return load_digits()  # embedded in scikit-learn: no directory


def load_digits() -> Dataset:
    datasets = require("sklearn.datasets", "toolkit", "the digits dataset")
    bunch = datasets.load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    x_rest, y_rest, x_test, y_test = holdout_test(x, y)
    x_train, y_train, x_val, y_val = split_train_val(x_rest, y_rest)
    return Dataset(
        name="digits",
        x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test,
        labels=tuple(str(i) for i in range(10)),
        source="sklearn.datasets.load_digits",
    )
