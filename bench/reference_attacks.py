"""dlforge's attacks against torchattacks' (and ART's PGD) on one checkpoint: robust accuracy side by side.

Same model, same first N test points of the checkpoint's own dataset, same eps, same seed of the
random start where the reference draws it from torch's generator. Prints robust accuracy of each
pair, the difference, and seconds per attack. The AutoAttack reference is torchattacks' components
with AutoAttack's standard settings (FAB-T 100 iterations, alpha_max 0.1; Square 5,000 queries,
p_init 0.8, no schedule rescaling), as in tests/adversarial/test_reference_attacks.py.

    python bench/reference_attacks.py --checkpoint runs/mnist/checkpoint [--samples 1000] [--eps 0.1]
        [--attacks pgd,apgd-ce,apgd-t,fab-t,autoattack]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--attacks", default="pgd,apgd-ce,apgd-t,fab-t,autoattack")
    args = ap.parse_args()

    import torchattacks as ta

    from dlforge.adversarial.attacks import Target, make_attack
    from dlforge.train.checkpoint import attack_model
    from dlforge.artifact import dataset_spec, open_artifact
    from dlforge.data import load_spec

    ckpt = open_artifact(args.checkpoint, ["checkpoint"])
    spec = dataset_spec(ckpt)
    ds = load_spec(spec._replace(data_dir=args.data_dir or spec.data_dir))
    tm = attack_model(ckpt)
    model, eps = tm.model, args.eps
    x = torch.from_numpy(ds.x_test[:args.samples].astype(np.float32))
    y = torch.from_numpy(ds.y_test[:args.samples]).long()

    def robust(x_adv):
        with torch.no_grad():
            return float((model(x_adv).argmax(1) == y).float().mean())

    references = {
        "pgd": lambda: ta.PGD(model, eps=eps, alpha=2.5 * eps / 40, steps=40, random_start=True),
        "apgd-ce": lambda: ta.APGD(model, eps=eps, steps=100, loss="ce", seed=0),
        "apgd-t": lambda: ta.APGDT(model, eps=eps, steps=100, n_classes=10, seed=0),
        "fab-t": lambda: ta.FAB(model, eps=eps, steps=100, multi_targeted=True, n_classes=10, alpha_max=0.1, seed=0),
        "autoattack": lambda: ta.MultiAttack([
            ta.APGD(model, eps=eps, steps=100, loss="ce", seed=0),
            ta.APGDT(model, eps=eps, steps=100, n_classes=10, seed=0),
            ta.FAB(model, eps=eps, steps=100, multi_targeted=True, n_classes=10, alpha_max=0.1, seed=0),
            ta.Square(model, eps=eps, n_queries=5000, p_init=0.8, resc_schedule=False, seed=0)]),
    }
    names = args.attacks.split(",")
    unknown = [n for n in names if n not in references]
    if unknown:
        raise SystemExit(f"no reference for {', '.join(unknown)}; --attacks takes {', '.join(references)}")
    print(f"{ckpt.path}: {len(y)} test points, eps {eps:g}, clean accuracy {robust(x):.4f}")
    print(f"{'attack':<12}{'dlforge':>9}{'reference':>11}{'diff':>8}{'s dlforge':>11}{'s ref':>8}")
    for name in names:
        t = time.perf_counter()
        if name == "autoattack":
            ours = robust(torch.from_numpy(make_attack(name).craft(Target.of(tm), x.numpy(), y.numpy(), eps=eps).x_adv))
        else:
            ours = robust(make_attack(name).run(model, x, y, eps=eps))
        t_ours = time.perf_counter() - t
        torch.manual_seed(0)
        t = time.perf_counter()
        theirs = robust(references[name]()(x, y))
        t_ref = time.perf_counter() - t
        print(f"{name:<12}{ours:>9.4f}{theirs:>11.4f}{ours - theirs:>+8.4f}{t_ours:>11.1f}{t_ref:>8.1f}")


if __name__ == "__main__":
    main()
