"""Which parameters a repair fine-tunes (``RepairConfig.tune``).

- ``all``: every parameter (the paper).
- ``first-block``: the stem and the first stage only, as surgical fine-tuning found best for
  input-level shifts such as CIFAR-10-C (Lee et al., ICLR 2023). The first block is found by one
  rule that works for registry and user models alike: trace the parameterised layers in the
  order a forward pass runs them; the first block is every layer that runs before the first
  convolution whose output is spatially smaller than the previous convolution's, once at least
  one convolution has kept the size (so a stem that downsamples at once, as in ImageNet
  ResNets, stays in the first block with its stage). resnet-20: conv1, bn1 and the three
  16-channel blocks; WRN: conv1 and the first group; torchvision ResNets: conv1, bn1, layer1.
- ``bn``: the affine parameters of the normalisation layers (their running statistics follow
  the fine-tuning data, as in BN adaptation).
- ``head``: the last linear layer.

Layers outside the tuned set keep every parameter and buffer bit-identical: their normalisation
layers stay in eval mode during fine-tuning, so their running statistics do not move either.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import DeepRepairError
from ..repair_config import TUNES

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def _own_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters(recurse=False))


@torch.no_grad()
def execution_order(model: nn.Module, input_shape: tuple[int, int, int]) -> list[tuple[str, tuple[int, ...]]]:
    """(name, output shape) of each module with parameters of its own, in the order a forward
    pass on one ``input_shape`` (H, W, C) image first runs it."""
    seen: dict[str, tuple[int, ...]] = {}
    hooks = []
    for name, m in model.named_modules():
        if _own_params(m):
            def hook(mod, inp, out, name=name):
                if name not in seen and isinstance(out, torch.Tensor):
                    seen[name] = tuple(out.shape)
            hooks.append(m.register_forward_hook(hook))
    was = model.training
    model.eval()
    try:
        h, w, c = input_shape
        p = next(model.parameters())
        model(torch.zeros(1, c, h, w, device=p.device))
    finally:
        model.train(was)
        for hk in hooks:
            hk.remove()
    return list(seen.items())


def first_block(model: nn.Module, input_shape: tuple[int, int, int]) -> list[str]:
    """Names of the layers of the first block (the rule of the module docstring)."""
    order = execution_order(model, input_shape)
    mods = dict(model.named_modules())
    prev, kept = None, False
    for i, (name, shape) in enumerate(order):
        if not isinstance(mods[name], nn.Conv2d) or len(shape) != 4:
            continue
        hw = shape[2:]
        if prev is not None:
            if hw == prev:
                kept = True
            elif hw[0] * hw[1] < prev[0] * prev[1] and kept:
                return [n for n, _ in order[:i]]
        prev = hw
    return [n for n, _ in order]


def tuned_modules(model: nn.Module, tune: str, input_shape: tuple[int, int, int]) -> list[str]:
    """Names of the modules whose own parameters are fine-tuned."""
    if tune not in TUNES:
        raise DeepRepairError(f"tune must be one of {TUNES}, got {tune!r}")
    named = [(n, m) for n, m in model.named_modules() if _own_params(m)]
    if tune == "all":
        return [n for n, _ in named]
    if tune == "first-block":
        return first_block(model, input_shape)
    if tune == "bn":
        names = [n for n, m in named if isinstance(m, _NORMS)]
        if not names:
            raise DeepRepairError("--tune bn: the model has no normalisation layers; use first-block or all")
        return names
    linear = [n for n, m in named if isinstance(m, nn.Linear)]
    if not linear:
        raise DeepRepairError("--tune head: the model has no linear layer; use first-block or all")
    return linear[-1:]


class Tuning:
    """The parameters to fine-tune and the norm layers to hold in eval mode."""

    def __init__(self, model: nn.Module, tune: str, input_shape: tuple[int, int, int]):
        names = set(tuned_modules(model, tune, input_shape))
        self.modules = sorted(names)
        self.params: list[nn.Parameter] = []
        self.frozen_norms: list[nn.Module] = []
        for n, m in model.named_modules():
            if not _own_params(m):
                continue
            own = list(m.parameters(recurse=False))
            if n in names:
                self.params += own
            else:
                for p in own:
                    p.requires_grad_(False)
                if isinstance(m, _NORMS):
                    self.frozen_norms.append(m)

    def train(self, model: nn.Module) -> None:
        """``model.train()`` with the frozen norm layers kept in eval mode."""
        model.train()
        for m in self.frozen_norms:
            m.eval()

    def count(self) -> int:
        return sum(p.numel() for p in self.params)
