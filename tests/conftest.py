"""Shared fixtures. ``DLFORGE_HOME`` points at a temp dir so tests never touch the user's home.

Two tiers. The README's test command runs the fast tier, ``pytest -m "not slow"``; ``.ci/run`` runs it and
then the slow tier, ``pytest -m slow``, so CI still runs everything. A test is slow when it is marked so, or
when it uses a fixture that trains or starts something for minutes (:data:`SLOW_FIXTURES`: the MNIST models,
a Ray cluster, the wheel's virtual environments).

Handed-over fixtures: tests/test_packaging.py runs tests/runtime/test_session_contract.py in a virtual
environment holding only the base install (numpy + onnxruntime), where nothing can be trained or
exported (no torch, no onnx) and the digits dataset cannot be loaded (no scikit-learn). The suite's
own run builds those with the toolkit (tests.helpers.write_handoff) and names the directory in
``DLFORGE_TEST_HANDOFF``; with it set, the fixtures below open that directory instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import HANDOFF_ENV, load_dataset_npz, shared_path

HANDOFF = Path(os.environ[HANDOFF_ENV]) if os.environ.get(HANDOFF_ENV) else None
SLOW_FIXTURES = frozenset({"mnist_lenet", "mnist_onnx", "mnist_engines", "ray_cluster", "wheel", "toolkit_python",
                           "base_python", "zoo_engines", "fresh_block"})  # fresh_block: the README tour, run once (a minute)


def pytest_collection_modifyitems(config, items):
    """Mark ``slow`` every test that uses a fixture of :data:`SLOW_FIXTURES` (the tier rule in one place)."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DLFORGE_HOME", str(tmp_path_factory.getbasetemp() / "dlforge-home"))


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    return shared_path("mnist")


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits as a dlforge Dataset, loaded once (shared by every test: read it, never modify it)."""
    from dlforge.data import load_dataset

    return load_dataset("digits")


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


@pytest.fixture(scope="session", autouse=True)
def _handed_over_digits():
    """With a handover, ``load_dataset("digits")`` reads the handed-over arrays (no scikit-learn needed)."""
    if HANDOFF is None:
        yield
        return
    import dlforge.data.digits

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dlforge.data.digits, "load_digits", lambda: load_dataset_npz(HANDOFF / "digits.npz"))
        yield


@pytest.fixture(scope="session")
def digits_onnx(request, tmp_path_factory):
    if HANDOFF is not None:
        from dlforge.artifact import open_artifact

        return open_artifact(HANDOFF / "onnx", ["onnx"])
    from dlforge.export import onnx_from_checkpoint

    digits_lenet = request.getfixturevalue("digits_lenet")
    return onnx_from_checkpoint(digits_lenet.path, tmp_path_factory.mktemp("digits-onnx") / "onnx")


@pytest.fixture(scope="session")
def digits_engines(request, tmp_path_factory):
    """fp32 and int8 ONNX Runtime engines of the digits LeNet."""
    if HANDOFF is not None:
        from dlforge.artifact import open_artifact

        return {p: open_artifact(HANDOFF / f"engine-{p}", ["engine"]) for p in ("fp32", "int8")}
    from dlforge.build import engine_from_onnx

    digits_onnx = request.getfixturevalue("digits_onnx")
    root = tmp_path_factory.mktemp("digits-engines")
    return {p: engine_from_onnx(digits_onnx.path, root / p, precision=p) for p in ("fp32", "int8")}


@pytest.fixture(scope="session")
def mnist_onnx(mnist_lenet, tmp_path_factory):
    from dlforge.export import onnx_from_checkpoint

    return onnx_from_checkpoint(mnist_lenet.path, tmp_path_factory.mktemp("mnist-onnx") / "onnx")


@pytest.fixture(scope="session")
def mnist_engines(mnist_onnx, tmp_path_factory):
    """fp32 and int8 ONNX Runtime engines of the MNIST LeNet, in folders named after their precision."""
    from dlforge.build import engine_from_onnx

    root = tmp_path_factory.mktemp("mnist-engines")
    return {p: engine_from_onnx(mnist_onnx.path, root / p, precision=p) for p in ("fp32", "int8")}
