"""The PyTorch model gradient attacks are crafted on: eval mode, frozen parameters, batched.

It wraps any classifier module: a checkpoint's model (:func:`dlforge.train.checkpoint.attack_model`) or an
engine's own graph made differentiable (:mod:`dlforge.onnx_torch`).
"""

from __future__ import annotations

import numpy as np

from dlforge.errors import InputError, require


def resolve_device(device: str) -> str:
    """``device`` checked: cpu, or cuda where torch sees a CUDA device."""
    import torch

    if device not in ("cpu", "cuda"):
        raise InputError(f"unknown device {device!r}; expected cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device cuda, but torch {torch.__version__} sees no CUDA device; use --device cpu")
    return device


class TorchModel:
    def __init__(self, module, device: str = "cpu"):
        torch = require("torch", "toolkit", "gradient attacks")
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

    def predict(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
        torch = self.torch
        outs = []
        with torch.inference_mode():
            for i in range(0, len(x), batch_size):
                outs.append(self.model(torch.from_numpy(x[i:i + batch_size]).to(self.device)).float().cpu().numpy())
        return np.concatenate(outs)

    def attack(self, attack, x: np.ndarray, y: np.ndarray, *, eps: float, value_range, batch_size: int,
               target: np.ndarray | None = None) -> np.ndarray:
        """Run a gradient attack batch by batch; tensors stay on the device inside each batch. With ``target``
        (one class per input) the attack is targeted: it pushes each input towards its target class."""
        torch = self.torch
        out = np.empty_like(x)
        for i in range(0, len(x), batch_size):
            xb = torch.from_numpy(x[i:i + batch_size]).to(self.device)
            if xb.dim() == 4:  # a waveform (N, 1, T) has no channels-last layout
                xb = xb.contiguous(memory_format=self.layout)
            yb = torch.from_numpy(y[i:i + batch_size]).to(self.device)
            extra = {} if target is None else {"target": torch.from_numpy(target[i:i + batch_size]).to(self.device)}
            out[i:i + batch_size] = attack.run(self.model, xb, yb, eps=eps, value_range=value_range,
                                               **extra).detach().cpu().numpy()
        return out

    def input_gradients(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Gradients of the cross-entropy loss with respect to the inputs (for the audit's checks)."""
        from dlforge.adversarial.attacks.fgsm import input_gradient

        torch = self.torch
        return input_gradient(self.model, torch.from_numpy(x).to(self.device),
                              torch.from_numpy(y).to(self.device)).cpu().numpy()
