"""``autoencoder``: a denoising convolutional autoencoder (Vincent et al. 2008).

Trained to reconstruct clean images from noisy ones. Its reconstruction error is an anomaly score:
inputs unlike the training data (including many adversarial examples) reconstruct poorly, so it
can serve as an input filter in front of a classifier.
"""

from __future__ import annotations

import torch
from torch import nn

from dlforge_models._registry import TrainDefaults, register_model


class ConvAutoencoder(nn.Module):
    def __init__(self, input_shape, num_classes: int, channels: tuple[int, int], noise: float):
        super().__init__()
        c, h, w = input_shape
        if h % 4 or w % 4:
            raise ValueError(f"autoencoder needs image sides divisible by 4, got {h}x{w}")
        self.config = {"input_shape": list(input_shape), "num_classes": num_classes, "channels": list(channels),
                       "noise": noise}
        self.noise = noise
        a, b = channels
        self.encoder = nn.Sequential(nn.Conv2d(c, a, 3, stride=2, padding=1), nn.ReLU(),
                                     nn.Conv2d(a, b, 3, stride=2, padding=1), nn.ReLU())
        self.decoder = nn.Sequential(nn.ConvTranspose2d(b, a, 4, stride=2, padding=1), nn.ReLU(),
                                     nn.ConvTranspose2d(a, c, 4, stride=2, padding=1), nn.Sigmoid())

    def forward(self, x):
        if self.training and self.noise > 0:  # denoising: corrupt the input, reconstruct the clean image
            x = (x + self.noise * torch.randn_like(x)).clamp(0, 1)
        return self.decoder(self.encoder(x))


@register_model(task="reconstruction", defaults=TrainDefaults(epochs=3, small_data_epochs=60, batch_size=64, lr=2e-3))
def autoencoder(*, input_shape, num_classes, channels=(16, 32), noise=0.2) -> nn.Module:
    """Denoising convolutional autoencoder; reconstruction error is an anomaly score."""
    return ConvAutoencoder(input_shape, num_classes, tuple(channels), noise)
