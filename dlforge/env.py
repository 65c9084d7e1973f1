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


CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
INT8_DOT_PRODUCT = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags() -> list[str]:
    """The CPU features that decide INT8 speed and arithmetic on ONNX Runtime (VNNI, AMX); empty where the OS
    does not say (no /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    return [f for f in CPU_FLAGS if f in present]
    except OSError:
        pass
    return []


def int8_saturates() -> bool:
    """Whether ONNX Runtime's U8S8 kernels can saturate on this CPU: an x86-64 CPU without a VNNI or AMX
    INT8 dot product multiplies uint8 activations by int8 weights with ``vpmaddubsw``, whose int16 pair sums
    overflow (onnxruntime's quantization guide: "reduce_range ... for the U8S8 format on AVX2 and AVX512
    (non-VNNI) machines to mitigate saturation"). An x86 CPU whose flags the OS does not report counts as one."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False
    return not set(cpu_flags()) & set(INT8_DOT_PRODUCT)


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
