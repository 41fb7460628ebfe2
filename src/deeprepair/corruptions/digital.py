"""Digital corruptions: brightness, contrast, elastic, pixelate, JPEG; held-out saturate."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from . import kernels
from .base import RandomStream, register
from .filters import smooth_fields


@register("brightness", "digital", colour=True)
def brightness(x: np.ndarray, c: float, rs: RandomStream) -> np.ndarray:
    """HSV value + c. With hue and saturation fixed, RGB scales with V: rgb * V' / V."""
    return kernels.brightness(x, float(c))


@register("saturate", "digital", heldout=True, colour=True)
def saturate(x: np.ndarray, p: tuple, rs: RandomStream) -> np.ndarray:
    """HSV saturation * a + b. With H and V fixed: c' = V - (S'/S)(V - c); grey gets hue 0."""
    a, b = p
    x = x.astype(np.float32) / 255.0
    v = x.max(axis=-1, keepdims=True)
    delta = v - x.min(axis=-1, keepdims=True)
    s = np.divide(delta, v, out=np.zeros_like(v), where=v > 0)
    s_new = np.clip(s * a + b, 0, 1)
    ratio = np.divide(s_new, s, out=np.zeros_like(s), where=s > 0)
    out = v - ratio * (v - x)
    grey = np.concatenate([v, v * (1 - s_new), v * (1 - s_new)], axis=-1)  # skimage: hue 0 = red
    return np.where(delta > 0, out, grey)


@register("contrast", "digital")
def contrast(x: np.ndarray, c: float, rs: RandomStream) -> np.ndarray:
    return kernels.contrast(x, float(c))


def _sample(img: torch.Tensor, gx: np.ndarray, gy: np.ndarray, align: bool) -> torch.Tensor:
    """Bilinear sampling at pixel coordinates (gx, gy) (N, H, W), reflected at the borders."""
    n, c, h, w = img.shape
    grid = np.empty(gx.shape + (2,), dtype=np.float32)
    if align:  # reflect about the edge pixel centres (OpenCV BORDER_REFLECT_101)
        grid[..., 0], grid[..., 1] = gx * (2 / (w - 1)) - 1, gy * (2 / (h - 1)) - 1
    else:  # reflect about the image border (scipy mode "reflect")
        grid[..., 0], grid[..., 1] = (2 * gx + 1) / w - 1, (2 * gy + 1) / h - 1
    return F.grid_sample(img, torch.from_numpy(grid), mode="bilinear", padding_mode="reflection", align_corners=align)


@register("elastic_transform", "digital", chunked=False)
def elastic_transform(x: np.ndarray, p: tuple, rs: RandomStream) -> np.ndarray:
    """Random affine (three points moved by U(-a, a)), then a smooth random displacement."""
    n, h, w, _ = x.shape
    alpha, sigma, affine = (v * min(h, w) for v in p)  # fractions of the (shorter) side
    cy, cx, sq = h // 2, w // 2, min(h, w) // 3
    pts1 = np.array([[cy + sq, cx + sq], [cy + sq, cx - sq], [cy - sq, cx - sq]], dtype=np.float64)
    pts2 = pts1[None] + rs.draw(lambda rng, k: rng.uniform(-affine, affine, size=(k, 3, 2)), tag=0)
    # warpAffine maps output point q to input M^-1 q, where M maps pts1 -> pts2 (in (x, y)).
    src = np.concatenate([pts2, np.ones((n, 3, 1))], axis=2)  # solve M^-1 directly: pts2 -> pts1
    inv = np.linalg.solve(src, np.broadcast_to(pts1, (n, 3, 2))).astype(np.float32)  # [x y 1] @ inv
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    gx = xx * inv[:, 0, 0, None, None] + yy * inv[:, 1, 0, None, None] + inv[:, 2, 0, None, None]
    gy = xx * inv[:, 0, 1, None, None] + yy * inv[:, 1, 1, None, None] + inv[:, 2, 1, None, None]
    img = torch.from_numpy(x.astype(np.float32)).permute(0, 3, 1, 2).div_(255.0)
    img = _sample(img, gx, gy, align=True)
    noise = rs.draw(lambda rng, k: rng.random((k, 2, h, w), dtype=np.float32) * 2 - 1, tag=1)
    if alpha > 0:
        dx = smooth_fields(noise[:, 0], sigma, "symmetric", truncate=3) * alpha
        dy = smooth_fields(noise[:, 1], sigma, "symmetric", truncate=3) * alpha
        img = _sample(img, xx + dx, yy + dy, align=False)
    return np.ascontiguousarray(img.permute(0, 2, 3, 1).numpy())


@lru_cache(maxsize=16)
def box_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Pillow's BOX resampling weights (``ImagingResample`` coefficients) as a matrix."""
    scale = n_in / n_out
    fscale = max(scale, 1.0)
    support = 0.5 * fscale
    m = np.zeros((n_out, n_in), dtype=np.float64)
    for i in range(n_out):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        t = (np.arange(lo, hi) - center + 0.5) / fscale
        k = ((t > -0.5) & (t <= 0.5)).astype(np.float64)
        m[i, lo:hi] = k / k.sum()
    return m


def _box_resize(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Pillow's 8-bit BOX resize of a batch: horizontal then vertical pass, each rounded."""
    n, h, w, c = x.shape
    y = np.einsum("ij,nhjc->nhic", box_resize_matrix(w, out_w).astype(np.float32), x.astype(np.float32))
    y = np.floor(y + 0.5, out=y).clip(0, 255)
    y = np.einsum("ij,njwc->niwc", box_resize_matrix(h, out_h).astype(np.float32), y)
    return np.floor(y + 0.5, out=y).clip(0, 255).astype(np.uint8)


def _two_taps(m: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(a, b) when every output averages inputs a and b (a == b: copies one), else None."""
    nz = [np.nonzero(row)[0] for row in m]
    if any(len(k) > 2 for k in nz) or not np.allclose(m[m > 0], [1.0 / len(k) for k in nz for _ in k]):
        return None
    return np.array([k[0] for k in nz]), np.array([k[-1] for k in nz])


@lru_cache(maxsize=16)
def _pixelate_maps(h: int, w: int, sh: int, sw: int) -> tuple[np.ndarray, ...] | None:
    """(ra, rb, ca, cb, ur, uc): the 2-tap rows/columns of the BOX downscale and the source
    of each output row/column of the BOX upscale, or None if some pixel needs more taps."""
    taps = [_two_taps(box_resize_matrix(h, sh)), _two_taps(box_resize_matrix(w, sw)),
            _two_taps(box_resize_matrix(sh, h)), _two_taps(box_resize_matrix(sw, w))]  # fmt: skip
    if any(t is None for t in taps):
        return None
    (ra, rb), (ca, cb), (ur, _), (uc, _) = taps
    return ra, rb, ca, cb, ur, uc


@register("pixelate", "digital")
def pixelate(x: np.ndarray, c: float, rs: RandomStream) -> np.ndarray:
    """Pillow BOX down to int(h c) x int(w c), then BOX back up.

    For CIFAR's factors each downscaled pixel averages one or two inputs per axis (Pillow
    rounds: (a + b + 1) >> 1, horizontal pass first) and the upscale copies the nearest, so
    each output pixel is a rounded average of 4 known inputs: exact, one pass.
    """
    n, h, w, _ = x.shape
    maps = _pixelate_maps(h, w, int(h * c), int(w * c))
    if maps is None:
        return _box_resize(_box_resize(x, int(h * c), int(w * c)), h, w)
    return kernels.box_pixelate(x, *maps)
