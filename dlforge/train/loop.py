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
    val_accuracy: float
    seconds: float
    lr: float

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "train_loss": round(self.train_loss, 6),
                "val_accuracy": round(self.val_accuracy, 6), "seconds": round(self.seconds, 3),
                "lr": self.lr}


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
    progress: bool | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainResult:
    """Train ``model`` with AdamW and a cosine learning-rate decay over all steps.

    Args:
        progress: show a tqdm bar per epoch; ``None`` shows it only on a terminal.
        on_epoch: called with each epoch's record (loss, validation accuracy, time).
    """
    from tqdm.auto import tqdm

    model.to(device)
    x = torch.as_tensor(x_train).to(device)
    y = torch.as_tensor(y_train).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = -(-len(y) // batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
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
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach() * len(idx)
        seconds = time.perf_counter() - start
        result.seconds += seconds
        result.samples += len(y)
        record = EpochRecord(epoch, float(loss_sum) / len(y), accuracy(model, x_val, y_val, device=device),
                             seconds, optimizer.param_groups[0]["lr"])
        result.history.append(record)
        if on_epoch:
            on_epoch(record)
    return result
