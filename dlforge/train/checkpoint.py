"""Checkpoint artifacts: train a zoo model and save it; load one back without unpickling anything.

Weights are stored with safetensors (a flat tensor file: loading it cannot execute code). The card
says how the architecture is rebuilt: from the zoo by the name and config in its model section (the
default), or, for a model of the user's own (:mod:`dlforge.train.user_model`, card section
``architecture``), from a vetted ``torch.export`` program or by calling a factory the user named.
A card's ``normalization`` section puts a :class:`~dlforge.train.normalization.Normalize` in front
of the model on every route, so a checkpoint always takes pixels.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

from dlforge.adversarial.attacks.torch_model import resolve_device
from dlforge.artifact import Artifact, ArtifactWriter, Card, ModelInfo, TensorSpec, open_artifact
from dlforge.env import environment
from dlforge.errors import ArtifactError, InputError
from dlforge.progress import Progress, ProgressLike, as_progress
from dlforge.train.architecture import build_model, check_architecture
from dlforge.train.options import TrainOptions

if TYPE_CHECKING:  # numpy and the datasets load when a model trains, not when the CLI starts
    from dlforge.data import Dataset

WEIGHTS = "model.safetensors"


PIXELS = "pixels scaled to [0, 1] (uint8 / 255)"


def preprocessing_text(pixels: str, normalization: dict | None) -> str:
    """The card's ``preprocessing``: what the inputs are, and where the model normalizes them."""
    if not normalization:
        return f"{pixels}; no mean/std normalization"
    return (f"{pixels}; the model normalizes them itself, (x - mean) / std per channel with mean "
            f"{normalization['mean']} and std {normalization['std']} (inside the checkpoint and every export)")


def model_info_for(name: str, task: str, dataset: Dataset, config: dict,
                   normalization: dict | None = None) -> ModelInfo:
    """The card's description of a zoo model trained on ``dataset``."""
    out_shape = ("batch", dataset.num_classes) if task == "classification" else ("batch", *dataset.input_shape)
    audio = dataset.details.get("audio") or {}
    return ModelInfo(
        name=name,
        task=task,
        inputs=(TensorSpec("input", ("batch", *dataset.input_shape), "float32"),),
        outputs=(TensorSpec("logits" if task == "classification" else "reconstruction", out_shape, "float32"),),
        value_range=tuple(audio["value_range"]) if audio else (0.0, 1.0),
        labels=dataset.labels,
        dataset=dataset.name,
        preprocessing=(f"waveform at {audio['sample_rate']} Hz, each clip peak-normalized to {audio['peak']}"
                       if audio else preprocessing_text(PIXELS, normalization)),
        config=config,
        audio={k: audio[k] for k in ("sample_rate", "peak")} if audio else {},
    )


def attack_model(checkpoint: Artifact, device: str = "cpu"):
    """The checkpoint's classifier as the model gradient attacks are crafted on (a
    :class:`~dlforge.adversarial.attacks.torch_model.TorchModel`), rebuilt without running pickled code."""
    from dlforge.adversarial.attacks.torch_model import TorchModel  # torch, only when attacks are crafted

    if checkpoint.card.model is not None and checkpoint.card.model.task != "classification":
        raise InputError(f"{checkpoint.path} is a {checkpoint.card.model.task} model; attacks need a classifier")
    model, _ = load_checkpoint(checkpoint)
    return TorchModel(model, device)


