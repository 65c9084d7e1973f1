"""The model registry: ``@register_model`` factories, ``create_model`` and ``list_models``."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from importlib import metadata
from typing import Callable

from torch import nn

from dlforge.errors import InputError

ENTRY_POINT_GROUP = "dlforge.models"


@dataclass(frozen=True)
class TrainDefaults:
    """Training settings that suit a model; command-line flags override them.

    ``small_data_epochs`` applies to datasets under ``SMALL_DATASET`` training images (digits has
    1,294), which need more passes for the same number of optimizer steps.
    """

    epochs: int = 3
    small_data_epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0

    SMALL_DATASET = 10_000

    def epochs_for(self, n_train: int) -> int:
        return self.small_data_epochs if n_train < self.SMALL_DATASET else self.epochs


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: Callable[..., nn.Module]
    task: str
    summary: str
    defaults: TrainDefaults = field(default_factory=TrainDefaults)
    pretrain: Callable | None = None  # unsupervised pretraining run before fine-tuning (e.g. the DBN's RBMs)
    modality: str = "image"  # what it takes: "image" (C, H, W) or "audio" (1, samples)

    def options(self) -> dict:
        """The factory's architecture options and their defaults (beyond shape and classes)."""
        params = inspect.signature(self.factory).parameters
        return {k: p.default for k, p in params.items() if k not in ("input_shape", "num_classes")}


_REGISTRY: dict[str, ModelEntry] = {}
_plugins_loaded = False


def register_model(*, task: str = "classification", defaults: TrainDefaults | None = None,
                   pretrain: Callable | None = None, modality: str = "image"):
    """Register a factory ``fn(*, input_shape, num_classes, **options) -> nn.Module`` under its name.

    The factory's docstring's first line is the model's summary. The module it returns must carry
    a ``config`` dict from which ``create_model(name, **config)`` rebuilds it.
    """

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        known = _REGISTRY.get(fn.__name__)
        if known is not None and (known.factory.__module__, known.factory.__qualname__) != (fn.__module__,
                                                                                           fn.__qualname__):
            raise ValueError(f"model {fn.__name__!r} is already registered by {known.factory.__module__}; "
                             "rename the factory (a second registration would replace it silently)")
        _REGISTRY[fn.__name__] = ModelEntry(fn.__name__, fn, task, summary, defaults or TrainDefaults(), pretrain,
                                            modality)
        return fn

    return decorator


def _load_plugins() -> None:
    global _plugins_loaded
    if not _plugins_loaded:
        _plugins_loaded = True
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            ep.load()


def list_models() -> list[str]:
    _load_plugins()
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    _load_plugins()
    if name not in _REGISTRY:
        raise InputError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))} "
                         "(see `dlforge models`)")
    return _REGISTRY[name]


def create_model(name: str, *, input_shape, num_classes: int, **overrides) -> nn.Module:
    """Build model ``name`` for images of ``input_shape`` (C, H, W) and ``num_classes`` classes.

    Overrides left as ``None`` fall back to the model's defaults; unknown ones are an error.
    """
    entry = get_entry(name)
    options = entry.options()
    unknown = sorted(set(overrides) - set(options))
    if unknown:
        raise InputError(f"model {name!r} has no option {', '.join(unknown)}; "
                         f"its options are: {', '.join(options) or 'none'}")
    kwargs = {k: v for k, v in overrides.items() if v is not None}
    model = entry.factory(input_shape=tuple(int(s) for s in input_shape), num_classes=int(num_classes), **kwargs)
    if not isinstance(getattr(model, "config", None), dict):
        raise TypeError(f"model factory {name!r} must return a module with a `config` dict")
    return model
