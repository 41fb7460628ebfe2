"""Augmentation: AugMix's ops batched, StyleAug (Algorithm 1) and the JSD consistency loss."""

from .augmix import StyleAug, StyleOps, jsd_loss
from .ops import AUGMIX_OPS, affine

__all__ = ["AUGMIX_OPS", "StyleAug", "StyleOps", "affine", "jsd_loss"]
