"""dlforge's Session vs raw onnxruntime, and the ORT fp32 engine vs eager PyTorch, in one run.

1. ``Session.run`` against ``onnxruntime.InferenceSession.run`` on the same engine file at batch 1:
   the cost of dlforge's input validation. Goal: overhead <= 5%.
2. The ORT fp32 engine against eager PyTorch (the checkpoint) at batch 1 and 64: the speedup of
   compiling. Expected >= 3x at batch 1 for small CNNs on a CPU.

Each comparison alternates its contenders round by round (A B A B ...) so machine drift hits both,
and quotes medians. By default a LeNet is trained for one epoch on MNIST (../shared/data) or, when
that is absent, on digits; ``--run DIR`` reuses a ``dlforge pipeline`` directory instead.

    python bench/runtime_overhead.py [--run runs/lenet] [--rounds 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
from common import lenet_run


def interleaved(contenders: dict, rounds: int, iterations: int) -> dict[str, float]:
    """Median latency (ms) of each contender, timed in alternating rounds after a warm-up."""
    from dlforge.bench.stats import time_calls, warm_up

    for fn in contenders.values():
        warm_up(fn, iterations=50, duration_s=0.5)
    samples = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            samples[name].append(time_calls(fn, iterations=iterations))
    return {name: float(np.median(np.concatenate(s))) for name, s in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="a dlforge pipeline directory (checkpoint/ and engine-ort-fp32/)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads for ORT and torch")
    args = ap.parse_args()

    import onnxruntime as ort
    import torch

    from dlforge.runtime import open_session
    from dlforge.train import load_checkpoint

    tmp = tempfile.TemporaryDirectory(prefix="dlforge-bench-")
    run = lenet_run(args.run, tmp.name)
    engine_dir = run / "engine-ort-fp32"
    torch.set_num_threads(args.threads)
    session = open_session(engine_dir, threads=args.threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    raw = ort.InferenceSession(str(session.path), sess_options=options, providers=["CPUExecutionProvider"])
    model, _ = load_checkpoint(run / "checkpoint")
    shape = tuple(session.inputs[0].shape[1:])
    print(f"model: lenet {shape}, engine {engine_dir}, {args.threads} thread(s), "
          f"{args.rounds} rounds x {args.iterations} calls, medians")

    x1 = np.random.default_rng(0).random((1, *shape), dtype=np.float32)
    feeds = {"input": x1}
    med = interleaved({"dlforge Session.run": lambda: session.run(feeds),
                       "onnxruntime run": lambda: raw.run(None, feeds)}, args.rounds, args.iterations)
    overhead = med["dlforge Session.run"] / med["onnxruntime run"] - 1
    print(f"\n[1] batch 1: dlforge {med['dlforge Session.run'] * 1e3:.1f} us, raw onnxruntime "
          f"{med['onnxruntime run'] * 1e3:.1f} us -> overhead {overhead * 100:+.1f}% "
          f"({'meets' if overhead <= 0.05 else 'MISSES'} the <= 5% goal)")

    print("\n[2] ORT fp32 engine vs eager PyTorch")
    for batch in (1, 64):
        xb = np.random.default_rng(1).random((batch, *shape), dtype=np.float32)
        xt = torch.from_numpy(xb)

        def eager():
            with torch.inference_mode():
                model(xt)

        med = interleaved({"ort": lambda: session.run({"input": xb}), "torch": eager},
                          args.rounds, max(20, args.iterations // batch))
        print(f"    batch {batch:>3}: ORT {med['ort']:.4f} ms, eager torch {med['torch']:.4f} ms -> "
              f"speedup {med['torch'] / med['ort']:.2f}x")
    tmp.cleanup()


if __name__ == "__main__":
    main()
