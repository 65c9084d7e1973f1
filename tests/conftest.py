"""Shared fixtures. ``DLFORGE_HOME`` points at a temp dir so tests never touch the user's home."""

from __future__ import annotations

import pytest

from tests.helpers import shared_path


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DLFORGE_HOME", str(tmp_path_factory.getbasetemp() / "dlforge-home"))


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    return shared_path("mnist")


@pytest.fixture(scope="session")
def digits_lenet(tmp_path_factory):
    """LeNet trained on digits with its default settings (a few seconds)."""
    from dlforge.train import checkpoint_from_training

    return checkpoint_from_training("lenet", tmp_path_factory.mktemp("digits") / "checkpoint", data="digits",
                                    progress=False)


@pytest.fixture(scope="session")
def mnist_lenet(tmp_path_factory):
    """LeNet trained on MNIST for 3 epochs (about two minutes on two cores)."""
    from dlforge.train import checkpoint_from_training

    data_dir = shared_path("mnist")
    return checkpoint_from_training("lenet", tmp_path_factory.mktemp("mnist") / "checkpoint", data="mnist",
                                    data_dir=data_dir, epochs=3, progress=False)
