"""Checkpoint artifacts: train a zoo model and save it; load one back without running its code.

Weights are stored with safetensors (a flat tensor file: loading it cannot execute code); the
architecture is rebuilt from the zoo by the name and config recorded in the card.
"""

from __future__ import annotations

import os

from typing import Callable

from dlforge.artifact import Artifact, ArtifactWriter, Card, ModelInfo, TensorSpec, open_artifact
from dlforge.data import Dataset, load_dataset
from dlforge.env import environment
from dlforge.errors import ArtifactError, InputError, require

WEIGHTS = "model.safetensors"


def model_info_for(name: str, task: str, dataset: Dataset, config: dict) -> ModelInfo:
    """The card's description of a zoo model trained on ``dataset``."""
    out_shape = ("batch", dataset.num_classes) if task == "classification" else ("batch", *dataset.input_shape)
    return ModelInfo(
        name=name,
        task=task,
        inputs=(TensorSpec("input", ("batch", *dataset.input_shape), "float32"),),
        outputs=(TensorSpec("logits" if task == "classification" else "reconstruction", out_shape, "float32"),),
        value_range=(0.0, 1.0),
        labels=dataset.labels,
        dataset=dataset.name,
        preprocessing="pixels scaled to [0, 1] (uint8 / 255); no mean/std normalization",
        config=config,
    )


def resolve_device(device: str) -> str:
    import torch

    if device not in ("cpu", "cuda"):
        raise InputError(f"unknown device {device!r}; expected cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device cuda, but torch {torch.__version__} sees no CUDA device; use --device cpu")
    return device


def checkpoint_from_training(
    model: str,
    out_dir: str | os.PathLike,
    *,
    data: str = "digits",
    data_dir: str | os.PathLike | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    overrides: dict | None = None,
    force: bool = False,
    progress: bool | None = None,
    on_epoch: Callable | None = None,
    dataset: Dataset | None = None,
    adv_train: str | None = None,
    adv_eps: float = 0.25,
    adv_steps: int = 7,
    pretrain_data=None,
    on_message: Callable[[str], None] = lambda line: None,
) -> Artifact:
    """Train zoo model ``model`` on ``data`` and write a checkpoint artifact to ``out_dir``.

    Settings left as ``None`` take the model's defaults. Every input is checked, and the output
    directory claimed, before any data is loaded or any step is taken. ``dataset`` trains on an
    in-memory dataset (e.g. a poisoned one) instead of loading ``data``; ``adv_train`` (``"fgsm"`` or
    ``"pgd"``) with ``adv_eps`` turns on adversarial training. Models with a pretraining phase (the
    DBN) pretrain on ``pretrain_data`` (unlabelled images; default: the training images) first.
    """
    from dlforge_models import create_model, get_entry

    entry = get_entry(model)
    _check_positive(epochs=epochs, batch_size=batch_size, lr=lr)
    if weight_decay is not None and weight_decay < 0:
        raise InputError(f"--weight-decay must be >= 0, got {weight_decay}")
    device = resolve_device(device)
    if adv_train not in (None, "fgsm", "pgd"):
        raise InputError(f"unknown adversarial training {adv_train!r}; expected fgsm or pgd")
    if adv_train and not 0 < adv_eps <= 1:
        raise InputError(f"--adv-eps must be within (0, 1], got {adv_eps}")
    if adv_train and entry.task != "classification":
        raise InputError(f"adversarial training needs a classifier; {model} is a {entry.task} model")
    with ArtifactWriter(out_dir, force=force) as writer:
        dataset = dataset if dataset is not None else load_dataset(data, data_dir)
        defaults = entry.defaults
        settings = {
            "epochs": epochs or defaults.epochs_for(len(dataset.y_train)),
            "batch_size": batch_size or defaults.batch_size,
            "lr": lr or defaults.lr,
            "weight_decay": defaults.weight_decay if weight_decay is None else weight_decay,
        }
        from dlforge.train.loop import accuracy, fit, reconstruction_mse, seed_everything

        seed_everything(seed)
        try:
            net = create_model(model, input_shape=dataset.input_shape, num_classes=dataset.num_classes,
                               **(overrides or {}))
        except ValueError as exc:
            raise InputError(f"cannot build {model} for {dataset.name}: {exc}") from exc
        pretraining = None
        if entry.pretrain is not None and net.config.get("pretrain_epochs", 0) > 0:
            net.to(device)
            pretraining = entry.pretrain(net, dataset.x_train if pretrain_data is None else pretrain_data,
                                         batch_size=settings["batch_size"], seed=seed, device=device,
                                         progress=progress, report=on_message)
        result = fit(net, dataset.x_train, dataset.y_train, dataset.x_val, dataset.y_val,
                     seed=seed, device=device, progress=progress, on_epoch=on_epoch, adv_train=adv_train,
                     adv_eps=adv_eps, adv_steps=adv_steps, task=entry.task, **settings)
        if entry.task == "classification":
            quality = {"test_accuracy": round(accuracy(net, dataset.x_test, dataset.y_test, device=device), 6)}
        else:
            mean_image = dataset.x_train.mean(0, keepdims=True)
            quality = {"test_accuracy": None,
                       "test_mse": round(reconstruction_mse(net, dataset.x_test, device=device), 6),
                       "mean_image_mse": round(float(((dataset.x_test - mean_image) ** 2).mean()), 6)}
        save_weights(net, writer.file(WEIGHTS))
        card = Card(
            kind="checkpoint",
            payload=WEIGHTS,
            model=model_info_for(model, entry.task, dataset, net.config),
            params={"model": model, "data": data, "data_dir": str(data_dir) if data_dir else None,
                    "seed": seed, "device": device, "overrides": overrides or {}, **settings,
                    "adv_train": {"method": adv_train, "eps": adv_eps,
                                  "steps": adv_steps if adv_train == "pgd" else None} if adv_train else None},
            env=environment(),
            sections={"dataset": dataset.describe(), "metrics": {
                **quality,
                **({"pretraining": pretraining} if pretraining else {}),
                "train_seconds": round(result.seconds, 3),
                "samples_per_s": round(result.samples_per_s, 1),
                "history": [r.to_dict() for r in result.history],
            }},
        )
        return writer.commit(card)


def save_weights(model, path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt"})


def load_checkpoint(path: str | os.PathLike | Artifact):
    """Rebuild a checkpoint's model from the zoo and load its weights; returns ``(model, artifact)``.

    The model is returned in eval mode on the CPU.
    """
    require("safetensors", "toolkit", "loading a checkpoint")
    from safetensors.torch import load_file

    from dlforge_models import create_model

    artifact = path if isinstance(path, Artifact) else open_artifact(path, ["checkpoint"])
    info = artifact.card.model
    config = dict(info.config)
    model = create_model(info.name, input_shape=config.pop("input_shape"),
                         num_classes=config.pop("num_classes"), **config)
    try:
        model.load_state_dict(load_file(str(artifact.payload_path)), strict=True)
    except (RuntimeError, OSError) as exc:
        raise ArtifactError(f"{artifact.path}: weights do not fit model {info.name} "
                            f"({str(exc).splitlines()[0]}); retrain the checkpoint") from exc
    return model.eval(), artifact


def _check_positive(**values) -> None:
    for name, value in values.items():
        if value is not None and value <= 0:
            flag = "--" + name.replace("_", "-")
            raise InputError(f"{flag} must be positive, got {value}")


