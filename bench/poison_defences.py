"""Poison defences as published, on the fp32 and the INT8 engine: BadNets at 10% on MNIST, one run.

Trains LeNet (the model's default epochs) on the full 60,000 MNIST training images, clean and
poisoned, deploys fp32 and INT8 ONNX Runtime engines, and runs activation clustering, spectral
signatures and STRIP on each engine through ``run_poison`` (the ``dlforge poison`` pipeline). Prints
C-Acc / ASR / R-Acc per model and engine, TPR / FPR against the true poisoned indices (AC, SS),
FRR / FAR on a held-out set disjoint from the one that set STRIP's boundary, and whether each
detection survives quantization.

    python bench/poison_defences.py [--mode single|all-to-all] [--rate 0.1] [--ss-eps EPS] [--no-retrain]
                                    [--json FILE] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import SHARED_MNIST

from dlforge.adversarial.poisoning.report import table
from dlforge.adversarial.poisoning.run import run_poison
from dlforge.progress import LineProgress


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(SHARED_MNIST))
    ap.add_argument("--mode", default="single", choices=["single", "all-to-all"])
    ap.add_argument("--rate", type=float, default=0.1)
    ap.add_argument("--ac-reduce", default="pca", choices=["pca", "ica"])
    ap.add_argument("--ss-eps", type=float, default=None, help="spectral signatures' eps (default: dlforge's, ART's bound 0.33; "
                                                                   "the true --rate is an oracle)")
    ap.add_argument("--epochs", type=int, default=None, help="default: the model's")
    ap.add_argument("--retrain", action=argparse.BooleanOptionalAction, default=True,
                    help="retrain without each training-set defence's fp32 flags")
    ap.add_argument("--json", help="also write the full report here")
    ap.add_argument("--keep", help="run in this directory and keep it (default: a temporary one)")
    args = ap.parse_args()
    if not Path(args.data_dir).is_dir():
        raise SystemExit(f"MNIST not found at {args.data_dir}; pass --data-dir")

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dlforge-bench-poison-") as tmp:
        report = run_poison("lenet", Path(args.keep or Path(tmp) / "run"), data="mnist", data_dir=args.data_dir,
                            attack="badnets", mode=args.mode, rate=args.rate, epochs=args.epochs,
                            ac_reduce=args.ac_reduce, retrain=args.retrain, **({} if args.ss_eps is None else {"ss_eps": args.ss_eps}),
                            progress=LineProgress(lambda s: print(f"[{time.perf_counter() - start:6.0f}s] {s}", flush=True),
                                                  bars=False))
    print()
    print(table(report))
    print(f"\n{time.perf_counter() - start:.0f} s in all")
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_json(), indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
