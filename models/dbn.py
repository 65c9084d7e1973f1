"""``dbn``: a deep belief network (Hinton, Osindero & Teh 2006; Hinton & Salakhutdinov 2006).

A stack of restricted Boltzmann machines is pretrained greedily, layer by layer, with contrastive
divergence (CD-k) on unlabelled images; the stack is then unrolled into a sigmoid MLP with a
softmax classifier on top and fine-tuned with backpropagation. It exports as that MLP.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch
from torch import nn

from dlforge_models._registry import TrainDefaults, register_model


class DBN(nn.Module):
    def __init__(self, input_shape, num_classes: int, hidden: tuple[int, ...], cd_k: int, pretrain_epochs: int,
                 pretrain_lr: float):
        super().__init__()
        self.config = {"input_shape": list(input_shape), "num_classes": num_classes, "hidden": list(hidden),
                       "cd_k": cd_k, "pretrain_epochs": pretrain_epochs, "pretrain_lr": pretrain_lr}
        sizes = [math.prod(input_shape), *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.visible_bias = nn.ParameterList(nn.Parameter(torch.zeros(a)) for a in sizes[:-1])
        self.classifier = nn.Linear(sizes[-1], num_classes)

    def forward(self, x):
        h = x.flatten(1)
        for layer in self.layers:
            h = torch.sigmoid(layer(h))
        return self.classifier(h)


def cd_step(layer: nn.Linear, visible_bias: torch.Tensor, v0: torch.Tensor, k: int, lr: float,
            generator: torch.Generator, velocity: dict, momentum: float = 0.5) -> float:
    """One CD-k update of an RBM whose weights are ``layer`` (hidden x visible) and biases; returns the
    batch's reconstruction error (mean squared, from the first Gibbs step)."""
    W, b_h = layer.weight, layer.bias
    h_prob0 = torch.sigmoid(v0 @ W.T + b_h)
    h = torch.bernoulli(h_prob0, generator=generator)
    for step in range(k):
        v_prob = torch.sigmoid(h @ W + visible_bias)
        if step == 0:
            error = float(((v0 - v_prob) ** 2).mean())
        h_prob = torch.sigmoid(v_prob @ W.T + b_h)
        h = torch.bernoulli(h_prob, generator=generator)
    n = len(v0)
    grads = {"W": (h_prob0.T @ v0 - h_prob.T @ v_prob) / n, "b_h": (h_prob0 - h_prob).mean(0),
             "b_v": (v0 - v_prob).mean(0)}
    for name, param in (("W", W), ("b_h", b_h), ("b_v", visible_bias)):
        velocity[name] = momentum * velocity.get(name, torch.zeros_like(param)) + lr * grads[name]
        param.add_(velocity[name])
    return error


def pretrain(model: DBN, x: np.ndarray, *, batch_size: int = 64, seed: int = 0, device: str = "cpu",
             progress: bool | None = None, report: Callable[[str], None] = lambda s: None) -> dict:
    """Greedy layer-wise CD-k pretraining; returns reconstruction error per layer per epoch."""
    from tqdm.auto import tqdm

    cfg = model.config
    generator = torch.Generator(device=device).manual_seed(seed)
    data = torch.as_tensor(x, device=device).flatten(1)
    history = []
    with torch.no_grad():
        for i, (layer, vbias) in enumerate(zip(model.layers, model.visible_bias)):
            errors = []
            velocity: dict = {}
            for epoch in range(cfg["pretrain_epochs"]):
                start = time.perf_counter()
                order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed + 1000 * i + epoch))
                total = 0.0
                steps = range(0, len(data), batch_size)
                for j in tqdm(steps, desc=f"pretrain RBM {i + 1} epoch {epoch + 1}", unit="batch", leave=False,
                              disable=None if progress is None else not progress):
                    total += cd_step(layer, vbias, data[order[j:j + batch_size].to(device)], cfg["cd_k"],
                                     cfg["pretrain_lr"], generator, velocity, momentum=0.5 if epoch < 5 else 0.9)
                errors.append(total / len(steps))
                report(f"pretrain RBM {i + 1}/{len(model.layers)} epoch {epoch + 1}: reconstruction error "
                       f"{errors[-1]:.5f} ({time.perf_counter() - start:.1f} s)")
            history.append({"layer": i + 1, "visible": layer.in_features, "hidden": layer.out_features,
                            "reconstruction_error": [round(e, 6) for e in errors]})
            data = torch.sigmoid(data @ layer.weight.T + layer.bias)  # the next RBM learns these features
    return {"cd_k": cfg["cd_k"], "epochs": cfg["pretrain_epochs"], "layers": history}


@register_model(defaults=TrainDefaults(epochs=10, small_data_epochs=60, batch_size=64, lr=1e-3), pretrain=pretrain)
def dbn(*, input_shape, num_classes, hidden=(500, 500), cd_k=1, pretrain_epochs=3, pretrain_lr=0.05) -> nn.Module:
    """Deep belief network: RBMs pretrained with CD-k, unrolled into a sigmoid MLP and fine-tuned."""
    return DBN(input_shape, num_classes, tuple(hidden), cd_k, pretrain_epochs, pretrain_lr)
