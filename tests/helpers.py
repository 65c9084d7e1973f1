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


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data; a skip naming what is missing (a failure in CI)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        skip_unless_ci(f"needs {path} (the shared MNIST / ONNX Model Zoo data beside the repo; "
                       "set DLFORGE_SHARED_DATA to its location)")
    return path
