"""``lenet``: a LeNet-5 style CNN (LeCun et al. 1998) with ReLU and max-pooling.

Two 5x5 convolutions, each followed by 2x2 max-pooling, then two fully connected layers. For small
images (under 16 pixels a side, e.g. 8x8 digits) the second convolution is padded so the feature
map does not vanish.
"""

from __future__ import annotations

from torch import nn

from dlforge_models._registry import TrainDefaults, register_model


class LeNet(nn.Module):
    def __init__(self, input_shape, num_classes: int, channels: tuple[int, int], hidden: int, dropout: float):
        super().__init__()
        c, h, w = input_shape
        self.config = {"input_shape": list(input_shape), "num_classes": num_classes,
                       "channels": list(channels), "hidden": hidden, "dropout": dropout}
        pad2 = 2 if min(h, w) < 16 else 0
        self.features = nn.Sequential(
            nn.Conv2d(c, channels[0], 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(channels[0], channels[1], 5, padding=pad2), nn.ReLU(), nn.MaxPool2d(2),
        )
        fh, fw = (h // 2 + 2 * pad2 - 4) // 2, (w // 2 + 2 * pad2 - 4) // 2
        if fh < 1 or fw < 1:
            raise ValueError(f"lenet needs images of at least 8x8 pixels, got {h}x{w}")
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(channels[1] * fh * fw, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model(defaults=TrainDefaults(epochs=3, small_data_epochs=60, batch_size=64, lr=1e-3))
def lenet(*, input_shape, num_classes, channels=(32, 64), hidden=256, dropout=0.25) -> nn.Module:
    """LeNet-5 style CNN: two conv + max-pool stages, two dense layers."""
    return LeNet(input_shape, num_classes, tuple(channels), hidden, dropout)
