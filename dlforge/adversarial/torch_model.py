"""The PyTorch model gradient attacks are crafted on: eval mode, frozen parameters, batched.

It wraps any classifier module: a checkpoint's model (:meth:`TorchModel.from_checkpoint`) or an
engine's own graph made differentiable (:mod:`dlforge.onnx_torch`).
"""

from __future__ import annotations

import numpy as np

from dlforge.artifact import Artifact
from dlforge.errors import InputError, require


class TorchModel:
    def __init__(self, module, device: str = "cpu"):
        torch = require("torch", "toolkit", "gradient attacks")
        from dlforge.train.checkpoint import resolve_device

        self.torch = torch
        self.device = resolve_device(device)
        self.model = module.eval().to(self.device)
        for p in self.model.parameters():  # only input gradients are needed: skip weight gradients entirely
            p.requires_grad_(False)
        # Convolutions run markedly faster in channels-last layout on oneDNN (CPU) and cuDNN (GPU).
        self.layout = torch.contiguous_format
        if any(isinstance(m, torch.nn.Conv2d) for m in self.model.modules()):
            self.layout = torch.channels_last
            self.model = self.model.to(memory_format=self.layout)

    @classmethod
    def from_checkpoint(cls, checkpoint: Artifact, device: str = "cpu") -> TorchModel:
        """The checkpoint's model, rebuilt without running pickled code (:func:`load_checkpoint`)."""
        require("torch", "toolkit", "gradient attacks")
        from dlforge.train import load_checkpoint

        if checkpoint.card.model is not None and checkpoint.card.model.task != "classification":
            raise InputError(f"{checkpoint.path} is a {checkpoint.card.model.task} model; attacks need a classifier")
        model, _ = load_checkpoint(checkpoint)
        return cls(model, device)

    def predict(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
        torch = self.torch
        outs = []
        with torch.inference_mode():
            for i in range(0, len(x), batch_size):
                outs.append(self.model(torch.from_numpy(x[i:i + batch_size]).to(self.device)).float().cpu().numpy())
        return np.concatenate(outs)

    def attack(self, attack, x: np.ndarray, y: np.ndarray, *, eps: float, value_range, batch_size: int) -> np.ndarray:
        """Run a gradient attack batch by batch; tensors stay on the device inside each batch."""
        torch = self.torch
        out = np.empty_like(x)
        for i in range(0, len(x), batch_size):
            xb = torch.from_numpy(x[i:i + batch_size]).to(self.device).contiguous(memory_format=self.layout)
            yb = torch.from_numpy(y[i:i + batch_size]).to(self.device)
            out[i:i + batch_size] = attack.run(self.model, xb, yb, eps=eps, value_range=value_range).detach().cpu().numpy()
        return out

    def input_gradients(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Gradients of the cross-entropy loss with respect to the inputs (for the audit's checks)."""
        from dlforge.adversarial.attacks.fgsm import input_gradient

        torch = self.torch
        return input_gradient(self.model, torch.from_numpy(x).to(self.device),
                              torch.from_numpy(y).to(self.device)).cpu().numpy()
