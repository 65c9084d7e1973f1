"""What the benchmark scripts share: where MNIST is, and a LeNet run directory to measure."""

from __future__ import annotations

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
