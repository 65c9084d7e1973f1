"""Architecture overrides (``--set key=value``): checked against the zoo model's own defaults.

A value must have the type of the option's default (a list of sizes for a tuple default, an
integer for an integer, a number for a float), and the model must then build: a value the
model's constructor rejects is the user's input, reported naming the key, not a crash.
"""

from __future__ import annotations

import json
import math

from dlforge.errors import InputError


def _expected(default) -> str | None:
    """What a value replacing ``default`` must be, or None when it is wrong for it."""
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a finite number"
    if isinstance(default, (tuple, list)):
        return "a list of positive integers such as " + json.dumps(list(default)).replace(" ", "")
    if isinstance(default, str):
        return "a string"
    return None


def _fits(default, value) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if isinstance(default, (tuple, list)):
        return (isinstance(value, (list, tuple)) and len(value) > 0
                and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value))
    if isinstance(default, str):
        return isinstance(value, str)
    return True  # no default to compare with (None): the model's constructor decides


def check_architecture(entry, overrides: dict) -> None:
    """Raise :class:`InputError` for a ``--set`` key the model does not have or a value of the wrong type."""
    options = entry.options()
    for key, value in overrides.items():
        if key not in options:
            raise InputError(f"--set {key}: model {entry.name!r} has no option {key!r}; its options are: "
                             f"{', '.join(f'{k}={json.dumps(v)}' for k, v in options.items()) or 'none'}")
        if not _fits(options[key], value):
            raise InputError(f"--set {key}={json.dumps(value)}: {entry.name}'s {key} must be "
                             f"{_expected(options[key])} (default {json.dumps(options[key])})")


def build_model(entry, dataset, overrides: dict):
    """The zoo model for ``dataset``'s images and classes with ``overrides`` applied.

    Raises:
        InputError: the model cannot be built from these overrides or for these images.
    """
    from dlforge_models import create_model

    audio = dataset.details.get("audio") or {}
    modality = "audio" if audio else "image"
    if getattr(entry, "modality", "image") != modality:
        hint = ("an audio dataset (--data keywords, speech-commands or a WAV folder)" if entry.modality == "audio"
                else "images (--data digits, mnist, cifar10 or an image folder), or an audio model such as kws")
        raise InputError(f"{entry.name} is an {entry.modality} model and {dataset.name} holds {modality}; train it "
                         f"on {hint}")
    kwargs = dict(overrides)
    if audio and "sample_rate" in entry.options():  # an in-graph front end is built for the data's rate
        rate = int(audio["sample_rate"])
        if kwargs.get("sample_rate", rate) != rate:
            raise InputError(f"--set sample_rate={kwargs['sample_rate']}: {dataset.name} is sampled at {rate} Hz and "
                             f"{entry.name}'s front end takes the data's rate; drop --set sample_rate")
        kwargs["sample_rate"] = rate
    try:
        return create_model(entry.name, input_shape=dataset.input_shape, num_classes=dataset.num_classes, **kwargs)
    except InputError:
        raise
    except (ValueError, TypeError, RuntimeError, IndexError, ZeroDivisionError) as exc:
        given = ", ".join(f"--set {k}={json.dumps(v)}" for k, v in overrides.items())
        what = f" with {given}" if given else ""
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot build {entry.name} for {dataset.name} (images {tuple(dataset.input_shape)}, "
                         f"{dataset.num_classes} classes){what}: {reason}; see `dlforge models --json` for "
                         f"{entry.name}'s options") from exc
