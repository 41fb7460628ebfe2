"""A network plus its input normalisation: every pipeline feeds images in [0, 1]."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn


class Classifier(nn.Module):
    """``net((x - mean) / std)`` for ``x`` float NCHW in [0, 1].

    Keeping the normalisation inside the module lets augmentation, style transfer and
    corruption work on plain [0, 1] images whatever the user's model expects.
    """

    def __init__(self, net: nn.Module, mean: Sequence[float] = (0.5, 0.5, 0.5),
                 std: Sequence[float] = (0.5, 0.5, 0.5)):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))
