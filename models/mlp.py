"""``mlp``: a deep feed-forward network with ReLU and dropout (the "DNN")."""

from __future__ import annotations

import math

from torch import nn

from dlforge_models._registry import TrainDefaults, register_model


class MLP(nn.Module):
    def __init__(self, input_shape, num_classes: int, hidden: tuple[int, ...], dropout: float):
        super().__init__()
        self.config = {"input_shape": list(input_shape), "num_classes": num_classes,
                       "hidden": list(hidden), "dropout": dropout}
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


@register_model(defaults=TrainDefaults(epochs=3, small_data_epochs=40, batch_size=64, lr=1e-3))
def mlp(*, input_shape, num_classes, hidden=(1024, 512), dropout=0.1) -> nn.Module:
    """Multi-layer perceptron with ReLU and dropout between layers."""
    return MLP(input_shape, num_classes, tuple(hidden), dropout)
