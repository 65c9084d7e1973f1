"""Shared fixtures. ``DLFORGE_HOME`` points at a temp dir so tests never touch the user's home."""

from __future__ import annotations

from pathlib import Path

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


@pytest.fixture(scope="session")
def digits_onnx(digits_lenet, tmp_path_factory):
    from dlforge.export import onnx_from_checkpoint

    return onnx_from_checkpoint(digits_lenet.path, tmp_path_factory.mktemp("digits-onnx") / "onnx")


@pytest.fixture(scope="session")
def digits_engines(digits_onnx, tmp_path_factory):
    """fp32 and int8 ONNX Runtime engines of the digits LeNet."""
    from dlforge.build import engine_from_onnx

    root = tmp_path_factory.mktemp("digits-engines")
    return {p: engine_from_onnx(digits_onnx.path, root / p, precision=p) for p in ("fp32", "int8")}


@pytest.fixture(scope="session")
def mnist_onnx(mnist_lenet, tmp_path_factory):
    from dlforge.export import onnx_from_checkpoint

    return onnx_from_checkpoint(mnist_lenet.path, tmp_path_factory.mktemp("mnist-onnx") / "onnx")
