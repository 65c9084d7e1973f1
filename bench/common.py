"""What the benchmark scripts share: where MNIST is, and a LeNet run directory to measure."""

from __future__ import annotations

import argparse
from pathlib import Path

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def lenet_run(run: str | None, tmp: str) -> Path:
    """The pipeline directory given with ``--run``, or a LeNet built now under ``tmp``: one epoch on
    MNIST when ../shared/data is beside the repository, else the digits default."""
    if run:
        return Path(run)
    from dlforge.pipeline import run_pipeline

    data = {"data": "mnist", "data_dir": SHARED_MNIST, "epochs": 1} if SHARED_MNIST.is_dir() else {"data": "digits"}
    print(f"building lenet on {data['data']} for the benchmark ...")
    path = Path(tmp) / "lenet"
    run_pipeline("lenet", path, bench=False, audit=False, **data)
    return path


def attack_parser(doc: str, *, samples: int, run_help: str) -> argparse.ArgumentParser:
    """The arguments the attack benchmarks share: which run, how many images, batch, rounds, threads, device."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--run", help=run_help)
    ap.add_argument("--samples", type=int, default=samples)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    return ap


def parse_attack_args(ap: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse, and apply ``--threads`` to torch before any work."""
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return args
