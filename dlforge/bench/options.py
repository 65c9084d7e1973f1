"""``BenchOptions``: every setting of ``dlforge bench`` with its default and its checks (stdlib only)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from dlforge.errors import InputError
from dlforge.options import Options, flag_of, option

TRT_MODES = ("end-to-end", "compute")
# Bounds that keep a typo from running for days or allocating terabytes; far beyond any real use.
MAX_BATCH = 1 << 16
MAX_DURATION_S = 3600.0
MAX_WARMUP_S = 600.0
MAX_CALLS = 1_000_000
_WHOLE_NUMBERS = ("batch_sizes", "warmup", "iterations", "rounds", "threads")


@dataclass
class BenchOptions(Options):
    """How ``run_bench`` measures: what is timed, for how long, and what is reported beside it."""

    batch_sizes: tuple[int, ...] = option((1, 8, 64), "Comma-separated batch sizes.", min=1, max=MAX_BATCH,
                                          nonempty=True)
    warmup: int = option(10, "Warm-up calls per artifact and batch size (at least).", min=0, max=MAX_CALLS)
    warmup_time: float = option(0.2, "Warm-up seconds per artifact and batch size (at least).", min=0,
                                max=MAX_WARMUP_S)
    iterations: int = option(50, "Timed calls per artifact and batch size (at least).", min=0, max=MAX_CALLS)
    duration: float = option(1.0, "Timed seconds per artifact and batch size (at least).", min=0,
                             max=MAX_DURATION_S)
    rounds: int = option(5, "Interleaved rounds per batch size.", min=1, max=1000)
    threads: int | None = option(None, "Intra-op threads (default: the backend's choice).", min=1, max=1024)
    random_inputs: bool = option(False, "Random inputs instead of real held-out images.")
    trt_mode: str = option("end-to-end", "Engines with device-resident sessions (TensorRT): time host copies "
                           "too, or device-resident compute only. Ignored, with a note, for other engines.",
                           choices=TRT_MODES)
    cuda_graph: bool = option(False, "Replay the enqueue as a captured CUDA graph where the engine's session "
                              "can (TensorRT); ignored, with a note, elsewhere.")
    torch_checkpoint: str | os.PathLike | None = option(None, "Add eager PyTorch on this checkpoint as a "
                                                        "baseline row.", flag="--torch")
    accuracy: bool = option(False, "Also measure held-out accuracy of each classifier.")
    data: str | None = option(None, "Dataset for inputs and accuracy (default: each model's own).")
    data_dir: str | os.PathLike | None = option(None, "Directory of the dataset's files.")
    baseline: str | None = option(None, "Artifact the speedup column is relative to (default: the first).")

    def check(self) -> None:
        for f in fields(self):
            if f.name not in _WHOLE_NUMBERS:
                continue
            value = getattr(self, f.name)
            for item in value if isinstance(value, tuple) else (value,):
                if item is not None and (isinstance(item, bool) or not isinstance(item, int)):
                    raise InputError(f"{flag_of(f)} must be a whole number, got {item!r}")
        if self.iterations == 0 and self.duration == 0:
            raise InputError("--iterations and --duration are both zero: nothing would be timed; set one of them")
