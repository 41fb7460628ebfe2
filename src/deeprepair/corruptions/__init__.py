"""The 15 CIFAR-10-C corruptions of the paper plus the 4 held-out extras, batched.

``corrupt(images, name, severity, seed)`` takes uint8 images (N, H, W, 3) or grey (N, H, W, 1)
of any size from 8 px (a NumPy array, or a torch tensor on any device) and returns the same shape
and dtype. The parameters follow the image size: CIFAR-10-C's up to 32 px, ImageNet-C's from
224 px, linear in the shorter side between (``params.param``; docs/corruptions.md). The same seed gives
byte-identical output whatever the batch size: pass ``start`` (the global index of the first
image) when corrupting a dataset in pieces.
"""

from __future__ import annotations

import numpy as np

from ..errors import DeepRepairError
from . import blur, digital, jpeg, noise, weather  # noqa: F401  (fill the registry)
from .base import REGISTRY, Corruption, apply, check_images, default_threads
from .params import PARAMS

CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog",
    "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip
HELDOUT_CORRUPTIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL_CORRUPTIONS: tuple[str, ...] = CORRUPTIONS + HELDOUT_CORRUPTIONS
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

__all__ = [
    "ALL_CORRUPTIONS", "CORRUPTIONS", "HELDOUT_CORRUPTIONS", "PARAMS", "SEVERITIES",
    "Corruption", "corrupt", "get_corruption",
]  # fmt: skip


def get_corruption(name: str) -> Corruption:
    """The registered corruption called ``name`` (a clear error lists the valid names)."""
    if name not in REGISTRY:
        raise DeepRepairError(f"unknown corruption {name!r}; choose from: {', '.join(ALL_CORRUPTIONS)}")
    return REGISTRY[name]


def corrupt(images, name: str, severity: int, seed: int = 0, start: int = 0, threads: int | None = None):
    """Corrupt a batch of uint8 images (N, H, W, 3 or 1) with ``name`` at ``severity`` (1..5)."""
    corr = get_corruption(name)
    if severity not in SEVERITIES:
        raise DeepRepairError(f"severity must be one of 1..5; got {severity!r}")
    threads = default_threads() if threads is None else int(threads)
    if type(images).__module__.startswith("torch"):
        import torch

        if images.dtype != torch.uint8:
            raise DeepRepairError(f"corruptions take uint8 images; got a {images.dtype} tensor")
        arr = images.detach().cpu().numpy()
        check_images(arr)
        return torch.from_numpy(apply(corr, arr, severity, seed, start, threads)).to(images.device)
    check_images(images)
    return apply(corr, np.ascontiguousarray(images), severity, seed, start, threads)
