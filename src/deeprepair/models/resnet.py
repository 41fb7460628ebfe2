"""CIFAR ResNet (He et al. 2016, section 4.2): 3 stages of 3x3 basic blocks, widths 16/32/64."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import init_weights, register_model


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.pad = cout - cin  # option A shortcut: subsample and zero-pad channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        skip = x
        if self.pad or self.conv1.stride[0] != 1:
            skip = x[:, :, ::2, ::2]
            skip = F.pad(skip, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(y + skip)


class ResNetCifar(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError("CIFAR ResNet depth must be 6n+2")
        n = (depth - 2) // 6
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
        blocks, c = [], 16
        for g, w in enumerate((16, 32, 64)):
            for i in range(n):
                blocks.append(Block(c, w, 2 if (i == 0 and g > 0) else 1))
                c = w
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, num_classes)
        init_weights(self, linear_bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@register_model("resnet-20", family="resnet", profile="cpu", note="CIFAR ResNet-20, ~0.27M parameters")
def resnet_20(num_classes: int = 10) -> nn.Module:
    return ResNetCifar(20, num_classes)
