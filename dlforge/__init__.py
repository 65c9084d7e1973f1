"""dlforge: from PyTorch to a compiled, benchmarked, robustness-audited deployment.

Importing ``dlforge`` imports nothing heavy: stages import torch, onnx or onnxruntime themselves.
``dlforge.checkpoint_from_module`` (your own ``nn.Module`` in, as a checkpoint artifact) is looked up
on first use, and only then imports torch.
"""

__version__ = "0.1.0"

_LAZY = {"checkpoint_from_module": "dlforge.train.user_model"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dlforge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
