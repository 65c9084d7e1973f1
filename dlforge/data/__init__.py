"""Datasets: scikit-learn digits (the embedded default), MNIST / Fashion-MNIST IDX files, user ``.npz``.

An image folder (one sub-folder of images per class) loads as a dataset too (:mod:`dlforge.data.image_folder`).

Every dataset comes back as float32 images ``(N, C, H, W)`` in [0, 1] with int64 labels, split into
train / validation / test. The validation split is carved from the training set with a fixed seed,
so it is the same whatever seed the training uses.
"""

from __future__ import annotations

from dlforge.data.dataset import Dataset, dataset_names, load_dataset, load_spec, load_training_data

__all__ = ["Dataset", "dataset_names", "load_dataset", "load_spec", "load_training_data"]
