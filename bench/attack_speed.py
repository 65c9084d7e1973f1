"""dlforge's FGSM and PGD-10 against minimal plain-PyTorch implementations: examples/second, one run.

Same model (LeNet), same inputs, same batch size, same random start; the plain versions are the
textbook loops (``loss.backward()`` on a model whose parameters still require gradients). dlforge
differs only in doing less: parameters are frozen and only the input gradient is taken
(``torch.autograd.grad``). Runs alternate; medians are compared. Goal: >= 1.3x with identical
robust accuracy.

    python bench/attack_speed.py [--run runs/lenet] [--samples 1024] [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import SHARED_MNIST, attack_parser, parse_attack_args


def plain_fgsm(model, x, y, eps):
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y)
    model.zero_grad()
    loss.backward()
    return (x + eps * x.grad.sign()).clamp(0, 1).detach()


def plain_pgd(model, x, y, eps, steps, seed):
    generator = torch.Generator(device=x.device).manual_seed(seed)
    noise = torch.empty_like(x).uniform_(-1.0, 1.0, generator=generator)
    x_adv = (x + eps * noise).clamp(0, 1)
    alpha = 2.5 * eps / steps
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        model.zero_grad()
        loss.backward()
        x_adv = x_adv.detach() + alpha * x_adv.grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


def batched(fn, x, y, batch):
    return torch.cat([fn(x[i:i + batch], y[i:i + batch]) for i in range(0, len(x), batch)])


def main() -> None:
    args = parse_attack_args(attack_parser(__doc__, samples=1024, run_help="a dlforge pipeline directory (checkpoint/)"))

    from dlforge.adversarial.attacks.fgsm import FGSM
    from dlforge.adversarial.attacks.pgd import PGD
    from dlforge.train.checkpoint import attack_model
    from dlforge.artifact import open_artifact
    from dlforge.data import load_dataset
    from dlforge.train import checkpoint_from_training, load_checkpoint

    tmp = tempfile.TemporaryDirectory(prefix="dlforge-bench-")
    if args.run:
        ckpt = open_artifact(Path(args.run) / "checkpoint", ["checkpoint"])
    else:
        data = {"data": "mnist", "data_dir": SHARED_MNIST, "epochs": 1} if SHARED_MNIST.is_dir() else {"data": "digits"}
        print(f"training lenet on {data['data']} for the benchmark ...")
        ckpt = checkpoint_from_training("lenet", Path(tmp.name) / "ckpt", progress=False, **data)
    ds = load_dataset(ckpt.card.params["data"], ckpt.card.params.get("data_dir"))
    x_np, y_np = ds.x_test[: args.samples], ds.y_test[: args.samples]
    x, y = torch.from_numpy(x_np).to(args.device), torch.from_numpy(y_np).to(args.device)
    ours = attack_model(ckpt, args.device)
    plain_model, _ = load_checkpoint(ckpt)
    plain_model = copy.deepcopy(plain_model).eval().to(args.device)  # parameters keep requires_grad=True
    eps = 0.25
    print(f"lenet on {ds.name}: {len(y)} images, batch {args.batch_size}, eps {eps}, device {args.device}, "
          f"{torch.get_num_threads()} threads, {args.rounds} alternating rounds")

    cases = {
        "FGSM": (lambda: ours.attack(FGSM(), x_np, y_np, eps=eps, value_range=(0, 1), batch_size=args.batch_size),
                 lambda: batched(lambda a, b: plain_fgsm(plain_model, a, b, eps), x, y, args.batch_size).cpu().numpy()),
        "PGD-10": (lambda: ours.attack(PGD(steps=10, seed=0), x_np, y_np, eps=eps, value_range=(0, 1),
                                       batch_size=args.batch_size),
                   lambda: batched(lambda a, b: plain_pgd(plain_model, a, b, eps, 10, 0), x, y,
                                   args.batch_size).cpu().numpy()),
    }
    for name, (dl, plain) in cases.items():
        times = {"dlforge": [], "plain": []}
        for _ in range(args.rounds):
            for label, fn in (("dlforge", dl), ("plain", plain)):
                start = time.perf_counter()
                adv = fn()  # both return host arrays: the device work is complete when they return
                times[label].append(time.perf_counter() - start)
                acc = float((ours.predict(adv).argmax(1) == y_np).mean())
                times.setdefault(f"{label}_acc", acc)
        rate = {k: len(y) / statistics.median(times[k]) for k in ("dlforge", "plain")}
        ratio = rate["dlforge"] / rate["plain"]
        same = times["dlforge_acc"] == times["plain_acc"]
        print(f"{name:<7} dlforge {rate['dlforge']:8.0f} ex/s  plain {rate['plain']:8.0f} ex/s  speedup {ratio:.2f}x  "
              f"robust accuracy {times['dlforge_acc']:.4f} vs {times['plain_acc']:.4f} "
              f"({'identical' if same else 'DIFFERENT'}; {'meets' if ratio >= 1.3 and same else 'MISSES'} the goal)")
    tmp.cleanup()


if __name__ == "__main__":
    main()
