"""Wide residual networks (Zagoruyko & Komodakis 2016), pre-activation, as in AugMix's CIFAR code."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import init_weights, register_model


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, drop: float = 0.0):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.drop = drop
        self.shortcut = (None if cin == cout and stride == 1
                         else nn.Conv2d(cin, cout, 1, stride, 0, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(o)
        y = self.conv1(o)
        y = F.relu(self.bn2(y))
        if self.drop:
            y = F.dropout(y, p=self.drop, training=self.training)
        return skip + self.conv2(y)


class WideResNet(nn.Module):
    """WRN-``depth``-``widen``: three groups of (depth-4)/6 basic blocks, widths 16k, 32k, 64k."""

    def __init__(self, depth: int, widen: int, num_classes: int = 10, drop: float = 0.0):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError("WideResNet depth must be 6n+4")
        n = (depth - 4) // 6
        w = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(3, w[0], 3, 1, 1, bias=False)
        blocks = []
        for g in range(3):
            for i in range(n):
                blocks.append(BasicBlock(w[g] if i == 0 else w[g + 1], w[g + 1],
                                         (1 if g == 0 else 2) if i == 0 else 1, drop))
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(w[3])
        self.fc = nn.Linear(w[3], num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.blocks(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@register_model("wrn-40-2", family="wideresnet", profile="paper",
                note="AugMix's WRN-40-2, ~2.2M parameters")
def wrn_40_2(num_classes: int = 10) -> nn.Module:
    return WideResNet(40, 2, num_classes)


@register_model("wrn-16-2", family="wideresnet", profile="cpu",
                note="WRN-16-2, ~0.69M parameters, ~3x faster than WRN-40-2")
def wrn_16_2(num_classes: int = 10) -> nn.Module:
    return WideResNet(16, 2, num_classes)
