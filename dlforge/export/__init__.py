"""Export stage: checkpoint -> ONNX, verified against eager PyTorch before it is saved."""

from dlforge.export.onnx_export import onnx_from_checkpoint

__all__ = ["onnx_from_checkpoint"]
