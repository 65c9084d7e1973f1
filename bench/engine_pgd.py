"""PGD on an engine's own graph (dlforge.onnx_torch) against PGD on the PyTorch source: examples/second.

Same LeNet, same inputs, same PGD (dlforge's, L-inf, random start, same seed), same batch size;
only the differentiated module differs: the source checkpoint's ``nn.Module``, or the fp32 / INT8
ONNX Runtime engine's graph converted to torch (straight-through gradients through INT8
quantize/dequantize). Rounds alternate; medians are compared. Robust accuracy is judged on the
engine each module stands for. Goal: fp32 engine graph >= 0.8x the source's examples/second.

    python bench/engine_pgd.py [--run runs/lenet] [--samples 512] [--steps 10] [--rounds 5]
"""

from __future__ import annotations

import statistics
import tempfile
import time

import torch
from common import attack_parser, lenet_run, parse_attack_args


def main() -> None:
    ap = attack_parser(__doc__, samples=512,
                       run_help="a dlforge pipeline directory (checkpoint/, engine-ort-fp32/, engine-ort-int8/)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--eps", type=float, default=0.3)
    args = parse_attack_args(ap)

    from dlforge.adversarial.attacks.pgd import PGD
    from dlforge.adversarial.attacks.torch_model import TorchModel
    from dlforge.train.checkpoint import attack_model
    from dlforge.artifact import open_artifact
    from dlforge.data import load_training_data
    from dlforge.onnx_torch import torch_module_from_onnx
    from dlforge.runtime.deployed import open_deployed

    tmp = tempfile.TemporaryDirectory(prefix="dlforge-bench-")
    run = lenet_run(args.run, tmp.name)
    ckpt = open_artifact(run / "checkpoint", ["checkpoint"])
    ds = load_training_data(ckpt)
    x, y = ds.x_test[:args.samples], ds.y_test[:args.samples]
    engines = {p: open_deployed(run / f"engine-ort-{p}") for p in ("fp32", "int8")}
    models = {"source": (attack_model(ckpt, args.device), engines["fp32"]),
              **{f"{p} engine graph": (TorchModel(torch_module_from_onnx(e.artifact.payload_path), args.device), e)
                 for p, e in engines.items()}}
    attack = PGD(steps=args.steps, seed=0)
    print(f"lenet on {ds.name}: {len(y)} images, PGD-{args.steps} eps {args.eps}, batch {args.batch_size}, "
          f"device {args.device}, {torch.get_num_threads()} threads, {args.rounds} alternating rounds")
    times: dict[str, list[float]] = {name: [] for name in models}
    robust: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, (model, judge) in models.items():
            start = time.perf_counter()
            adv = model.attack(attack, x, y, eps=args.eps, value_range=(0.0, 1.0), batch_size=args.batch_size)
            times[name].append(time.perf_counter() - start)
            robust[name] = float((judge.predict(adv).argmax(1) == y).mean())
    rate = {name: len(y) / statistics.median(t) for name, t in times.items()}
    for name in models:
        ratio = rate[name] / rate["source"]
        goal = "" if name != "fp32 engine graph" else f"  ({'meets' if ratio >= 0.8 else 'MISSES'} the >= 0.8x goal)"
        print(f"{name:<18} {rate[name]:8.0f} ex/s  {ratio:5.2f}x source  robust accuracy on its engine "
              f"{robust[name]:.4f}{goal}")
    for e in engines.values():
        e.close()
    tmp.cleanup()


if __name__ == "__main__":
    main()
