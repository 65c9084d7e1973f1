"""``kws``: a keyword-spotting DS-CNN whose feature front end is part of the network, from the waveform up.

Zhang, Suda, Lai, Chandra, "Hello Edge: Keyword Spotting on Microcontrollers", 2017
(https://arxiv.org/abs/1711.07128), the depthwise-separable CNN that ARM's ML-zoo and MLPerf Tiny ship for
keyword spotting: a first convolution over the time-frequency features, blocks of a 3x3 depthwise
convolution and a 1x1 pointwise one (each with batch norm and ReLU), global average pooling, one linear
layer. With 64 channels and four blocks it has about 24,000 weights, DS-CNN-S's size.

The front end the paper computes outside the network (as does every edge deployment that runs the DSP
on its own) is here a fixed part of the graph, so the ONNX export, the INT8 engine and the engine-graph
gradients of an attack all start from the waveform:

- framing and the DFT as one fixed 1-D convolution (kernel = the Hann-windowed cosine and sine rows of a
  512-point DFT, stride = the hop): real and imaginary parts of each frame's spectrum;
- the power spectrum (re^2 + im^2), a fixed mel filterbank as a matrix product, ``log(mel + 1e-6)``.

Only operators every backend has (Conv, Mul, Add, MatMul, Log). The front end's weights are buffers,
not parameters: training does not move them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from dlforge_models._registry import TrainDefaults, register_model


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, f_min: float = 20.0,
                   f_max: float | None = None) -> np.ndarray:
    """Triangular filters on the HTK mel scale, ``(n_fft // 2 + 1, n_mels)``, each with unit peak."""
    f_max = f_max or sample_rate / 2
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(f_min), mel(f_max), n_mels + 2))
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    bank = np.zeros((len(freqs), n_mels))
    for m in range(n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        bank[:, m] = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0, None)
    return bank.astype(np.float32)


class LogMel(nn.Module):
    """Waveform ``(N, 1, T)`` -> log-mel features ``(N, 1, frames, n_mels)`` by fixed convolution and matrix product."""

    def __init__(self, sample_rate: int = 16000, n_fft: int = 512, hop: int = 256, n_mels: int = 40):
        super().__init__()
        n = np.arange(n_fft)
        k = np.arange(n_fft // 2 + 1)[:, None]
        window = 0.5 - 0.5 * np.cos(2 * math.pi * n / n_fft)  # periodic Hann
        angle = 2 * math.pi * k * n / n_fft
        kernel = np.concatenate([np.cos(angle) * window, -np.sin(angle) * window])[:, None, :]
        self.register_buffer("dft", torch.from_numpy(kernel.astype(np.float32)))
        self.register_buffer("mel", torch.from_numpy(mel_filterbank(n_mels, n_fft, sample_rate)))
        self.hop, self.bins = hop, n_fft // 2 + 1

    def forward(self, x):
        spec = nn.functional.conv1d(x, self.dft, stride=self.hop)  # (N, 2 * bins, frames)
        re, im = spec[:, :self.bins], spec[:, self.bins:]
        power = (re * re + im * im).transpose(1, 2)  # (N, frames, bins)
        return torch.log(power @ self.mel + 1e-6).unsqueeze(1)


def _block(channels: int) -> list[nn.Module]:
    return [nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False), nn.BatchNorm2d(channels),
            nn.ReLU(), nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU()]


class DSCNN(nn.Module):
    keep_fp32 = ("frontend",)  # an INT8 build leaves the front end in fp32: power spans ~15 decades

    def __init__(self, input_shape, num_classes: int, channels: int, blocks: int, n_mels: int, dropout: float,
                 sample_rate: int):
        super().__init__()
        if len(input_shape) != 2 or input_shape[0] != 1:
            raise ValueError(f"kws takes one-channel waveforms (1, samples), got input shape {tuple(input_shape)}; "
                             "train it on an audio dataset (--data keywords, speech-commands or a WAV folder)")
        samples = input_shape[1]
        if samples < 512 * 4:
            raise ValueError(f"kws needs clips of at least 2048 samples, got {samples}")
        self.config = {"input_shape": list(input_shape), "num_classes": num_classes, "channels": channels,
                       "blocks": blocks, "n_mels": n_mels, "dropout": dropout, "sample_rate": sample_rate}
        self.frontend = LogMel(sample_rate, n_mels=n_mels)
        self.features = nn.Sequential(
            nn.BatchNorm2d(1),  # the log-mel features' scale, learned
            nn.Conv2d(1, channels, (10, 4), stride=(2, 2), padding=(5, 1), bias=False), nn.BatchNorm2d(channels),
            nn.ReLU(), *[m for _ in range(blocks) for m in _block(channels)],
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout))
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.classifier(self.features(self.frontend(x)))


@register_model(modality="audio", defaults=TrainDefaults(epochs=15, small_data_epochs=15, batch_size=64, lr=3e-3,
                                                         weight_decay=1e-4))
def kws(*, input_shape, num_classes, channels=64, blocks=4, n_mels=40, dropout=0.1, sample_rate=16000) -> nn.Module:
    """Keyword spotting DS-CNN (Hello Edge) with its log-mel front end in the graph: waveform in, words out."""
    return DSCNN(input_shape, num_classes, channels, blocks, n_mels, dropout, sample_rate)
