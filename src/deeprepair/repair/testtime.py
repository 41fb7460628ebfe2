"""Label-free alternatives a user might try on the failure images: BN re-estimation and TENT."""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn

from ..engine import autocast, batches, to_float
from .methods import register_method


def _bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@register_method("bn-adapt", test_time=True, label="BN re-estimation",
                 about="label-free: re-estimate BatchNorm's statistics on the failure images (no training)")
@torch.no_grad()
def bn_adapt(model: nn.Module, x: np.ndarray, batch_size: int = 128, device=None) -> nn.Module:
    """A copy of ``model`` whose BatchNorm running statistics are re-estimated on images ``x``
    (uint8 NHWC; cumulative average over one pass). Weights are untouched."""
    m = copy.deepcopy(model)
    device = device or next(m.parameters()).device
    layers = _bn_layers(m)
    for bn in layers:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average
    m.train()
    xt = torch.from_numpy(np.ascontiguousarray(x))
    for s in batches(len(xt), batch_size):
        m(to_float(xt[s]).to(device))
    for bn in layers:
        bn.momentum = 0.1
    return m.eval()


@register_method("tent", test_time=True, reads=("epochs", "seed"), label="TENT",
                 about="label-free: BatchNorm's affine parameters minimise prediction entropy on the failure "
                       "images (Wang et al. 2021; --epochs passes)")
def tent(model: nn.Module, x: np.ndarray, steps: int = 1, lr: float = 1e-3, batch_size: int = 128,
         seed: int = 0, device=None, precision: str = "fp32") -> nn.Module:
    """TENT (Wang et al. 2021): a copy of ``model`` whose BN affine parameters minimise the
    prediction entropy on ``x`` (BN normalising with batch statistics while adapting; ``steps``
    passes, Adam), then whose BN running statistics are re-estimated on ``x`` as ``bn_adapt``
    does, so that the result answers one image at a time like any deployed model.

    TENT's paper predicts with the statistics of each test batch instead; that makes every
    prediction depend on what else is in the batch (batches of a class-sorted test set hold one
    class each, and batch statistics collapse it), which a repaired model cannot ship with."""
    m = copy.deepcopy(model)
    device = device or next(m.parameters()).device
    m.train()
    m.requires_grad_(False)
    params = []
    for bn in _bn_layers(m):
        bn.weight.requires_grad_(True)
        bn.bias.requires_grad_(True)
        params += [bn.weight, bn.bias]
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))
    xt = torch.from_numpy(np.ascontiguousarray(x))
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        order = torch.randperm(len(xt), generator=g)
        for s in batches(len(xt), batch_size):
            with autocast(device, precision):
                logits = m(to_float(xt[order[s]]).to(device)).float()
            ent = -(logits.softmax(1) * logits.log_softmax(1)).sum(1).mean()
            opt.zero_grad()
            ent.backward()
            opt.step()
    m.requires_grad_(True)
    return bn_adapt(m, x, batch_size=batch_size, device=device)
