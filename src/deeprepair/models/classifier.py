"""A network plus its input normalisation: every pipeline feeds images in [0, 1]."""

from __future__ import annotations

import copy
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

    def __deepcopy__(self, memo: dict) -> Classifier:
        """A copy whose parameters are leaves, as an optimiser needs: a TorchScript net copied with
        autograd on gets non-leaf parameters (repair copies the model it fine-tunes)."""
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        with torch.no_grad():
            for key, value in self.__dict__.items():
                new.__dict__[key] = copy.deepcopy(value, memo)
        for mine, theirs in zip(new.parameters(), self.parameters()):
            mine.requires_grad_(theirs.requires_grad)
        return new
