"""``dbn``: a deep belief network (Hinton, Osindero & Teh 2006; Hinton & Salakhutdinov 2006).

A stack of restricted Boltzmann machines is pretrained greedily, layer by layer, with contrastive
divergence (CD-k) on unlabelled images; the stack is then unrolled into a sigmoid MLP with a
softmax classifier on top and fine-tuned with backpropagation. It exports as that MLP.

``pcd=True`` pretrains with persistent contrastive divergence (Tieleman, ICML 2008: the negative chain is
kept across updates instead of restarting at the data). After every epoch each RBM is measured
(:mod:`dlforge.train.rbm`): its log-likelihood on training and held-out images (exact where the smaller
layer has at most 20 units, else Salakhutdinov & Murray's AIS estimate of log Z with ``ais_runs`` runs over
``ais_steps`` temperatures, with its standard error), the pseudo-log-likelihood and the free-energy gap, beside
the reconstruction error: the reconstruction error alone does not say whether CD converged.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch
from torch import nn

from dlforge_models._registry import TrainDefaults, register_model


class DBN(nn.Module):
    def __init__(self, input_shape, num_classes: int, hidden: tuple[int, ...], cd_k: int, pretrain_epochs: int,
                 pretrain_lr: float, pcd: bool = False, ais_runs: int = 100, ais_steps: int = 1000):
        super().__init__()
        if ais_runs < 0 or ais_runs == 1 or (ais_runs and ais_steps < 10):
            raise ValueError("ais_runs must be 0 (no likelihood estimate) or >= 2 (a standard error needs two runs), "
                             "and ais_steps >= 10")
        self.config = {"input_shape": list(input_shape), "num_classes": num_classes, "hidden": list(hidden),
                       "cd_k": cd_k, "pretrain_epochs": pretrain_epochs, "pretrain_lr": pretrain_lr, "pcd": pcd,
                       "ais_runs": ais_runs, "ais_steps": ais_steps}
        sizes = [math.prod(input_shape), *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.visible_bias = nn.ParameterList(nn.Parameter(torch.zeros(a)) for a in sizes[:-1])
        self.classifier = nn.Linear(sizes[-1], num_classes)

    def forward(self, x):
        h = x.flatten(1)
        for layer in self.layers:
            h = torch.sigmoid(layer(h))
        return self.classifier(h)


def cd_step(layer: nn.Linear, visible_bias: torch.Tensor, v0: torch.Tensor, k: int, lr: float,
            generator: torch.Generator, velocity: dict, momentum: float = 0.5, persistent: bool = False) -> float:
    """One CD-k update of an RBM whose weights are ``layer`` (hidden x visible) and biases; returns the
    batch's reconstruction error (mean squared, from one mean-field step from the data).

    ``persistent``: PCD (Tieleman 2008): the negative statistics come from persistent fantasy particles, binary
    visible states kept in ``velocity["chain"]`` across updates (as many as the first batch, started from it) and
    moved by ``k`` full Gibbs sweeps per update, not restarted at the data."""
    W, b_h = layer.weight, layer.bias
    h_prob0 = torch.sigmoid(v0 @ W.T + b_h)
    h = torch.bernoulli(h_prob0, generator=generator)
    error = float(((v0 - torch.sigmoid(h_prob0 @ W + visible_bias)) ** 2).mean())
    if persistent:
        v_prob = velocity.get("chain")
        if v_prob is None:
            v_prob = torch.bernoulli(v0.clamp(0, 1), generator=generator)
        for _ in range(k):
            h = torch.bernoulli(torch.sigmoid(v_prob @ W.T + b_h), generator=generator)
            v_prob = torch.bernoulli(torch.sigmoid(h @ W + visible_bias), generator=generator)
        h_prob = torch.sigmoid(v_prob @ W.T + b_h)
        velocity["chain"] = v_prob
    else:
        for _ in range(k):
            v_prob = torch.sigmoid(h @ W + visible_bias)
            h_prob = torch.sigmoid(v_prob @ W.T + b_h)
            h = torch.bernoulli(h_prob, generator=generator)
    n, m = len(v0), len(v_prob)
    grads = {"W": h_prob0.T @ v0 / n - h_prob.T @ v_prob / m, "b_h": h_prob0.mean(0) - h_prob.mean(0),
             "b_v": v0.mean(0) - v_prob.mean(0)}
    for name, param in (("W", W), ("b_h", b_h), ("b_v", visible_bias)):
        velocity[name] = momentum * velocity.get(name, torch.zeros_like(param)) + lr * grads[name]
        param.add_(velocity[name])
    return error


def rbm_figures(layer: nn.Linear, visible_bias: torch.Tensor, train: torch.Tensor, held_out: torch.Tensor | None,
                cfg: dict, seed: int, ais: bool) -> dict:
    """The likelihood figures of one RBM (:func:`dlforge.train.rbm.diagnostics`); the AIS estimate of log Z only
    when ``ais`` (the last epoch: it is the costly one) and ``ais_runs`` > 0, the exact log Z whenever the smaller
    layer has at most 20 units."""
    from dlforge.train.rbm import diagnostics

    ais = ais and bool(cfg.get("ais_runs", 100))
    W, b_v, b_h = (t.detach().double().cpu().numpy() for t in (layer.weight, visible_bias, layer.bias))
    from dlforge.train.rbm import default_schedule

    betas = default_schedule(int(cfg.get("ais_steps", 1000)))
    ref = train.double().cpu().numpy()
    other = held_out.double().cpu().numpy() if held_out is not None and len(held_out) else None
    figures = diagnostics(W, b_v, b_h, ref, other, runs=int(cfg.get("ais_runs", 100)), betas=betas, seed=seed,
                          ais=ais)
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in figures.items()}


def pretrain(model: DBN, x: np.ndarray, *, batch_size: int = 64, seed: int = 0, device: str = "cpu",
             progress: bool | None = None, report: Callable[[str], None] = lambda s: None,
             held_out: np.ndarray | None = None) -> dict:
    """Greedy layer-wise CD-k (or PCD-k) pretraining; returns, per layer and epoch, the reconstruction error and
    the likelihood figures of :func:`rbm_figures` (on ``x`` and on ``held_out``, e.g. the validation images)."""
    from tqdm.auto import tqdm

    cfg = model.config
    generator = torch.Generator(device=device).manual_seed(seed)
    data = torch.as_tensor(x, device=device).flatten(1)
    other = torch.as_tensor(held_out, device=device).flatten(1) if held_out is not None else None
    history = []
    with torch.no_grad():
        for i, (layer, vbias) in enumerate(zip(model.layers, model.visible_bias)):
            errors, figures = [], []
            velocity: dict = {}
            for epoch in range(cfg["pretrain_epochs"]):
                start = time.perf_counter()
                order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed + 1000 * i + epoch))
                total = 0.0
                steps = range(0, len(data), batch_size)
                for j in tqdm(steps, desc=f"pretrain RBM {i + 1} epoch {epoch + 1}", unit="batch", leave=False,
                              disable=None if progress is None else not progress):
                    total += cd_step(layer, vbias, data[order[j:j + batch_size].to(device)], cfg["cd_k"],
                                     cfg["pretrain_lr"], generator, velocity, momentum=0.5 if epoch < 5 else 0.9,
                                     persistent=cfg.get("pcd", False))
                errors.append(total / len(steps))
                figures.append(rbm_figures(layer, vbias, data, other, cfg, seed + epoch,
                                           ais=epoch == cfg["pretrain_epochs"] - 1))
                ll = figures[-1].get("log_likelihood_held_out")
                shown = "" if ll is None else (f", held-out log-likelihood {ll:.2f}" + (
                    f" (log Z {figures[-1]['log_z_method']}"
                    + (f" +- {figures[-1]['log_z_standard_error']:.2f}" if "log_z_standard_error" in figures[-1] else "")
                    + ")"))
                report(f"pretrain RBM {i + 1}/{len(model.layers)} epoch {epoch + 1}: reconstruction error "
                       f"{errors[-1]:.5f}{shown} ({time.perf_counter() - start:.1f} s)")
            history.append({"layer": i + 1, "visible": layer.in_features, "hidden": layer.out_features,
                            "reconstruction_error": [round(e, 6) for e in errors], "epochs": figures,
                            **({"final": figures[-1]} if figures and figures[-1] else {})})
            data = torch.sigmoid(data @ layer.weight.T + layer.bias)  # the next RBM learns these features
            if other is not None:
                other = torch.sigmoid(other @ layer.weight.T + layer.bias)
    return {"cd_k": cfg["cd_k"], "pcd": bool(cfg.get("pcd", False)), "epochs": cfg["pretrain_epochs"],
            "layers": history}


@register_model(defaults=TrainDefaults(epochs=10, small_data_epochs=60, batch_size=64, lr=1e-3), pretrain=pretrain)
def dbn(*, input_shape, num_classes, hidden=(500, 500), cd_k=1, pretrain_epochs=3, pretrain_lr=0.05, pcd=False,
        ais_runs=100, ais_steps=1000) -> nn.Module:
    """Deep belief network: RBMs pretrained with CD-k or PCD-k, unrolled into a sigmoid MLP and fine-tuned."""
    return DBN(input_shape, num_classes, tuple(hidden), cd_k, pretrain_epochs, pretrain_lr, pcd, ais_runs, ais_steps)
