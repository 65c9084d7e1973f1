"""Contract tests for every registered model: a new model is tested without new test code."""

import pytest
import torch

from dlforge.errors import InputError
from dlforge_models import create_model, get_entry, list_models

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]


def test_registry_lists_the_zoo():
    assert {"mlp", "lenet", "lstm", "dbn", "autoencoder", "transformer"} <= set(list_models())


IMAGE_MODELS = [m for m in list_models() if get_entry(m).modality == "image"]
AUDIO_MODELS = [m for m in list_models() if get_entry(m).modality == "audio"]
AUDIO_SHAPES = [(1, 16000), (1, 4000)]


@pytest.mark.parametrize("name, shape", [(m, s) for m in IMAGE_MODELS for s in SHAPES] +
                         [(m, s) for m in AUDIO_MODELS for s in AUDIO_SHAPES])
def test_builds_for_dataset_shape_and_trains_one_step(name, shape):
    torch.manual_seed(0)
    model = create_model(name, input_shape=shape, num_classes=10).eval()  # eval: no dropout or input noise
    x, y = torch.rand(16, *shape), torch.randint(0, 10, (16,))
    if get_entry(name).task == "classification":
        assert model(x).shape == (16, 10)
        loss_of = lambda: torch.nn.functional.cross_entropy(model(x), y)  # noqa: E731
    else:
        assert model(x).shape == x.shape
        loss_of = lambda: torch.nn.functional.mse_loss(model(x), x)  # noqa: E731
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loss = loss_of()
    loss.backward()
    trained = [p for p in model.parameters() if p.grad is not None]
    assert trained and all(torch.isfinite(p.grad).all() for p in trained)
    opt.step()
    with torch.no_grad():
        assert loss_of() < loss


@pytest.mark.parametrize("name", list_models())
def test_config_rebuilds_the_same_architecture(name):
    model = create_model(name, input_shape=(1, 28, 28) if name in IMAGE_MODELS else (1, 16000), num_classes=10)
    config = dict(model.config)
    rebuilt = create_model(name, input_shape=config.pop("input_shape"), num_classes=config.pop("num_classes"), **config)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in model.parameters())


def test_overrides_apply_and_none_falls_back_to_default():
    assert create_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[32]).config["hidden"] == [32]
    assert create_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=None).config["hidden"] == [1024, 512]


def test_unknown_model_and_option_are_clear_errors():
    with pytest.raises(InputError, match="unknown model 'resnet'; available: .*lenet"):
        get_entry("resnet")
    with pytest.raises(InputError, match="model 'lenet' has no option width"):
        create_model("lenet", input_shape=(1, 8, 8), num_classes=10, width=3)
