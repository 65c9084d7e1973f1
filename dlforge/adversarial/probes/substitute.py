"""The substitute-model black-box attack: learn an engine from its answers, then transfer attacks to it."""

from __future__ import annotations

import numpy as np

from dlforge.adversarial.attacks import Target, make_attack
from dlforge.adversarial.attacks.base import QUERIES
from dlforge.adversarial.probes.base import PROBES, Probe
from dlforge.adversarial.attacks.projection import project
from dlforge.errors import InputError
from dlforge.reporting import Column


ARCHITECTURES = ("auto", "cnn", "mlp")


def _cnn_side(n: int) -> int:
    return ((n - 2) // 2 - 2) // 2  # a 3x3 valid convolution and 2x2 pooling, twice


def resolve_arch(arch: str, shape: tuple) -> str:
    """``auto``: ``cnn`` for images of at least 10x10 pixels, else ``mlp``. Raises on a ``cnn`` that does not fit."""
    fits = len(shape) == 3 and min(_cnn_side(shape[1]), _cnn_side(shape[2])) >= 1
    if arch == "auto":
        return "cnn" if fits else "mlp"
    if arch == "cnn" and not fits:
        raise InputError(f"substitute:arch=cnn needs images of at least 10x10 pixels, the model takes "
                         f"{'x'.join(map(str, shape))}; use arch=mlp or arch=auto")
    return arch


def substitute_network(arch: str, shape: tuple, classes: int):
    """The attacker's network: ``mlp``, fully connected 200-200 (the reference tutorial's), or ``cnn``,
    two 3x3 convolutions of 32 and 64 filters, each max-pooled, then dense 200-200."""
    from torch import nn

    if arch == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(shape)), 200), nn.ReLU(), nn.Linear(200, 200),
                             nn.ReLU(), nn.Linear(200, classes))
    c, h, w = shape
    side = _cnn_side
    return nn.Sequential(nn.Conv2d(c, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * side(h) * side(w), 200), nn.ReLU(),
                         nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, classes))


