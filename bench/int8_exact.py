"""What exact INT8 costs on this CPU: ONNX Runtime's U8S8 kernels against its U8U8 ones and 7-bit weights.

On an x86 CPU without VNNI/AMX, ONNX Runtime's U8S8 kernels saturate int16 pair sums of full-range int8
weights. dlforge keeps engines exact two ways; this script measures both, side by side, in one run:

* the ONNX Model Zoo's INT8 MobileNetV2 (full-range weights, ../shared/data), on the 20 sample photographs:
  U8S8 (ONNX Runtime's default) against U8U8 (``session.x64quantprecision``, what dlforge's sessions ask for
  on such a CPU): top-1, max logit difference from the graph's exact integer arithmetic (dlforge's QOperator
  converter), and median latency at batch 1 and 20 in interleaved rounds;
* the digits LeNet built as INT8 with full-range weights (``--reduce-range off``) and with 7-bit weights
  (``on``, the default on such a CPU), both on U8S8: held-out accuracy, top-1 disagreement with each graph's
  exact arithmetic, and latency.

    python bench/int8_exact.py [--rounds 7] [--threads 1]

On a CPU with VNNI every "exact" column is exact for both and the latencies compare the kernels only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def session(path: Path, exact_kernels: bool, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    if exact_kernels:
        options.add_session_config_entry("session.x64quantprecision", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def graph_logits(path: Path, x: np.ndarray) -> np.ndarray:
    """The graph's own integer arithmetic (dlforge's ONNX -> torch converter, equal to ORT's where it is exact)."""
    import torch

    from dlforge.onnx_torch import torch_module_from_onnx

    with torch.no_grad():
        return torch_module_from_onnx(path)(torch.from_numpy(x)).numpy()


def interleaved_ms(sessions: dict, feeds: dict, rounds: int, calls: int) -> dict[str, float]:
    """Median milliseconds per call of each session, rounds alternating between them."""
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for name, s in sessions.items():  # warm-up
        for _ in range(3):
            s.run(None, feeds[name])
    for _ in range(rounds):
        for name, s in sessions.items():
            start = time.perf_counter()
            for _ in range(calls):
                s.run(None, feeds[name])
            times[name].append((time.perf_counter() - start) / calls * 1e3)
    return {name: float(np.median(t)) for name, t in times.items()}


def mobilenet(rounds: int, threads: int | None) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.test_onnx_qoperator import imagenet_photographs

    path = SHARED / "onnx-models" / "mobilenetv2-12-int8.onnx"
    x, labels = imagenet_photographs(sorted(p.name for p in (SHARED / "imagenet-samples").glob("*.jpg")))
    exact = graph_logits(path, x)
    kernels = {"U8S8": session(path, False, threads), "U8U8": session(path, True, threads)}
    print(f"INT8 MobileNetV2 (ONNX Model Zoo, full-range weights), {len(x)} photographs; the graph's exact "
          f"arithmetic gets {(exact.argmax(1) == labels).sum()}/{len(x)}")
    for name, s in kernels.items():
        out = s.run(None, {"input": x})[0]
        print(f"  {name}: top-1 {(out.argmax(1) == labels).sum()}/{len(x)}, max |logit - exact| "
              f"{np.abs(out - exact).max():.3f}")
    for batch in (1, len(x)):
        feeds = {name: {"input": x[:batch]} for name in kernels}
        ms = interleaved_ms(kernels, feeds, rounds, calls=20 if batch == 1 else 3)
        print(f"  batch {batch}: U8S8 {ms['U8S8']:.2f} ms, U8U8 {ms['U8U8']:.2f} ms: U8U8 / U8S8 = "
              f"{ms['U8U8'] / ms['U8S8']:.2f}x the time")


def lenet(rounds: int, threads: int | None) -> None:
    from dlforge.build import engine_from_onnx
    from dlforge.data import load_dataset
    from dlforge.export import onnx_from_checkpoint
    from dlforge.train import checkpoint_from_training

    digits = load_dataset("digits")
    x, y = digits.x_test, digits.y_test
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = checkpoint_from_training("lenet", Path(tmp) / "ckpt", data="digits", progress=False)
        onnx = onnx_from_checkpoint(ckpt.path, Path(tmp) / "onnx")
        engines = {f"reduce_range {s}": engine_from_onnx(onnx.path, Path(tmp) / s, precision="int8", reduce_range=s)
                   for s in ("off", "on")}
        sessions = {name: session(e.payload_path, False, threads) for name, e in engines.items()}
        name_in = sessions["reduce_range off"].get_inputs()[0].name
        print(f"digits LeNet INT8 on U8S8, {len(x)} held-out images")
        for name, s in sessions.items():
            out = s.run(None, {name_in: x})[0]
            exact = graph_logits(engines[name].payload_path, x)
            print(f"  {name}: accuracy {(out.argmax(1) == y).mean():.4f}, top-1 disagreement with its graph "
                  f"{(out.argmax(1) != exact.argmax(1)).mean():.4f}, max |logit - graph| {np.abs(out - exact).max():.3f}")
        for batch in (1, 64):
            ms = interleaved_ms(sessions, {n: {name_in: x[:batch]} for n in sessions}, rounds, 200 if batch == 1 else 20)
            print(f"  batch {batch}: full range {ms['reduce_range off']:.3f} ms, 7-bit {ms['reduce_range on']:.3f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    from dlforge.env import cpu_flags, cpu_model, int8_saturates

    print(f"CPU {cpu_model()}, flags {', '.join(cpu_flags()) or 'none of note'}: U8S8 saturates full-range "
          f"weights here: {'yes' if int8_saturates() else 'no'}")
    if (SHARED / "onnx-models" / "mobilenetv2-12-int8.onnx").is_file():
        mobilenet(args.rounds, args.threads)
    else:
        print(f"(no {SHARED}/onnx-models: MobileNetV2 skipped)")
    lenet(args.rounds, args.threads)


if __name__ == "__main__":
    main()
