"""ONNX Runtime: the compiler (:mod:`.compile`) and the session (:mod:`.session`, numpy + onnxruntime)."""

from dlforge.backends.ort import compile  # noqa: F401  (registers the backend)
