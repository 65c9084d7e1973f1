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

    data: str = option("digits", "digits (embedded), mnist, fashion-mnist, cifar10, keywords (audio, synthesized), "
                       "speech-commands, a .npz file with x and y, an image folder (one sub-folder of PNG/JPEG images "
                       "per class) or a WAV folder (one sub-folder of clips per word).", nonempty=True)
    data_dir: str | os.PathLike | None = option(None, "Directory of the dataset's files (MNIST, Fashion-MNIST, "
                                                      "CIFAR-10).")
    image_size: tuple[int, int] | None = option(None, "Image folders: resize every image to H or HxW, bilinear "
                                                "(default: the images' own size, which must then agree).", min=1)
    channels: int | None = option(None, "Image folders: 1 (grayscale) or 3 (RGB) channels (default: 1 if every "
                                  "image is grayscale, else 3).", min=1, max=3)
    resample: bool = option(False, "Audio (speech-commands, WAV folders): resample clips of another sample rate to "
                                   "16 kHz (polyphase) instead of refusing them.")
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
    adv_warmup: int = option(0, "Epochs over which the eps of --adv-train ramps up linearly, step by step, from 0 to "
                             "--adv-eps (0: the full eps from the first step).", min=0, max=1000)
    normalize: str = option("none", "Normalization the model applies to its pixels, inside the checkpoint and every "
                            "export: none, auto (per-channel mean/std of the training split) or MEAN/STD, e.g. "
                            "0.1307/0.3081 or per channel 0.49,0.48,0.45/0.25,0.24,0.26.", nonempty=True)
    overrides: dict = option({}, "Architecture option as JSON, e.g. --set dropout=0.2 or --set hidden=[256,128] "
                             "(see `dlforge models --json`).",
                             flag="--set", cli=False)

    def check(self) -> None:
        if not isinstance(self.overrides, dict):
            raise InputError(f"--set expects KEY=VALUE pairs, got {self.overrides!r}")
        self.image_size = parse_image_size(self.image_size)
        if self.channels not in (None, 1, 3):
            raise InputError(f"--channels must be 1 (grayscale) or 3 (RGB), got {self.channels!r}")
        from dlforge.data.dataset import is_image_folder

        if (self.image_size or self.channels) and not is_image_folder(self.data):
            raise InputError(f"--image-size and --channels apply to image folders, and --data {self.data} is not "
                             "one: drop them, or pass --data FOLDER (./NAME for a folder named like a dataset)")
        parse_normalize(self.normalize, allow_auto=True)
        if self.adv_train:
            check_adv_warmup(self.adv_warmup, self.epochs)

    @property
    def input_shape(self) -> tuple[int | None, int | None, int | None] | None:
        """``(C, H, W)`` for an image folder, None where the images decide; None when neither is set."""
        if self.image_size is None and self.channels is None:
            return None
        return (self.channels, *(self.image_size or (None, None)))

    def params(self) -> dict:
        out = super().params()
        if not self.adv_train:  # the budget of an adversarial training that did not run is noise
            out["adv_eps"] = out["adv_steps"] = out["adv_warmup"] = None
        return out


def check_adv_warmup(warmup: int, epochs: int | None) -> None:
    """Refuse an eps warm-up that would take the whole training (``epochs`` None: not known yet)."""
    if warmup and epochs is not None and warmup >= epochs:
        raise InputError(f"--adv-warmup {warmup} must be fewer than --epochs {epochs}, or the training never runs "
                         f"an epoch at the full --adv-eps; lower --adv-warmup or raise --epochs")


def parse_image_size(value) -> tuple[int, int] | None:
    """``28`` / ``"28"`` / ``"28x32"`` (HxW) / ``(28, 32)`` as ``(H, W)``; None stays None."""
    if value is None:
        return None
    parts = value.lower().split("x") if isinstance(value, str) else value if isinstance(value, tuple) else (value,)
    sizes = [int(p) if isinstance(p, str) and p.strip().isdigit() else p for p in parts]
    if not (len(sizes) in (1, 2) and all(type(s) is int and s >= 1 for s in sizes)):
        raise InputError(f"--image-size expects H or HxW in pixels, e.g. 28 or 28x32, got {value!r}")
    return sizes[0], sizes[-1]


def parse_normalize(spec: str, *, allow_auto: bool = False,
                    flag: str = "--normalize") -> tuple[tuple[float, ...], tuple[float, ...]] | str | None:
    """``--normalize``'s value: None for ``none``, ``"auto"`` (where allowed), else ``(mean, std)``.

    ``MEAN/STD`` holds one number per channel on each side (``0.49,0.48,0.45/0.25,0.24,0.26``), or
    one number for every channel; std must be positive.
    """
    import math

    spec = str(spec).strip()
    if spec == "none":
        return None
    if spec == "auto" and allow_auto:
        return "auto"
    expected = (f"{flag} expects none{', auto' if allow_auto else ''} or MEAN/STD such as 0.1307/0.3081 "
                f"(per channel: 0.49,0.48,0.45/0.25,0.24,0.26), got {spec!r}")
    mean_text, sep, std_text = spec.partition("/")
    try:
        mean = tuple(float(v) for v in mean_text.split(","))
        std = tuple(float(v) for v in std_text.split(","))
    except ValueError:
        raise InputError(expected) from None
    if not sep or not all(math.isfinite(v) for v in mean + std):
        raise InputError(expected)
    if len(mean) != len(std) and 1 not in (len(mean), len(std)):
        raise InputError(f"{flag} {spec}: {len(mean)} means but {len(std)} standard deviations; give one per "
                         "channel on each side of the /")
    if min(std) <= 0:
        raise InputError(f"{flag} {spec}: a standard deviation must be positive")
    n = max(len(mean), len(std))
    return mean * (n // len(mean)), std * (n // len(std))
