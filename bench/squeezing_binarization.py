"""Why 1-bit feature squeezing keeps its detection rate on MNIST under adaptive attack.

Feature squeezing (Xu et al. 2018, ``bits=1``) flags an input when the engine's softmax on it differs from its softmax
on the binarized input. Its squeezed branch is therefore a classifier of its own: the engine behind a binarization.
To evade it, an L-inf attack must fool the engine while the binarized engine still answers alike, so it must fool the
binarized engine too. This script measures that classifier's robust accuracy: PGD-100 (step 2.5 eps / 100, three
random restarts, a point counts as robust only if no restart fools it) through the binarization by BPDA (the
straight-through identity), on the engine's own differentiable graph, for each engine and eps. Where it is high, the
detector's surviving TPR is what a robust classifier implies, not a weak attack; by Tramer's reduction (ICML 2022)
a detector robust at eps implies a classifier robust at eps/2, and this one exists.

    python bench/squeezing_binarization.py ENGINE [ENGINE ...] --data-dir ../shared/data/mnist [--samples 300]
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    import torch

    from dlforge.adversarial.engine_graph import engine_graph
    from dlforge.artifact import DatasetSpec
    from dlforge.data import load_spec
    from dlforge.runtime import open_deployed

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engines", nargs="+")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--eps", default="0.1,0.2,0.3")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--restarts", type=int, default=3)
    args = parser.parse_args()
    ds = load_spec(DatasetSpec("mnist", args.data_dir))
    x, y = ds.x_test[:args.samples].astype(np.float32), ds.y_test[:args.samples]
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    for path in args.engines:
        engine = open_deployed(path)
        graph = engine_graph(engine, x, noise=0.3, value_range=(0.0, 1.0))
        if graph.model is None:
            raise SystemExit(f"{path}: no differentiable graph ({graph.reason})")
        module = graph.model.model

        def binarized(z):
            return module(z + (torch.round(z) - z).detach())

        with torch.no_grad():
            clean = (binarized(xt).argmax(1) == yt).float().mean().item()
        for eps in (float(e) for e in args.eps.split(",")):
            robust = torch.ones(len(x), dtype=torch.bool)
            for restart in range(args.restarts):
                torch.manual_seed(restart)
                xa = (xt + (torch.rand_like(xt) * 2 - 1) * eps).clamp(0, 1)
                for _ in range(args.steps):
                    xa.requires_grad_(True)
                    (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(binarized(xa), yt), xa)
                    xa = torch.min(torch.max(xa.detach() + 2.5 * eps / args.steps * grad.sign(), xt - eps), xt + eps)
                    xa = xa.clamp(0, 1)
                with torch.no_grad():
                    robust &= binarized(xa).argmax(1) == yt
            print(f"{engine.label}: binarized-input classifier, clean {clean:.3f}, robust at eps {eps:g}: "
                  f"{robust.float().mean().item():.3f} (PGD-{args.steps} through BPDA, {args.restarts} restarts, "
                  f"{len(x)} test images)")


if __name__ == "__main__":
    main()
