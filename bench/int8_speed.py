"""INT8 against fp32 on this CPU, per zoo model: batch 1 and 64, 1 and 2 threads, in one run.

For each model: dlforge's fp32 engine (ONNX Runtime, offline-optimized) and INT8 engine (QDQ, uint8
asymmetric activations, int8 per-channel weights), beside two other INT8 graphs of the same model
calibrated on the same images:

* ``s8s8``: signed symmetric activations, the form dlforge built before and TensorRT needs;
* ``ort-u8s8``: ONNX Runtime's own ``quantize_static`` (QDQ, QUInt8 activations, QInt8 weights,
  its defaults otherwise: per-tensor, MinMax), the peer.

Every ratio is fp32 median latency / INT8 median latency, measured in alternating rounds (fp32,
int8, s8s8, ort-u8s8, fp32, ...) after a warm-up, so the machine's drift hits all alike. The goal
on the MNIST LeNet: dlforge INT8 >= 2x fp32 at batch 64.

    python bench/int8_speed.py [--models lenet,mlp] [--data digits] [--epochs 1] [--rounds 7]

By default each model is trained for one epoch on MNIST (../shared/data), or on digits when that
is absent; ``--onnx DIR`` (repeatable) measures existing onnx artifacts instead.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from common import SHARED_MNIST

ZOO = ("mlp", "lenet", "lstm", "dbn", "transformer", "autoencoder")


def peer_quantize(src: Path, dst: Path, calib_x: np.ndarray) -> None:
    """ONNX Runtime's quantize_static with uint8 activations and int8 weights, its other defaults."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from dlforge.precision.qdq import _Reader

    prepared = dst.with_name("peer-prepared.onnx")
    quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
    quantize_static(str(prepared), str(dst), _Reader("input", calib_x, 64), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def graphs(onnx_dir: Path, work: Path) -> dict[str, Path]:
    """fp32 / int8 (dlforge engines) and s8s8 / ort-u8s8 graphs of one onnx artifact."""
    from dlforge.artifact import open_artifact
    from dlforge.build import engine_from_onnx
    from dlforge.build.engine import _build_data
    from dlforge.build.options import BuildOptions
    from dlforge.precision import quantize_int8

    out = {}
    for precision in ("fp32", "int8"):
        out[precision] = engine_from_onnx(onnx_dir, work / precision, precision=precision,
                                          data_dir=str(SHARED_MNIST) if SHARED_MNIST.is_dir() else None,
                                          eval_samples=200).payload_path
    parent = open_artifact(onnx_dir, ["onnx"])
    calib = _build_data(parent, BuildOptions(precision="int8", data_dir=str(SHARED_MNIST)
                                              if SHARED_MNIST.is_dir() else None))["calibration"].calib_x
    out["s8s8"] = work / "s8s8.onnx"
    quantize_int8(parent.payload_path, out["s8s8"], calib, activations="int8")
    out["ort-u8s8"] = work / "ort-u8s8.onnx"
    peer_quantize(parent.payload_path, out["ort-u8s8"], calib)
    return out


def measure(paths: dict[str, Path], shape: tuple, batch: int, threads: int, rounds: int) -> dict[str, float]:
    """Median ms per graph at ``batch`` with ``threads`` intra-op threads, alternating rounds."""
    import onnxruntime as ort

    from dlforge.bench.stats import time_calls, warm_up

    x = np.random.default_rng(0).random((batch, *shape), dtype=np.float32)
    calls = {}
    for name, path in paths.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feeds = {session.get_inputs()[0].name: x}
        calls[name] = lambda s=session, f=feeds: s.run(None, f)
    for call in calls.values():
        warm_up(call, iterations=20, duration_s=0.3)
    samples = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            samples[name].append(time_calls(call, iterations=5, duration_s=0.15))
    return {name: float(np.median(np.concatenate(s))) for name, s in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(ZOO))
    ap.add_argument("--data", default=None, help="training data (default: mnist when ../shared/data has it, else digits)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--onnx", action="append", default=[], help="an onnx artifact to measure (repeatable)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    from dlforge.artifact import open_artifact
    from dlforge.export import onnx_from_checkpoint
    from dlforge.reporting import Column, format_table
    from dlforge.train import checkpoint_from_training
    from dlforge.train.options import TrainOptions

    data = args.data or ("mnist" if SHARED_MNIST.is_dir() else "digits")
    rows = []
    with tempfile.TemporaryDirectory(prefix="dlforge-int8-speed-") as tmp:
        onnx_dirs = [Path(d) for d in args.onnx]
        if not onnx_dirs:
            for model in args.models.split(","):
                print(f"training {model} on {data} for {args.epochs} epoch(s) ...", flush=True)
                train = TrainOptions(data=data, data_dir=str(SHARED_MNIST) if data == "mnist" else None,
                                     epochs=args.epochs)
                ckpt = checkpoint_from_training(model, Path(tmp) / model / "checkpoint", train)
                onnx_dirs.append(onnx_from_checkpoint(ckpt.path, Path(tmp) / model / "onnx").path)
        for onnx_dir in onnx_dirs:
            artifact = open_artifact(onnx_dir, ["onnx"])
            name = f"{artifact.card.model.name} ({artifact.card.model.dataset or '?'})"
            work = Path(tmp) / f"graphs-{len(rows)}"
            work.mkdir()
            paths = graphs(onnx_dir, work)
            shape = tuple(artifact.card.model.inputs[0].shape[1:])
            for batch in (1, 64):
                for threads in (1, 2):
                    ms = measure(paths, shape, batch, threads, args.rounds)
                    row = {"model": name, "batch": batch, "threads": threads, "fp32_ms": ms["fp32"],
                           **{f"{k}_x": ms["fp32"] / ms[k] for k in ("int8", "s8s8", "ort-u8s8")}}
                    rows.append(row)
                    print(f"  {name} batch {batch} threads {threads}: int8 {row['int8_x']:.2f}x", flush=True)
    ratio = lambda v: f"{v:.2f}x"  # noqa: E731
    print(format_table(rows, [Column("model"), Column("batch", align=">"), Column("threads", align=">"),
                              Column("fp32_ms", "fp32 ms", ".4f", ">"), Column("int8_x", "dlforge int8", ratio, ">"),
                              Column("s8s8_x", "s8s8", ratio, ">"), Column("ort-u8s8_x", "ORT u8s8", ratio, ">")]))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
