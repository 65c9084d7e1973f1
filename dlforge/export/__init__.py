"""Export stage: checkpoint -> ONNX, verified against eager PyTorch before it is saved."""

from dlforge.export.onnx_export import onnx_from_checkpoint
from dlforge.export.options import ExportOptions

__all__ = ["ExportOptions", "onnx_from_checkpoint"]
