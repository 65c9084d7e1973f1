"""dlforge's training loop vs a minimal hand-written PyTorch loop: samples/second, one run.

Both train the same zoo model from the same initial weights on the same data with the same
optimizer and batch size; the runs alternate (dlforge, plain, dlforge, plain, ...) so that machine
drift hits both equally, and the median of each is compared. Goal: ratio >= 0.95.

    python bench/train_speed.py [--model lenet] [--rounds 5] [--data-dir ../shared/data/mnist]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch
from common import SHARED_MNIST
from torch import nn

from dlforge.data import load_dataset
from dlforge.train.loop import fit
from dlforge_models import create_model


def plain_loop(model, x, y, *, batch_size, lr, seed):
    """The textbook loop: shuffle, slice, forward, backward, step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    model.train()
    start = time.perf_counter()
    order = torch.randperm(len(y), generator=generator)
    for i in range(0, len(y), batch_size):
        idx = order[i:i + batch_size]
        optimizer.zero_grad()
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        optimizer.step()
    return len(y) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="lenet")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--samples", type=int, default=12800, help="training images per epoch")
    ap.add_argument("--data-dir", default=str(SHARED_MNIST))
    args = ap.parse_args()

    data = load_dataset("mnist", args.data_dir) if Path(args.data_dir).is_dir() else load_dataset("digits")
    x = torch.from_numpy(data.x_train[: args.samples])
    y = torch.from_numpy(data.y_train[: args.samples])
    torch.manual_seed(0)
    initial = create_model(args.model, input_shape=data.input_shape, num_classes=data.num_classes)
    batch_size, lr = 64, 1e-3
    print(f"{args.model} on {data.name}: {len(y)} images/epoch, batch {batch_size}, {torch.get_num_threads()} threads")

    dl_rates, plain_rates = [], []
    for r in range(-1, args.rounds):  # round -1 warms up allocators and kernels; it is not counted
        m = copy.deepcopy(initial)
        result = fit(m, x.numpy(), y.numpy(), data.x_val[:1], data.y_val[:1], epochs=1, batch_size=batch_size,
                     lr=lr, seed=max(r, 0), progress=False)
        plain = plain_loop(copy.deepcopy(initial), x, y, batch_size=batch_size, lr=lr, seed=max(r, 0))
        if r < 0:
            continue
        dl_rates.append(result.samples_per_s)
        plain_rates.append(plain)
        print(f"round {r + 1}: dlforge {dl_rates[-1]:8.0f} samples/s   plain {plain_rates[-1]:8.0f} samples/s")
    dl, plain = statistics.median(dl_rates), statistics.median(plain_rates)
    ratio = dl / plain
    print(f"median: dlforge {dl:.0f} samples/s, plain {plain:.0f} samples/s, ratio {ratio:.3f} "
          f"({'meets' if ratio >= 0.95 else 'MISSES'} the >= 0.95 goal)")


if __name__ == "__main__":
    main()