def checkpoint_from_training(
    model: str,
    out_dir: str | os.PathLike,
    options: TrainOptions | None = None,
    *,
    force: bool = False,
    progress: ProgressLike = None,
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
    ``progress`` (:class:`~dlforge.progress.Progress`) receives the bars, each epoch and pretraining's lines.

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
    if options.normalize != "none" and entry.pretrain is not None:
        raise InputError(f"--normalize: {model} pretrains on pixels in [0, 1] (its RBMs model them as "
                         "probabilities); train it with --normalize none")
    with ArtifactWriter(out_dir, force=force) as writer:
        dataset = dataset if dataset is not None else load_dataset(options.data, options.data_dir,
                                                                         input_shape=options.input_shape,
                                                                         resample=options.resample)
        options = _with_model_defaults(options, entry, len(dataset.y_train))
        from dlforge.train.loop import seed_everything

        seed_everything(options.seed)
        net = build_model(entry, dataset, options.overrides)
        normalization = _normalization(options.normalize, dataset)
        metrics = _train(net, entry, dataset, options, progress=as_progress(progress), pretrain_data=pretrain_data,
                         normalization=normalization)
        save_weights(net, writer.file(WEIGHTS))
        if (metrics.get("pretraining") or {}).get("layers"):
            from dlforge.train.rbm_report import pretraining_html

            writer.file("pretraining.html").write_text(pretraining_html(metrics["pretraining"]), encoding="utf-8")
        card = Card(kind="checkpoint", payload=WEIGHTS,
                    model=model_info_for(model, entry.task, dataset, net.config, normalization),
                    params={"model": model, **options.params()}, env=environment(),
                    sections={"dataset": dataset.describe(), "metrics": metrics,
                              **({"normalization": normalization} if normalization else {})})
        return writer.commit(card)


def _normalization(spec: str, dataset: Dataset) -> dict | None:
    """``--normalize`` as the card's ``normalization`` section (``auto``: the training split's statistics)."""
    from dlforge.train.normalization import channel_statistics, normalization_section
    from dlforge.train.options import parse_normalize

    parsed = parse_normalize(spec, allow_auto=True)
    if parsed is None:
        return None
    mean, std = channel_statistics(dataset.x_train) if parsed == "auto" else parsed
    return normalization_section(mean, std, dataset.input_shape[0])


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


def _train(net, entry, dataset: Dataset, options: TrainOptions, *, progress: Progress, pretrain_data, normalization: dict | None = None) -> dict:
    """Pretrain (where the model has a phase for it), fit, and measure: the card's ``metrics``.

    With ``normalization``, the model is fitted and measured behind its :class:`Normalize` layer, as
    :func:`load_checkpoint` will return it; ``net`` keeps its own weights' names.
    """
    from dlforge.train.loop import fit
    from dlforge.train.normalization import with_normalization

    pretraining = None
    if entry.pretrain is not None and net.config.get("pretrain_epochs", 0) > 0:
        net.to(options.device)
        pretraining = entry.pretrain(net, dataset.x_train if pretrain_data is None else pretrain_data,
                                     batch_size=options.batch_size, seed=options.seed, device=options.device,
                                     progress=progress.bars, report=progress.message,
                                     held_out=dataset.x_val if pretrain_data is None else None)
    objective = None
    if options.adv_train:
        from dlforge.train.adversarial import objective_from_options

        objective = objective_from_options(options, steps_per_epoch=-(-len(dataset.y_train) // options.batch_size))
    model = with_normalization(net, normalization)
    result = fit(model, dataset.x_train, dataset.y_train, dataset.x_val, dataset.y_val, epochs=options.epochs,
                 batch_size=options.batch_size, lr=options.lr, weight_decay=options.weight_decay, seed=options.seed,
                 device=options.device, progress=progress, objective=objective, task=entry.task)
    return {
        **quality_metrics(model, entry.task, dataset, options.device),
        **({"pretraining": pretraining} if pretraining else {}),
        "train_seconds": round(result.seconds, 3),
        "samples_per_s": round(result.samples_per_s, 1),
        "history": [r.to_dict() for r in result.history],
    }


def quality_metrics(net, task: str, dataset: Dataset, device: str) -> dict:
    """The card's test-split metrics: accuracy for a classifier, reconstruction MSE (and the mean-image
    baseline's) for an autoencoder."""
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
    """Rebuild a checkpoint's model as its card says; returns ``(model, artifact)``.

    The card's ``architecture`` section names the route: none, the zoo (the model's name and config,
    weights from the safetensors payload); ``program``, the vetted ``torch.export`` program in the
    payload; ``factory``, the user's factory called with its recorded keyword arguments, weights from
    the payload. A ``normalization`` section puts its layer in front. Nothing is unpickled on any route.
    The model is returned in eval mode on the CPU.

    Raises:
        ArtifactError: the card does not say how to rebuild the model, the payload does not fit it,
            or (program) the archive holds anything not vouched for.
    """
    artifact = path if isinstance(path, Artifact) else open_artifact(path, ["checkpoint"])
    route = artifact.card.sections.get("architecture", {}).get("route", "zoo")
    if route == "zoo":
        model = _model_from_card(artifact)
        load_weights(model, artifact.payload_path, what=f"model {artifact.card.model.name}",
                     error=ArtifactError, fix="retrain the checkpoint")
    else:
        from dlforge.train.user_model import model_from_card

        model = model_from_card(artifact)
    from dlforge.train.normalization import with_normalization

    return with_normalization(model, artifact.card.sections.get("normalization")).eval(), artifact


def load_weights(model, path, *, what: str, error: type[InputError], fix: str) -> list[str]:
    """Load the weights file at ``path`` into ``model``, strictly (every key, every shape): safetensors, or a
    PyTorch state dict read without unpickling code (:mod:`dlforge.train.state_dict`, whose documented
    fix-ups apply first). Returns the fix-ups applied, as sentences for the card."""
    from dlforge.train.state_dict import fit_state_dict, read_state_dict

    expected = model.state_dict()
    try:
        state, fixups = fit_state_dict(read_state_dict(path, error=error, fix=fix), expected)
    except InputError as exc:
        if isinstance(exc, error):
            raise
        raise error(f"{path}: {exc}") from None
    problems = [f"missing key {k!r}" for k in expected if k not in state]
    problems += [f"unexpected key {k!r}" for k in state if k not in expected]
    problems += [f"{k!r} has shape {list(state[k].shape)}, the model's is {list(v.shape)}"
                 for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise error(f"weights {path} do not fit {what}: {problems[0]}{more}; {fix}")
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, OSError) as exc:
        raise error(f"weights {path} do not fit {what} ({str(exc).splitlines()[0]}); {fix}") from exc
    return fixups


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
