"""All-convolutional network (Springenberg et al. 2015) as in AugMix's CIFAR code (GELU, BN)."""

from __future__ import annotations

import torch
import torch.nn as nn

from .registry import init_weights, register_model


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1, padding: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=True),
            nn.BatchNorm2d(cout), nn.GELU()]


class AllConvNet(nn.Module):
    """Three stages of 3x3 convolutions (widths ``w1``, ``w2``), stride-2 convs instead of pooling."""

    def __init__(self, num_classes: int = 10, w1: int = 96, w2: int = 192, dropout: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(
            *_conv(3, w1), *_conv(w1, w1), *_conv(w1, w1, stride=2), nn.Dropout(dropout),
            *_conv(w1, w2), *_conv(w2, w2), *_conv(w2, w2, stride=2), nn.Dropout(dropout),
            *_conv(w2, w2, padding=0), *_conv(w2, w2, k=1, padding=0), *_conv(w2, w2, k=1, padding=0),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.fc = nn.Linear(w2, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


@register_model("allconvnet", family="allconvnet", profile="paper",
                note="AugMix's AllConvNet, widths 96/192, ~1.4M parameters")
def allconvnet(num_classes: int = 10) -> nn.Module:
    return AllConvNet(num_classes)


@register_model("allconvnet-s", family="allconvnet", profile="cpu",
                note="same layout at half width (48/96), ~0.35M parameters, ~4x fewer FLOPs")
def allconvnet_s(num_classes: int = 10) -> nn.Module:
    return AllConvNet(num_classes, w1=48, w2=96, dropout=0.3)
