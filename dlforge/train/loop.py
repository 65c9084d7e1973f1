"""The training loop: seeded, deterministic on CPU, with per-epoch validation.

Batches are drawn from tensors already in memory by a seeded permutation (no DataLoader worker
processes), which keeps the loop as fast as a hand-written one and reproducible to the byte.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_accuracy: float | None
    seconds: float
    lr: float
    val_mse: float | None = None

    def to_dict(self) -> dict:
        d = {"epoch": self.epoch, "train_loss": round(self.train_loss, 6), "seconds": round(self.seconds, 3),
             "lr": self.lr}
        if self.val_accuracy is not None:
            d["val_accuracy"] = round(self.val_accuracy, 6)
        if self.val_mse is not None:
            d["val_mse"] = round(self.val_mse, 6)
        return d


@dataclass
class TrainResult:
    history: list[EpochRecord] = field(default_factory=list)
    seconds: float = 0.0
    samples: int = 0

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds else 0.0


def seed_everything(seed: int) -> None:
    """Seed torch's global RNG (weight init, dropout) and make CPU kernels deterministic."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def accuracy(model: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor,
             *, batch_size: int = 512, device: str = "cpu") -> float:
    """Top-1 accuracy of ``model`` in eval mode."""
    logits = predict_logits(model, x, batch_size=batch_size, device=device)
    y = torch.as_tensor(y)
    return float((logits.argmax(1) == y).float().mean()) if len(y) else float("nan")


def reconstruction_mse(model: nn.Module, x: np.ndarray | torch.Tensor, *, batch_size: int = 512,
                       device: str = "cpu") -> float:
    """Mean squared error between an autoencoder's output and its (clean) input, in eval mode."""
    out = predict_logits(model, x, batch_size=batch_size, device=device)
    return float(((out - torch.as_tensor(x).float()) ** 2).mean()) if len(out) else float("nan")


def predict_logits(model: nn.Module, x: np.ndarray | torch.Tensor, *, batch_size: int = 512,
                   device: str = "cpu") -> torch.Tensor:
    was_training = model.training
    model.eval()
    x = torch.as_tensor(x)
    outs = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            outs.append(model(x[i:i + batch_size].to(device)).float().cpu())
    model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0)


def adversarial_loss(model, x, y, loss_fn, method: str, eps: float, steps: int, value_range) -> torch.Tensor:
    """The training loss of one batch under adversarial training (see :func:`fit`)."""
    lo, hi = value_range
    if method == "fgsm":
        x = x.detach().requires_grad_(True)
        clean = loss_fn(model(x), y)
        (grad,) = torch.autograd.grad(clean, x, retain_graph=True)
        x_adv = (x + eps * grad.sign()).clamp(lo, hi).detach()
        return 0.5 * clean + 0.5 * loss_fn(model(x_adv), y)
    from dlforge.adversarial.attacks.pgd import PGD

    model.eval()
    x_adv = PGD(steps=steps, seed=int(torch.randint(0, 2**31 - 1, ()))).run(model, x, y, eps=eps,
                                                                           value_range=value_range).detach()
    model.train()
    return loss_fn(model(x_adv), y)


def fit(
    model: nn.Module,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 0.0,
    seed: int = 0,
    device: str = "cpu",
    progress: bool | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    adv_train: str | None = None,
    adv_eps: float = 0.25,
    adv_steps: int = 7,
    value_range: tuple[float, float] = (0.0, 1.0),
    task: str = "classification",
) -> TrainResult:
    """Train ``model`` with AdamW and a cosine learning-rate decay over all steps.

    Adversarial training (``adv_train``): ``"fgsm"`` is Goodfellow et al.'s mixed objective,
    0.5 * J(x) + 0.5 * J(x + eps * sign(grad_x J)), the example made from the same forward pass;
    ``"pgd"`` is Madry et al.'s: train on PGD examples (``adv_steps`` steps, random start) only.

    Args:
        progress: show a tqdm bar per epoch; ``None`` shows it only on a terminal.
        on_epoch: called with each epoch's record (loss, validation accuracy, time).
        adv_train, adv_eps, adv_steps: adversarial training method, its L-inf budget and PGD steps.
        task: ``"classification"`` (cross-entropy, validation accuracy) or ``"reconstruction"``
            (mean squared error against the input itself, validation MSE).
    """
    from tqdm.auto import tqdm

    model.to(device)
    x = torch.as_tensor(x_train).to(device)
    y = torch.as_tensor(y_train).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = -(-len(y) // batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    reconstruct = task == "reconstruction"
    loss_fn = nn.MSELoss() if reconstruct else nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    result = TrainResult()
    for epoch in range(1, epochs + 1):
        model.train()
        start = time.perf_counter()
        order = torch.randperm(len(y), generator=generator).to(device)
        loss_sum = torch.zeros((), device=device)
        bar = tqdm(range(0, len(y), batch_size), desc=f"epoch {epoch}/{epochs}", unit="batch",
                   disable=None if progress is None else not progress, leave=False)
        for i in bar:
            idx = order[i:i + batch_size]
            xb, yb = x[idx], y[idx]
            optimizer.zero_grad(set_to_none=True)
            if reconstruct:
                loss = loss_fn(model(xb), xb)
            elif adv_train is None:
                loss = loss_fn(model(xb), yb)
            else:
                loss = adversarial_loss(model, xb, yb, loss_fn, adv_train, adv_eps, adv_steps, value_range)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach() * len(idx)
        seconds = time.perf_counter() - start
        result.seconds += seconds
        result.samples += len(y)
        if reconstruct:
            record = EpochRecord(epoch, float(loss_sum) / len(y), None, seconds, optimizer.param_groups[0]["lr"],
                                 val_mse=reconstruction_mse(model, x_val, device=device))
        else:
            record = EpochRecord(epoch, float(loss_sum) / len(y), accuracy(model, x_val, y_val, device=device),
                                 seconds, optimizer.param_groups[0]["lr"])
        result.history.append(record)
        if on_epoch:
            on_epoch(record)
    return result
