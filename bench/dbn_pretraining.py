"""Does RBM pretraining help a deep belief network when labels are scarce? One run, same budget.

Both runs fine-tune the same architecture (784-500-500-10 sigmoid MLP) on the same N labelled
MNIST images with the same seed, optimizer and epochs; one first pretrains its RBM stack with CD-1
on all 54,000 training images *without their labels*, the other starts from random weights.
Reports test accuracy on the 10,000 MNIST test images.

    python bench/dbn_pretraining.py [--labels 1000] [--data-dir ../shared/data/mnist]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
from common import SHARED_MNIST


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", type=int, default=1000)
    ap.add_argument("--data-dir", default=str(SHARED_MNIST))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from dlforge.data import load_dataset
    from dlforge.train import checkpoint_from_training

    full = load_dataset("mnist", args.data_dir)
    pick = np.random.default_rng(args.seed).choice(len(full.y_train), args.labels, replace=False)
    scarce = dataclasses.replace(full, x_train=full.x_train[pick], y_train=full.y_train[pick])
    print(f"dbn on {args.labels} labelled MNIST images (pretraining sees all {len(full.y_train)} images, unlabelled)")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, pretrain_epochs in (("without pretraining", 0), ("with RBM pretraining", 3)):
            start = time.perf_counter()
            ckpt = checkpoint_from_training("dbn", Path(tmp) / name.replace(" ", "-"), dataset=scarce, seed=args.seed,
                                            overrides={"pretrain_epochs": pretrain_epochs},
                                            pretrain_data=full.x_train, progress=False)
            m = ckpt.card.sections["metrics"]
            results[name] = m["test_accuracy"]
            print(f"{name:<22} test accuracy {m['test_accuracy']:.4f}  ({len(m['history'])} fine-tuning epochs, "
                  f"{time.perf_counter() - start:.0f} s in all)")
    gain = results["with RBM pretraining"] - results["without pretraining"]
    print(f"pretraining changes test accuracy by {gain * 100:+.2f} points")


if __name__ == "__main__":
    main()
