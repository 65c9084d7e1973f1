"""``resnet20`` / ``resnet32`` / ``resnet44`` / ``resnet56``: the CIFAR-10 ResNets of He et al. 2016.

"Deep Residual Learning for Image Recognition" (CVPR 2016), section 4.2: a 3x3 convolution with 16
filters, then three stages of ``n`` basic blocks (two 3x3 convolutions each) with 16, 32 and 64
filters, the first block of the second and third stage halving the feature map with stride 2;
global average pooling and one linear layer: ``6n + 2`` weighted layers (n = 3, 5, 7, 9 for the
depths 20, 32, 44, 56). Every convolution is followed by batch normalization; ReLU after the first
convolution of a block and after the residual sum.

Shortcuts are the paper's **option A**: the identity, and where a block changes the shape, the
input subsampled by taking every second pixel and the new channels filled with zeros (no
parameters). This is the form the widely used pretrained CIFAR-10 weights were trained with, so
their state dicts load into these modules key for key (``conv1``, ``bn1``, ``layer1.0.conv1`` ...,
``linear``); ``dlforge import resnet20 --weights resnet20.th`` takes such a checkpoint.

Any input size works (the pooling is global); for 8x8 digits the last stage sees 2x2 maps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dlforge_models._registry import TrainDefaults, register_model

WIDTHS = (16, 32, 64)


class ZeroPadShortcut(nn.Module):
    """Option A: subsample by 2 and append zero channels, so ``in_planes`` becomes ``planes``."""

    def __init__(self, in_planes: int, planes: int):
        super().__init__()
        extra = planes - in_planes
        self.pad = (extra // 2, extra - extra // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, *self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = ZeroPadShortcut(in_planes, planes) if stride != 1 or in_planes != planes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, input_shape, num_classes: int, depth: int):
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            raise ValueError(f"a CIFAR ResNet has depth 6n + 2 (20, 32, 44, 56, ...), got {depth}")
        n = (depth - 2) // 6
        self.config = {"input_shape": list(input_shape), "num_classes": num_classes}
        self.conv1 = nn.Conv2d(input_shape[0], WIDTHS[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(WIDTHS[0])
        in_planes = WIDTHS[0]
        stages = []
        for i, planes in enumerate(WIDTHS):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride=2 if i > 0 and j == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(WIDTHS[-1], num_classes)
        for m in self.modules():  # He initialization, as the paper (section 3.4) and its reference code
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
        # Each residual branch starts at zero (its last BatchNorm's scale 0; Goyal et al. 2017, torchvision's
        # zero_init_residual): a deviation from the paper's initialization that keeps the untrained network's
        # activations bounded at any depth, so short runs on small data start stable. Loaded weights replace it.
        for block in (*self.layer1, *self.layer2, *self.layer3):
            nn.init.zeros_(block.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


# SGD-like settings in Adam form for short runs on small data; the paper trains 64k iterations with SGD.
_DEFAULTS = TrainDefaults(epochs=10, small_data_epochs=30, batch_size=128, lr=2e-3, weight_decay=1e-4)


@register_model(defaults=_DEFAULTS)
def resnet20(*, input_shape, num_classes) -> nn.Module:
    """CIFAR ResNet-20 (He et al. 2016): 3 stages of 3 basic blocks, option-A shortcuts, 0.27M parameters."""
    return CifarResNet(input_shape, num_classes, 20)


@register_model(defaults=_DEFAULTS)
def resnet32(*, input_shape, num_classes) -> nn.Module:
    """CIFAR ResNet-32 (He et al. 2016): 3 stages of 5 basic blocks, option-A shortcuts, 0.46M parameters."""
    return CifarResNet(input_shape, num_classes, 32)


@register_model(defaults=_DEFAULTS)
def resnet44(*, input_shape, num_classes) -> nn.Module:
    """CIFAR ResNet-44 (He et al. 2016): 3 stages of 7 basic blocks, option-A shortcuts, 0.66M parameters."""
    return CifarResNet(input_shape, num_classes, 44)


@register_model(defaults=_DEFAULTS)
def resnet56(*, input_shape, num_classes) -> nn.Module:
    """CIFAR ResNet-56 (He et al. 2016): 3 stages of 9 basic blocks, option-A shortcuts, 0.85M parameters."""
    return CifarResNet(input_shape, num_classes, 56)
