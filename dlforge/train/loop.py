"""The training loop: seeded, deterministic on CPU, with per-epoch validation.

Batches are drawn from tensors already in memory by a seeded permutation (no DataLoader worker
processes), which keeps the loop as fast as a hand-written one and reproducible to the byte.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from dlforge.errors import StageFailed
from dlforge.progress import Progress, ProgressLike, as_progress


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
    progress: ProgressLike = None,
    objective: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    task: str = "classification",
) -> TrainResult:
    """Train ``model`` with AdamW and a cosine learning-rate decay over all steps.

    Args:
        progress: a :class:`~dlforge.progress.Progress` (a bar per epoch, each epoch's record), or bars only:
            True, False, or None (on a terminal).
        objective: the loss of one batch, ``objective(model, x, y)``; default cross-entropy (or, for
            reconstruction, the mean squared error against the input). Adversarial training injects
            one from :mod:`dlforge.train.adversarial`.
        task: ``"classification"`` (validation accuracy) or ``"reconstruction"`` (validation MSE).

    Raises:
        StageFailed: the training loss became NaN or infinite (the run diverged).
    """
    model.to(device)
    x = torch.as_tensor(x_train).to(device)
    y = torch.as_tensor(y_train).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = -(-len(y) // batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    objective = objective or default_objective(task)
    generator = torch.Generator().manual_seed(seed)
    result = TrainResult()
    progress = as_progress(progress)
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        loss = _epoch(model, x, y, objective, optimizer, scheduler, generator, batch_size,
                      desc=f"epoch {epoch}/{epochs}", progress=progress)
        if not math.isfinite(loss):
            raise StageFailed(f"training diverged: the loss is {loss} in epoch {epoch}; nothing was saved. "
                              f"Lower --lr (it was {lr:g}) or check the data")
        seconds = time.perf_counter() - start
        result.seconds += seconds
        result.samples += len(y)
        record = EpochRecord(epoch, loss, None, seconds, optimizer.param_groups[0]["lr"])
        if task == "reconstruction":
            record.val_mse = reconstruction_mse(model, x_val, device=device)
        else:
            record.val_accuracy = accuracy(model, x_val, y_val, device=device)
        result.history.append(record)
        progress.epoch(record)
    return result


def default_objective(task: str) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """Cross-entropy for a classifier; for an autoencoder, MSE against the (clean) input itself."""
    if task == "reconstruction":
        return lambda model, x, y: nn.functional.mse_loss(model(x), x)
    return lambda model, x, y: nn.functional.cross_entropy(model(x), y)


def _epoch(model, x, y, objective, optimizer, scheduler, generator, batch_size: int, *, desc: str,
           progress: Progress) -> float:
    """One pass over ``x`` in a seeded random order; returns the mean training loss."""
    model.train()
    order = torch.randperm(len(y), generator=generator).to(x.device)
    loss_sum = torch.zeros((), device=x.device)
    with progress.bar(-(-len(y) // batch_size), desc, unit="batch", leave=False) as bar:
        for i in range(0, len(y), batch_size):
            idx = order[i:i + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = objective(model, x[idx], y[idx])
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach() * len(idx)
            bar.update(1)
    return float(loss_sum) / len(y)
