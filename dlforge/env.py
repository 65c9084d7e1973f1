"""The environment fingerprint recorded in every card and report (stdlib only)."""

from __future__ import annotations

import os
import platform
from importlib import metadata

_PACKAGES = ("dlforge", "numpy", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt")


def package_version(name: str) -> str | None:
    """Installed version of a distribution, without importing it; None when absent."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU's model name, as the OS reports it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """Versions of the packages dlforge uses and the host they run on."""
    packages = {name: v for name in _PACKAGES if (v := package_version(name)) is not None}
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "packages": packages,
    }
