"""DenseNet-BC (Huang et al. 2017) for CIFAR, as in AugMix's CIFAR code."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import init_weights, register_model


class Bottleneck(nn.Module):
    """BN-ReLU-1x1 conv (4k) - BN-ReLU-3x3 conv (k), output concatenated to the input."""

    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, 4 * growth, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(4 * growth), nn.Conv2d(4 * growth, growth, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.relu(self.bn1(x)))
        y = self.conv2(F.relu(self.bn2(y)))
        return torch.cat([x, y], 1)


class Transition(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.bn, self.conv = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNetBC(nn.Module):
    """DenseNet-BC-``depth``-``growth``: three dense blocks of (depth-4)/6 bottlenecks, reduction 0.5."""

    def __init__(self, depth: int, growth: int, num_classes: int = 10, reduction: float = 0.5):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError("DenseNet-BC depth must be 6n+4")
        n = (depth - 4) // 6
        c = 2 * growth
        layers: list[nn.Module] = [nn.Conv2d(3, c, 3, 1, 1, bias=False)]
        for b in range(3):
            for _ in range(n):
                layers.append(Bottleneck(c, growth))
                c += growth
            if b < 2:
                cout = int(c * reduction)
                layers.append(Transition(c, cout))
                c = cout
        self.features = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.features(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@register_model("densenet-bc-100-12", family="densenet", profile="paper",
                note="AugMix's DenseNet-BC (L=100, k=12), ~0.77M parameters")
def densenet_bc_100_12(num_classes: int = 10) -> nn.Module:
    return DenseNetBC(100, 12, num_classes)


@register_model("densenet-bc-40-12", family="densenet", profile="cpu",
                note="DenseNet-BC (L=40, k=12), ~0.18M parameters")
def densenet_bc_40_12(num_classes: int = 10) -> nn.Module:
    return DenseNetBC(40, 12, num_classes)
