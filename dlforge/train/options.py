"""``TrainOptions``: every setting of the training stage, its default, its help and its checks."""

from __future__ import annotations

import os

from dlforge.errors import InputError
from dlforge.options import Options, dataclass, option

ADV_TRAIN_METHODS = ("fgsm", "pgd")
DEVICES = ("cpu", "cuda")


@dataclass
class TrainOptions(Options):
    """Options of :func:`dlforge.train.checkpoint_from_training`; ``None`` takes the model's default.

    The card records ``params()`` with the model's defaults filled in, so a checkpoint says exactly
    how it was trained.
    """

    data: str = option("digits", "digits, mnist, fashion-mnist, or a .npz file with x and y.", nonempty=True)
    data_dir: str | os.PathLike | None = option(None, "Directory of the IDX files (MNIST, Fashion-MNIST).")
    epochs: int | None = option(None, "Passes over the data (default: the model's).", min=1)
    batch_size: int | None = option(None, "Images per step (default: the model's).", min=1)
    lr: float | None = option(None, "Peak learning rate, AdamW with cosine decay (default: the model's).",
                              min=0, min_open=True)
    weight_decay: float | None = option(None, "Decoupled weight decay, AdamW (default: the model's).", min=0)
    seed: int = option(0, "Seed of the weight init, dropout and batch order.", min=0, max=2**32 - 1)
    device: str = option("cpu", "Where to train.", choices=DEVICES)
    adv_train: str | None = option(None, "Adversarial training: Goodfellow's FGSM mixed objective, or Madry's PGD.",
                                   choices=ADV_TRAIN_METHODS)
    adv_eps: float = option(0.25, "L-inf budget of --adv-train.", min=0, min_open=True, max=1)
    adv_steps: int = option(7, "PGD steps of --adv-train pgd.", min=1, max=1000)
    overrides: dict = option({}, "Architecture option as JSON, e.g. --set dropout=0.2 or --set hidden=[256,128] "
                             "(see `dlforge models --json`).",
                             flag="--set", cli=False)

    def check(self) -> None:
        if not isinstance(self.overrides, dict):
            raise InputError(f"--set expects KEY=VALUE pairs, got {self.overrides!r}")

    def params(self) -> dict:
        out = super().params()
        if not self.adv_train:  # the budget of an adversarial training that did not run is noise
            out["adv_eps"] = out["adv_steps"] = None
        return out
