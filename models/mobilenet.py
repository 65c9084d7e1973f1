"""``mobilenetv2``: a MobileNetV2-style network (Sandler et al., CVPR 2018) sized for small images.

The building block is the paper's inverted residual (Table 1): a 1x1 expansion convolution by a
factor ``t``, ReLU6; a 3x3 depthwise convolution (stride ``s``), ReLU6; a 1x1 linear projection
(no activation: the "linear bottleneck"); a residual sum where input and output shapes agree.
Every convolution is followed by batch normalization. A 3x3 stem, the blocks, a 1x1 convolution
to the last features, global average pooling, dropout and a linear classifier follow.

The blocks follow the paper's Table 2 with the stride-2 stages trimmed for 8x8 to 32x32 inputs (the
stem has stride 1, as CIFAR ports of the network do) and the repeat counts shortened; ``width``
scales every channel count (the paper's width multiplier). ReLU6 exports as ONNX ``Clip(0, 6)``,
which ONNX Runtime's INT8 quantizer folds into the quantization range like a ReLU: the INT8 engine
graph's straight-through gradients must respect that clip.
"""

from __future__ import annotations

import torch
from torch import nn

from dlforge_models._registry import TrainDefaults, register_model

# (expansion t, output channels c, repeats n, first stride s), after Table 2 of the paper.
BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 3, 2), (6, 96, 2, 1), (6, 160, 2, 2))


def _channels(c: int, width: float) -> int:
    """``c * width`` rounded to a multiple of 8 (at least 8), as the paper's reference code rounds."""
    return max(8, int(c * width + 4) // 8 * 8)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, relu6: bool = True) -> list:
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return layers + [nn.ReLU6()] if relu6 else layers


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        layers = _conv_bn(cin, hidden, 1) if expansion != 1 else []
        layers += _conv_bn(hidden, hidden, 3, stride, groups=hidden)  # depthwise
        layers += _conv_bn(hidden, cout, 1, relu6=False)  # linear bottleneck
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


class MobileNetV2(nn.Module):
    def __init__(self, input_shape, num_classes: int, width: float, last_channels: int, dropout: float):
        super().__init__()
        self.config = {"input_shape": list(input_shape), "num_classes": num_classes, "width": width,
                       "last_channels": last_channels, "dropout": dropout}
        cin = _channels(32, width)
        layers = _conv_bn(input_shape[0], cin, 3)
        for t, c, n, s in BLOCKS:
            cout = _channels(c, width)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        last = _channels(last_channels, max(1.0, width))
        layers += _conv_bn(cin, last, 1)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(last, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(nn.functional.adaptive_avg_pool2d(self.features(x), 1))


@register_model(defaults=TrainDefaults(epochs=10, small_data_epochs=30, batch_size=128, lr=2e-3, weight_decay=4e-5))
def mobilenetv2(*, input_shape, num_classes, width=0.5, last_channels=640, dropout=0.2) -> nn.Module:
    """MobileNetV2-style CNN: inverted residuals, depthwise 3x3 convolutions, ReLU6, linear bottlenecks."""
    if not 0 < float(width) <= 4:
        raise ValueError(f"mobilenetv2 width must be in (0, 4], got {width}")
    return MobileNetV2(input_shape, num_classes, float(width), int(last_channels), float(dropout))
