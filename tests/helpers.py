"""Helpers for tests that need ../shared/data or something else from the machine they run on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("DLFORGE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

# CI sets CI=true: there a missing prerequisite is a broken CI set-up, not a reason to skip.
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def skip_unless_ci(reason: str):
    """Skip with ``reason`` on a developer's machine; fail with it in CI, where everything must run."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: this test must run in CI, so a missing prerequisite fails it)",
                    pytrace=False)
    pytest.skip(reason)


def import_or_skip(module: str, reason: str):
    """``pytest.importorskip`` on a developer's machine; under CI=true a missing reference library fails, so a
    broken install cannot skip every cross-check and still pass."""
    if IN_CI:
        import importlib

        try:
            return importlib.import_module(module)
        except ImportError as exc:
            pytest.fail(f"{reason}: {module} does not import ({exc}); CI=true: install it, this test must run",
                        pytrace=False)
    return pytest.importorskip(module, reason=reason)


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data; a skip naming what is missing (a failure in CI)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        skip_unless_ci(f"needs {path} (the shared MNIST / ONNX Model Zoo data beside the repo; "
                       "set DLFORGE_SHARED_DATA to its location)")
    return path


# The directory of handed-over fixtures for a test run without the toolkit (see tests/conftest.py).
HANDOFF_ENV = "DLFORGE_TEST_HANDOFF"


def write_handoff(out: Path, digits_onnx, digits_engines) -> Path:
    """Copy the digits ONNX and engine artifacts into ``out`` and save the digits dataset beside them."""
    import shutil

    from dlforge.data import load_dataset

    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(digits_onnx.path, out / "onnx")
    for precision, engine in digits_engines.items():
        shutil.copytree(engine.path, out / f"engine-{precision}")
    save_dataset_npz(load_dataset("digits"), out / "digits.npz")
    return out


def save_dataset_npz(ds, path: Path) -> None:
    import dataclasses

    import numpy as np

    arrays = [f.name for f in dataclasses.fields(ds) if f.name != "details"]  # details: a dict, not an array
    np.savez(path, **{name: np.asarray(getattr(ds, name)) for name in arrays})


def load_dataset_npz(path: Path):
    """The :class:`dlforge.data.Dataset` that :func:`save_dataset_npz` saved, exactly."""
    import dataclasses

    import numpy as np

    from dlforge.data import Dataset

    with np.load(path, allow_pickle=False) as arrays:
        values = {f.name: arrays[f.name] for f in dataclasses.fields(Dataset) if f.name != "details"}
    values["name"], values["source"] = str(values["name"]), str(values["source"])
    values["labels"] = tuple(str(label) for label in values["labels"])
    return Dataset(**values)


def dlforge(*args):
    """``dlforge ARGS`` in-process (click's runner, stderr apart); arguments may be paths."""
    from click.testing import CliRunner

    from dlforge.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def dlforge_ok(*args):
    """``dlforge ARGS``, which must exit 0; the result."""
    result = dlforge(*args)
    assert result.exit_code == 0, result.output
    return result


def assert_refused(result, message: str, *, code: int = 2, nothing_under: Path | None = None) -> None:
    """A refusal as the CLI contract has it: exit ``code``, one ``Error:`` line holding ``message``, no traceback,
    and (``nothing_under``) no artifact or staging directory left below that folder."""
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ") and message in lines[0], lines[0]
    assert "Traceback" not in result.output
    if nothing_under is not None:
        left = [p for p in nothing_under.rglob("*") if p.name == "card.json" or p.name.endswith(".partial")]
        assert not left, left
