"""Training stage: dataset + zoo model -> checkpoint artifact (safetensors weights + card)."""

from dlforge.train.checkpoint import attack_model, checkpoint_from_training, load_checkpoint, model_info_for
from dlforge.train.options import TrainOptions

__all__ = ["TrainOptions", "attack_model", "checkpoint_from_training", "load_checkpoint", "model_info_for"]
