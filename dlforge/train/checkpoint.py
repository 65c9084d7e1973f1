"""Checkpoint artifacts: train a zoo model and save it; load one back without running its code.

Weights are stored with safetensors (a flat tensor file: loading it cannot execute code); the
architecture is rebuilt from the zoo by the name and config recorded in the card.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Callable

from dlforge.artifact import Artifact, ArtifactWriter, Card, ModelInfo, TensorSpec, open_artifact
from dlforge.env import environment
from dlforge.errors import ArtifactError, InputError, require
from dlforge.train.architecture import build_model, check_architecture
from dlforge.train.options import TrainOptions

if TYPE_CHECKING:  # numpy and the datasets load when a model trains, not when the CLI starts
    from dlforge.data import Dataset

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
    options: TrainOptions | None = None,
    *,
    force: bool = False,
    progress: bool | None = None,
    on_epoch: Callable | None = None,
    on_message: Callable[[str], None] = lambda line: None,
    dataset: Dataset | None = None,
    pretrain_data=None,
    **settings,
) -> Artifact:
    """Train zoo model ``model`` and write a checkpoint artifact to ``out_dir``.

    ``options`` (or ``settings``, the same fields as keywords: ``epochs=3``) says how; settings left
    as ``None`` take the model's defaults. Every input is checked, and the output directory
    claimed, before any data is loaded or any step is taken. ``dataset`` trains on an in-memory
    dataset (e.g. a poisoned one) instead of loading ``options.data``. Models with a pretraining
    phase (the DBN) pretrain on ``pretrain_data`` (unlabelled images; default: the training images).

    Raises:
        InputError: a bad option, model, architecture override or dataset (nothing is written).
        StageFailed: the training diverged (nothing is written).
    """
    from dlforge_models import get_entry

    from dlforge.data import load_dataset

    options = TrainOptions.build(options, **settings)
    entry = get_entry(model)
    check_architecture(entry, options.overrides)
    resolve_device(options.device)
    if options.adv_train and entry.task != "classification":
        raise InputError(f"--adv-train needs a classifier; {model} is a {entry.task} model")
    with ArtifactWriter(out_dir, force=force) as writer:
        dataset = dataset if dataset is not None else load_dataset(options.data, options.data_dir,
                                                                         input_shape=options.input_shape)
        options = _with_model_defaults(options, entry, len(dataset.y_train))
        from dlforge.train.loop import seed_everything

        seed_everything(options.seed)
        net = build_model(entry, dataset, options.overrides)
        metrics = _train(net, entry, dataset, options, progress=progress, on_epoch=on_epoch,
                         on_message=on_message, pretrain_data=pretrain_data)
        save_weights(net, writer.file(WEIGHTS))
        card = Card(kind="checkpoint", payload=WEIGHTS, model=model_info_for(model, entry.task, dataset, net.config),
                    params={"model": model, **options.params()}, env=environment(),
                    sections={"dataset": dataset.describe(), "metrics": metrics})
        return writer.commit(card)


def _with_model_defaults(options: TrainOptions, entry, n_train: int) -> TrainOptions:
    """``options`` with every setting left as ``None`` replaced by the model's default."""
    d = entry.defaults
    return dataclasses.replace(
        options,
        epochs=options.epochs or d.epochs_for(n_train),
        batch_size=options.batch_size or d.batch_size,
        lr=options.lr or d.lr,
        weight_decay=d.weight_decay if options.weight_decay is None else options.weight_decay,
    )


def _train(net, entry, dataset: Dataset, options: TrainOptions, *, progress, on_epoch, on_message,
           pretrain_data) -> dict:
    """Pretrain (where the model has a phase for it), fit, and measure: the card's ``metrics``."""
    from dlforge.train.loop import fit

    pretraining = None
    if entry.pretrain is not None and net.config.get("pretrain_epochs", 0) > 0:
        net.to(options.device)
        pretraining = entry.pretrain(net, dataset.x_train if pretrain_data is None else pretrain_data,
                                     batch_size=options.batch_size, seed=options.seed, device=options.device,
                                     progress=progress, report=on_message)
    objective = None
    if options.adv_train:
        from dlforge.train.adversarial import adversarial_objective

        objective = adversarial_objective(options.adv_train, options.adv_eps, options.adv_steps)
    result = fit(net, dataset.x_train, dataset.y_train, dataset.x_val, dataset.y_val, epochs=options.epochs,
                 batch_size=options.batch_size, lr=options.lr, weight_decay=options.weight_decay, seed=options.seed,
                 device=options.device, progress=progress, on_epoch=on_epoch, objective=objective, task=entry.task)
    return {
        **_test_quality(net, entry.task, dataset, options.device),
        **({"pretraining": pretraining} if pretraining else {}),
        "train_seconds": round(result.seconds, 3),
        "samples_per_s": round(result.samples_per_s, 1),
        "history": [r.to_dict() for r in result.history],
    }


def _test_quality(net, task: str, dataset: Dataset, device: str) -> dict:
    from dlforge.train.loop import accuracy, reconstruction_mse

    if task == "classification":
        return {"test_accuracy": round(accuracy(net, dataset.x_test, dataset.y_test, device=device), 6)}
    mean_image = dataset.x_train.mean(0, keepdims=True)
    return {"test_accuracy": None,
            "test_mse": round(reconstruction_mse(net, dataset.x_test, device=device), 6),
            "mean_image_mse": round(float(((dataset.x_test - mean_image) ** 2).mean()), 6)}


def save_weights(model, path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt"})


def load_checkpoint(path: str | os.PathLike | Artifact):
    """Rebuild a checkpoint's model from the zoo and load its weights; returns ``(model, artifact)``.

    The model is returned in eval mode on the CPU.

    Raises:
        ArtifactError: the card does not describe a zoo model, or the weights are not a safetensors
            file that fits it.
    """
    require("safetensors", "toolkit", "loading a checkpoint")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    artifact = path if isinstance(path, Artifact) else open_artifact(path, ["checkpoint"])
    model = _model_from_card(artifact)
    try:
        state = load_file(str(artifact.payload_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{artifact.payload_path} is not a safetensors weights file "
                            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                            "retrain the checkpoint") from exc
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, OSError) as exc:
        raise ArtifactError(f"{artifact.path}: weights do not fit model {artifact.card.model.name} "
                            f"({str(exc).splitlines()[0]}); retrain the checkpoint") from exc
    return model.eval(), artifact


def _model_from_card(artifact: Artifact):
    """The untrained zoo model a checkpoint's card describes."""
    from dlforge_models import create_model

    info = artifact.card.model
    if info is None or not isinstance(info.config, dict):
        raise ArtifactError(f"{artifact.path}/card.json has no model description; retrain the checkpoint")
    config = dict(info.config)
    try:
        return create_model(info.name, input_shape=config.pop("input_shape"), num_classes=config.pop("num_classes"),
                            **config)
    except InputError as exc:
        raise ArtifactError(f"{artifact.path}/card.json: {exc}") from exc
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ArtifactError(f"{artifact.path}/card.json: model.config does not build {info.name} "
                            f"({type(exc).__name__}: {exc}); retrain the checkpoint") from exc
