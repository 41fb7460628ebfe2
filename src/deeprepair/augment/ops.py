"""AugMix's nine operations, batched: float (B, C, H, W) in [0, 1], one level per image.

Each op follows the PIL operation AugMix's reference code applies to uint8 images
(``ImageOps.autocontrast``, ``equalize``, ``posterize``, ``solarize``, ``rotate`` and the
``AFFINE`` transforms with bilinear resampling), with the same level -> magnitude mapping:
``int_parameter(level, max) = int(level * max / 10)``, ``float_parameter = level * max / 10``,
level ~ U(0.1, severity). Colour ops work on the 8-bit values, as PIL does; the geometric
ops are one batched ``grid_sample`` with a per-image affine matrix. Not included: color,
contrast, brightness, sharpness (they overlap the test corruptions, as in AugMix).
"""

from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F


def int_parameter(level: torch.Tensor, maxval: float) -> torch.Tensor:
    return torch.floor(level * maxval / 10)


def float_parameter(level: torch.Tensor, maxval: float) -> torch.Tensor:
    return level * maxval / 10


def _u8(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> the 8-bit values PIL would hold (as long)."""
    return (x * 255).round_().clamp_(0, 255).long()


def autocontrast(x: torch.Tensor, level: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Stretch each channel so its darkest value becomes 0 and its brightest 255."""
    q = _u8(x).float()
    lo = q.amin((2, 3), keepdim=True)
    hi = q.amax((2, 3), keepdim=True)
    scale = 255.0 / (hi - lo).clamp_min(1)
    out = torch.floor((q - lo) * scale).clamp_(0, 255)  # PIL: int(ix * scale + offset)
    return torch.where(hi > lo, out, q) / 255.0


def equalize(x: torch.Tensor, level: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Histogram equalisation per channel with PIL's lookup table."""
    b, c, h, w = x.shape
    q = _u8(x).reshape(b * c, h * w)
    hist = torch.zeros(b * c, 256, dtype=torch.long, device=x.device).scatter_add_(1, q, torch.ones_like(q))
    last = hist.gather(1, q.amax(1, keepdim=True))  # count of the last non-empty bin
    step = (h * w - last) // 255
    cum = hist.cumsum(1) - hist
    lut = ((step // 2 + cum) // step.clamp_min(1)).clamp_(0, 255)
    out = lut.gather(1, q)
    out = torch.where(step > 0, out, q)
    return out.view(b, c, h, w).float() / 255.0


def posterize(x: torch.Tensor, level: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Keep the top ``4 - int_parameter(level, 4)`` bits of each 8-bit value."""
    bits = (4 - int_parameter(level, 4)).long().view(-1, 1, 1, 1)
    shift = 8 - bits
    return ((_u8(x) >> shift) << shift).float() / 255.0


def solarize(x: torch.Tensor, level: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Invert the values at or above ``256 - int_parameter(level, 256)``."""
    thr = (256 - int_parameter(level, 256)).view(-1, 1, 1, 1)
    q = _u8(x)
    return torch.where(q >= thr, 255 - q, q).float() / 255.0


def _signs(n: int, rng: np.random.Generator) -> np.ndarray:
    return np.where(rng.uniform(size=n) > 0.5, -1.0, 1.0)


def affine(x: torch.Tensor, mats: torch.Tensor) -> torch.Tensor:
    """PIL ``Image.transform(AFFINE, (a, b, c, d, e, f), BILINEAR)`` per image, batched.

    Output pixel centre (X, Y) samples the input at (aX + bY + c, dX + eY + f), continuous
    pixel coordinates; outside the image is black (PIL's fill).
    """
    b_, _, h, w = x.shape
    a, b, c, d, e, f = mats.to(x.dtype).unbind(1)
    theta = torch.stack([
        torch.stack([a, b * h / w, a + b * h / w + 2 * c / w - 1], 1),
        torch.stack([d * w / h, e, d * w / h + e + 2 * f / h - 1], 1),
    ], 1)  # fmt: skip
    grid = F.affine_grid(theta, [b_, 1, h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def geometric_matrix(kind: str, level: torch.Tensor, h: int, w: int, rng: np.random.Generator) -> torch.Tensor:
    """(n, 6) PIL affine coefficients of a geometric op at ``level`` with random signs."""
    sign = torch.from_numpy(_signs(len(level), rng)).to(level.device, torch.float64)
    lv = level.to(torch.float64)
    one, zero = torch.ones_like(lv), torch.zeros_like(lv)
    if kind == "rotate":  # PIL rotate(deg): counter-clockwise about the centre
        ang = -torch.deg2rad(int_parameter(lv, 30) * sign)
        cos, sin = torch.cos(ang), torch.sin(ang)
        cx, cy = w / 2, h / 2
        m = [cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy]
    elif kind == "shear_x":
        m = [one, float_parameter(lv, 0.3) * sign, zero, zero, one, zero]
    elif kind == "shear_y":
        m = [one, zero, zero, float_parameter(lv, 0.3) * sign, one, zero]
    elif kind == "translate_x":
        m = [one, zero, int_parameter(lv, w / 3) * sign, zero, one, zero]
    elif kind == "translate_y":
        m = [one, zero, zero, zero, one, int_parameter(lv, h / 3) * sign]
    else:
        raise ValueError(kind)
    return torch.stack(m, 1)


def _geom(kind: str):
    def op(x: torch.Tensor, level: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        return affine(x, geometric_matrix(kind, level, x.shape[2], x.shape[3], rng))

    op.__name__ = kind
    return op


GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
rotate, shear_x, shear_y, translate_x, translate_y = (_geom(k) for k in GEOMETRIC)

AUGMIX_OPS = {
    "autocontrast": autocontrast, "equalize": equalize, "posterize": posterize, "rotate": rotate,
    "solarize": solarize, "shear_x": shear_x, "shear_y": shear_y, "translate_x": translate_x,
    "translate_y": translate_y,
}  # fmt: skip
