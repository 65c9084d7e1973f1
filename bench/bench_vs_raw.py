"""``dlforge bench`` against a hand-written minimal onnxruntime timing loop, in one process.

For each engine and batch size, dlforge's median latency is compared with the median of the
simplest honest loop over ``onnxruntime.InferenceSession.run`` (same file, same threads, same
input). The two alternate three times so drift hits both. Goal: agreement within 10%.

    python bench/bench_vs_raw.py [--run runs/lenet] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from common import lenet_run


def raw_median_ms(path: Path, x: np.ndarray, threads: int, calls: int) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for _ in range(50):
        session.run(None, {name: x})
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        session.run(None, {name: x})
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="a dlforge pipeline directory (engine-ort-fp32/, engine-ort-int8/)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from dlforge.bench import BenchOptions, run_bench
    from dlforge.data import load_dataset
    from dlforge.runtime import open_deployed

    tmp = tempfile.TemporaryDirectory(prefix="dlforge-bench-")
    run = lenet_run(args.run, tmp.name)
    engines = [run / "engine-ort-fp32", run / "engine-ort-int8"]
    options = BenchOptions(batch_sizes=(1, 64), threads=args.threads, iterations=200, duration=1.0)
    with open_deployed(engines[0]) as model:
        data_name, data_dir = model.training_data()
    test_images = load_dataset(data_name, data_dir).x_test
    ours: dict = {}
    raw: dict = {}
    for _ in range(args.repeats):
        report = run_bench(engines, options)
        for r in report.results:
            ours.setdefault((r["artifact"], r["batch_size"]), []).append(r["latency_ms"]["median"])
        for engine in engines:
            payload = engine / "model.onnx"
            for b in options.batch_sizes:
                x = np.ascontiguousarray(np.resize(test_images, (b, *test_images.shape[1:])))
                raw.setdefault((str(engine), b), []).append(raw_median_ms(payload, x, args.threads, 2000 // b))
    print(f"{'engine':<22}{'batch':>6}{'dlforge ms':>12}{'raw ms':>10}{'ratio':>8}")
    worst = 0.0
    for key in ours:
        a, b = statistics.median(ours[key]), statistics.median(raw[key])
        worst = max(worst, abs(a / b - 1))
        print(f"{Path(key[0]).name:<22}{key[1]:>6}{a:>12.4f}{b:>10.4f}{a / b:>8.3f}")
    print(f"largest disagreement {worst * 100:.1f}% ({'meets' if worst <= 0.10 else 'MISSES'} the <= 10% goal)")
    tmp.cleanup()


if __name__ == "__main__":
    main()
