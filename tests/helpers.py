"""Helpers for tests that need ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("DLFORGE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or a skip naming what is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the shared MNIST / ONNX Model Zoo data beside the repo; "
                    "set DLFORGE_SHARED_DATA to its location)")
    return path