@PROBES.register("substitute")
class SubstituteAttack(Probe):
    """Papernot et al.'s black-box attack: a substitute trained on the engine's top-1 answers, attacks transferred.

    Papernot, McDaniel, Goodfellow, Jha, Celik, Swami, "Practical Black-Box Attacks against Machine
    Learning", ASIACCS 2017, https://arxiv.org/abs/1602.02697 (Algorithm 1). Against each engine,
    with queries only: the attacker holds ``seeds`` images of its own (from the validation split, so
    none is an audited test point) and labels them by asking the engine for its top-1 class. For
    ``rounds`` rounds it trains the substitute on everything labelled so far and, between rounds,
    doubles the set by Jacobian-based augmentation: each point moves ``lam`` along the sign of the
    gradient of the substitute's probability of the point's label, and the new points are labelled
    by the engine. The sign of ``lam`` alternates with period ``tau`` (their periodic step size).
    Then FGSM and PGD at ``eps`` on the substitute, measured on the engine: misclassification
    (Papernot et al.'s success rate), robust accuracy and queries.

    Settings follow the authors' reference tutorial (cleverhans ``mnist_blackbox.py``): 150 seeds,
    6 rounds, lam 0.1, tau 3 (negative steps first), Adam at 1e-3, batch 128, 10 epochs per round,
    training continued across rounds. Deviations: the substitute is a small CNN where the images
    allow it (``arch=auto``; the tutorial's fully connected 200-200 is ``arch=mlp``): against dlforge's MNIST
    LeNet the MLP agreed with the engine on 76% of test points and its PGD examples fooled it 15% of
    the time, the CNN 93% and 71%, at the same 4,800 queries. The seeds are labelled by the engine,
    not with their true labels, so every label costs a query (``seeds * 2 ** (rounds - 1)``);
    augmented points are clipped to the value range.

    Args:
        arch: the substitute's network: ``auto`` (default: ``cnn`` for images of 10x10 pixels or more,
            else ``mlp``), ``cnn`` or ``mlp``.
        seeds: the attacker's initial images (default 150).
        rounds: substitute training rounds (default 6).
        lam: augmentation step, in value units (default 0.1).
        tau: period of the sign of lam, in rounds (default 3).
        epochs: substitute training epochs per round (default 10).
        eps: L-inf budget of the transferred attacks (default 0.3).
        seed: seed of the substitute's initialization and training order.
    """

    name = "substitute"
    requires = frozenset({QUERIES})
    columns = (Column("target", fmt=lambda t: t[:32]), Column("attack"), Column("eps", fmt="g", align=">"),
               Column("queries", "queries", "d", ">"), Column("agreement", "substitute agrees", ".4f", ">"),
               Column("attack_success_rate", "success", lambda v: "-" if v is None else f"{v:.4f}", ">"),
               Column("misclassification", "misclassified (all)", ".4f", ">"),
               Column("robust_accuracy", "robust acc", ".4f", ">"))

    def __init__(self, *, arch: str = "auto", seeds: int = 150, rounds: int = 6, lam: float = 0.1, tau: int = 3, epochs: int = 10,
                 eps: float = 0.3, seed: int = 0):
        if seeds < 1 or rounds < 1 or epochs < 1 or tau < 1:
            raise ValueError(f"seeds, rounds, epochs and tau must be >= 1, got {seeds}, {rounds}, {epochs}, {tau}")
        if lam <= 0 or eps < 0:
            raise ValueError(f"lam must be > 0 and eps >= 0, got lam {lam}, eps {eps}")
        self.seeds, self.rounds, self.lam, self.tau, self.epochs = seeds, rounds, lam, tau, epochs
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHITECTURES)}")
        self.eps, self.seed, self.arch = eps, seed, arch

    def prepare(self, run) -> None:
        resolve_arch(self.arch, run.x.shape[1:])
        if len(run.dataset.x_val) < self.seeds:
            raise InputError(f"substitute: the validation split has {len(run.dataset.x_val)} images, fewer than "
                             f"seeds={self.seeds}; pass substitute:seeds=N with N <= {len(run.dataset.x_val)}")

    def probe(self, run, show) -> dict:
        from dlforge.adversarial.attacks.torch_model import TorchModel

        rows = []
        x_seed = run.dataset.x_val[:self.seeds].astype(np.float32)
        for engine in run.engines:
            oracle = lambda z, e=engine: e.predict(z, run.options.batch_size).argmax(1)  # noqa: E731
            classes = engine.predict(x_seed[:1]).shape[1]
            module, queries = self.train_substitute(oracle, x_seed, classes, run.value_range,
                                                    lambda r, e=engine: show(f"{e.label}: round {r + 1}/{self.rounds}"))
            substitute = TorchModel(module)
            truth = run.clean[engine.label]
            agreement = float((substitute.predict(run.x).argmax(1) == truth).mean())
            correct = truth == run.y
            for spec in ("fgsm", "pgd"):
                show(f"{engine.label}: {spec} on the substitute")
                attack = make_attack(spec, seed=self.seed)
                x_adv = attack.craft(Target.of(substitute, run.options.batch_size), run.x, run.y, eps=self.eps,
                                     value_range=run.value_range).x_adv
                pred = engine.predict(project(x_adv, run.x, self.eps, "linf", run.value_range),
                                      run.options.batch_size).argmax(1)
                rows.append({"route": "substitute", "target": engine.label, "attack": spec, "eps": self.eps,
                             "queries": int(queries), "agreement": agreement,
                             # of the points the engine got right: the attack's own success (clean errors excluded)
                             "attack_success_rate": float((pred[correct] != run.y[correct]).mean())
                             if correct.any() else None,
                             # Papernot et al.'s measure, over every point (clean errors included), for the paper
                             "misclassification": float((pred != run.y).mean()),
                             "robust_accuracy": float((correct & (pred == run.y)).mean()),
                             "clean_accuracy": float(correct.mean())})
        return {"rows": rows, "gallery": [],
                "notes": [f"substitute: {self.seeds} seeds from the validation split, {self.rounds} rounds, "
                          f"lam {self.lam:g} (sign period {self.tau}); Papernot et al. report 84.24% misclassification "
                          "on MNIST against a remote model at eps 0.3 (MetaMind, 6,400 queries)"]}

    def train_substitute(self, oracle, x_seed: np.ndarray, classes: int, value_range: tuple[float, float],
                         on_round=None):
        """The trained substitute (a torch module in eval mode, ``classes`` outputs) and the queries it cost.
        ``oracle``: inputs -> the engine's top-1 class, the only answer the attacker sees (-1: the query was refused,
        and the point is left out)."""
        import torch
        from torch import nn

        lo, hi = value_range
        torch.manual_seed(self.seed)
        x, labels = x_seed.copy(), oracle(x_seed)
        queries = len(x)
        x, labels = x[labels >= 0], labels[labels >= 0]  # a refused query (label -1) teaches nothing
        module = substitute_network(resolve_arch(self.arch, x.shape[1:]), x.shape[1:], classes)
        opt = torch.optim.Adam(module.parameters(), lr=1e-3)
        order_rng = torch.Generator().manual_seed(self.seed)
        for rnd in range(self.rounds):
            if on_round is not None:
                on_round(rnd)
            module.train()
            xt, yt = torch.from_numpy(x), torch.from_numpy(labels).long()
            for _ in range(self.epochs):
                order = torch.randperm(len(xt), generator=order_rng)
                for i in range(0, len(xt), 128):
                    idx = order[i:i + 128]
                    opt.zero_grad()
                    nn.functional.cross_entropy(module(xt[idx]), yt[idx]).backward()
                    opt.step()
            if rnd == self.rounds - 1:
                break
            module.eval()
            step = self.lam * (1 if (rnd // self.tau) % 2 else -1)
            xg = xt.clone().requires_grad_(True)
            prob = torch.softmax(module(xg), 1)[torch.arange(len(xg)), yt]
            (grad,) = torch.autograd.grad(prob.sum(), xg)
            new = (xt + step * grad.sign()).clamp(lo, hi).numpy().astype(np.float32)
            answers = oracle(new)
            queries += len(new)
            x, labels = np.concatenate([x, new[answers >= 0]]), np.concatenate([labels, answers[answers >= 0]])
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
        return module, queries
