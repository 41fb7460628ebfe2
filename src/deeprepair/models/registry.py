"""A timm-style model registry: ``@register_model`` factories, ``create_model(name, num_classes)``."""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from ..errors import DeepRepairError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_INFO: dict[str, dict] = {}


def register_model(name: str, *, family: str, profile: str, note: str = "") -> Callable:
    """Register ``fn(num_classes) -> nn.Module`` under ``name``.

    ``profile`` is ``"paper"`` (the architectures of the paper, as in AugMix's CIFAR code) or
    ``"cpu"`` (smaller members of the same families that pre-train within an hour on 2 cores).
    """

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = fn
        _INFO[name] = {"family": family, "profile": profile, "note": note}
        return fn

    return deco


def list_models(profile: str | None = None) -> list[str]:
    """Registered model names, optionally only one profile (``"paper"`` or ``"cpu"``)."""
    return sorted(n for n, i in _INFO.items() if profile is None or i["profile"] == profile)


def model_info(name: str) -> dict:
    """Family, profile and note of a registered model."""
    _check(name)
    return dict(_INFO[name])


def _check(name: str) -> None:
    if name not in _REGISTRY:
        raise DeepRepairError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")


def create_model(name: str, num_classes: int = 10) -> nn.Module:
    """A freshly initialised model ``name`` with ``num_classes`` outputs. NCHW input of any size
    (the stems are 3-channel and end in adaptive pooling; sized for 32x32 CIFAR images). Wrapped in
    ``Classifier`` a grey (1-channel) input is broadcast to the three channels by the normalisation."""
    _check(name)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise DeepRepairError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return _REGISTRY[name](num_classes=num_classes)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def init_weights(model: nn.Module, linear_bias: bool = True) -> None:
    """He (fan-out) init for convolutions, BN at identity, zero linear biases (unless
    ``linear_bias=False``: torch's default init stays, as the committed ResNet-20 was trained)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and m.bias is not None and linear_bias:
            nn.init.zeros_(m.bias)
