"""A per-image PIL implementation of AugMix's CIFAR ops and mixing, as a test reference."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps


def int_parameter(level: float, maxval: float) -> int:
    return int(level * maxval / 10)


def float_parameter(level: float, maxval: float) -> float:
    return float(level) * maxval / 10


def apply(name: str, img: Image.Image, level: float, sign: float) -> Image.Image:
    w, h = img.size
    if name == "autocontrast":
        return ImageOps.autocontrast(img)
    if name == "equalize":
        return ImageOps.equalize(img)
    if name == "posterize":
        return ImageOps.posterize(img, 4 - int_parameter(level, 4))
    if name == "solarize":
        return ImageOps.solarize(img, 256 - int_parameter(level, 256))
    if name == "rotate":
        return img.rotate(int_parameter(level, 30) * sign, resample=Image.BILINEAR)
    coeffs = {
        "shear_x": (1, float_parameter(level, 0.3) * sign, 0, 0, 1, 0),
        "shear_y": (1, 0, 0, float_parameter(level, 0.3) * sign, 1, 0),
        "translate_x": (1, 0, int_parameter(level, w / 3) * sign, 0, 1, 0),
        "translate_y": (1, 0, 0, 0, 1, int_parameter(level, h / 3) * sign),
    }[name]
    return img.transform((w, h), Image.AFFINE, coeffs, resample=Image.BILINEAR)


OPS = ["autocontrast", "equalize", "posterize", "rotate", "solarize", "shear_x", "shear_y",
       "translate_x", "translate_y"]


def augmix(x: np.ndarray, rng: np.random.Generator, width: int = 3, severity: float = 3, alpha: float = 1) -> np.ndarray:
    """AugMix on one uint8 HWC image -> float HWC in [0, 1] (the reference code's loop)."""
    ws = rng.dirichlet([alpha] * width)
    m = rng.beta(alpha, alpha)
    mix = np.zeros(x.shape, np.float64)
    for i in range(width):
        img = Image.fromarray(x)
        for _ in range(rng.integers(1, 4)):
            name = OPS[rng.integers(len(OPS))]
            sign = -1.0 if rng.uniform() > 0.5 else 1.0
            img = apply(name, img, rng.uniform(0.1, severity), sign)
        mix += ws[i] * np.asarray(img, np.float64) / 255
    return (1 - m) * x / 255 + m * mix
