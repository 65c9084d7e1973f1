"""Training stage: dataset + zoo model -> checkpoint artifact (safetensors weights + card)."""

from dlforge.train.checkpoint import checkpoint_from_training, load_checkpoint, model_info_for

__all__ = ["checkpoint_from_training", "load_checkpoint", "model_info_for"]
