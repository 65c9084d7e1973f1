"""The dlforge model zoo, installed as ``dlforge_models``.

One file per architecture; each registers a factory with :func:`register_model`. Build a model
with :func:`create_model` and list them with :func:`list_models`. Third-party packages add models
through the ``dlforge.models`` entry-point group.
"""

from dlforge_models._registry import (
    ModelEntry,
    TrainDefaults,
    create_model,
    get_entry,
    list_models,
    register_model,
)
from dlforge_models import autoencoder, dbn, kws, lenet, lstm, mlp, mobilenet, resnet, transformer  # noqa: F401  (each registers itself)

__all__ = ["ModelEntry", "TrainDefaults", "create_model", "get_entry", "list_models", "register_model"]
