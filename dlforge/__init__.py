"""dlforge: from PyTorch to a compiled, benchmarked, robustness-audited deployment.

Importing ``dlforge`` imports nothing heavy: stages import torch, onnx or onnxruntime themselves.
"""

__version__ = "0.1.0"
