"""scikit-learn's bundled handwritten digits as a tiny offline image dataset (the demo's fallback).

1,797 real 8x8 grey images (values 0-16) ship inside scikit-learn, so the demo can run end
to end with no dataset and no network. They are upsampled to ``size`` x ``size`` (bilinear),
scaled to 0-255 and copied to three channels, so that every corruption and model of the
package applies unchanged; a seeded, stratified 80/20 split gives train and test.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DeepRepairError
from .datasets import ImageSet

CLASSES = [str(d) for d in range(10)]


def load_digits_dataset(size: int = 32, seed: int = 0, test_fraction: float = 0.2) -> tuple[ImageSet, ImageSet]:
    """(train, test) ImageSets of the digits as uint8 (N, size, size, 3)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DeepRepairError("no dataset given, no network, and scikit-learn (whose bundled digits are "
                              "the offline fallback) is not installed: pip install scikit-learn, or "
                              "pass --data DIR") from None
    d = load_digits()
    img = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    img = F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False)
    x = (img.clamp(0, 1) * 255).round().to(torch.uint8).squeeze(1).numpy()
    x = np.repeat(x[..., None], 3, axis=3)
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), bool)
    for c in range(10):  # stratified: the same share of each digit in the test split
        idx = rng.permutation(np.flatnonzero(y == c))
        test[idx[: int(round(len(idx) * test_fraction))]] = True
    return ImageSet(x[~test], y[~test], CLASSES), ImageSet(x[test], y[test], CLASSES)
