"""Batched linear filters and resampling shared by the corruptions (float32, NHWC).

Convolutions run as one OpenCV call over the whole batch; border handling follows the
recipe's libraries: ``edge`` (skimage/scipy ``nearest``), ``reflect`` (OpenCV's default
BORDER_REFLECT_101, scipy ``mirror``) and ``symmetric`` (scipy ``reflect``).
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
import torch

from . import kernels


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """scipy.ndimage's Gaussian kernel: radius ``int(truncate * sigma + 0.5)``, sum 1."""
    radius = int(truncate * float(sigma) + 0.5)
    if sigma <= 0 or radius == 0:
        return np.ones(1, dtype=np.float64)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _pad(x: np.ndarray, ph: int, pw: int, mode: str) -> np.ndarray:
    if ph == 0 and pw == 0:
        return x
    width = [(0, 0), (ph, ph), (pw, pw)] + [(0, 0)] * (x.ndim - 3)
    return np.pad(x, width, mode=mode)


def _mosaic_filter(x: np.ndarray, ph: int, pw: int, mode: str, fn) -> np.ndarray:
    """Pad each image, stack the batch into one tall image, filter it with OpenCV, crop.

    The padding of each image holds the border values its own filter needs, so one OpenCV
    call filters the whole batch exactly as per-image calls would.
    """
    x = np.asarray(x, dtype=np.float32)
    n, h, w = x.shape[:3]
    xp = _pad(x, ph, pw, mode)
    tall = np.ascontiguousarray(xp).reshape(n * (h + 2 * ph), w + 2 * pw, -1)
    out = fn(tall).reshape(xp.shape)
    return np.ascontiguousarray(out[:, ph : ph + h, pw : pw + w])


def correlate2d(x: np.ndarray, kernel: np.ndarray, mode: str) -> np.ndarray:
    """Correlate every image and channel of ``x`` (N, H, W[, C]) with a 2-D ``kernel``."""
    k = np.asarray(kernel, dtype=np.float32)
    x = np.asarray(x, dtype=np.float32)
    xs = x[..., None] if x.ndim == 3 else x
    out = kernels.correlate_valid(_pad(xs, k.shape[0] // 2, k.shape[1] // 2, mode), k)
    return out[..., 0] if x.ndim == 3 else out


def gaussian_filter(x: np.ndarray, sigma: float, mode: str = "edge", truncate: float = 4.0) -> np.ndarray:
    """Spatial Gaussian blur of a batch, as ``skimage.filters.gaussian`` per image."""
    k = gaussian_kernel1d(sigma, truncate).astype(np.float32)
    if len(k) == 1:
        return np.asarray(x, dtype=np.float32)
    r = len(k) // 2
    return _mosaic_filter(x, r, r, mode,
                          lambda t: cv2.sepFilter2D(t, cv2.CV_32F, k, k, borderType=cv2.BORDER_REPLICATE))  # fmt: skip


@lru_cache(maxsize=64)
def clipped_zoom_matrix(size: int, zoom: float) -> np.ndarray:
    """Matrix A with ``A @ v`` = the recipe's clipped_zoom of a 1-D signal ``v`` of ``size``.

    clipped_zoom crops the centre ``ceil(size / zoom)``, zooms it back up with linear
    interpolation (scipy.ndimage.zoom, order 1) and trims the centre ``size``. The 2-D
    operation is separable: ``A @ X @ A.T`` per channel.
    """
    ch = int(np.ceil(size / zoom))
    top = (size - ch) // 2
    out_len = int(round(ch * zoom))
    trim = (out_len - size) // 2
    a = np.zeros((size, size), dtype=np.float64)
    scale = (ch - 1) / (out_len - 1) if out_len > 1 else 0.0
    for i in range(size):
        c = (i + trim) * scale
        f = int(np.floor(c))
        w = c - f
        a[i, top + f] += 1 - w
        if w > 0:
            a[i, top + f + 1] += w
    return a


def apply_pixel_operator(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply a linear map ``m`` (H*W, H*W) over the pixels of every image and channel."""
    n, h, w, c = x.shape
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    flat = t.permute(0, 3, 1, 2).reshape(n * c, h * w)
    out = flat @ torch.from_numpy(np.ascontiguousarray(m.T, dtype=np.float32))
    return np.ascontiguousarray(out.reshape(n, c, h, w).permute(0, 2, 3, 1).numpy())


def motion_blur(x: np.ndarray, radius: int, sigma: float, angles_deg: np.ndarray) -> np.ndarray:
    """ImageMagick's motion blur, per image angle: a one-sided Gaussian line kernel.

    Tap ``i`` (0 .. 2*radius) has weight ``exp(-i^2 / 2 sigma^2)`` (normalised) and samples
    the pixel at offset ``(ceil(i cos a - .5), ceil(i sin a - .5))``, edges replicated.
    Taps whose weight is below 1e-6 are skipped (they cannot move a stored 8-bit value).
    """
    width = 2 * int(np.ceil(radius)) + 1
    i = np.arange(width, dtype=np.float64)
    k = np.exp(-(i**2) / (2.0 * sigma**2))
    k /= k.sum()
    keep = k >= 1e-6
    i, k = i[keep], k[keep]
    a = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))[:, None]
    dx = np.ceil(i[None] * np.cos(a) - 0.5).astype(np.int64)  # (N, taps)
    dy = np.ceil(i[None] * np.sin(a) - 0.5).astype(np.int64)
    xs = np.asarray(x, dtype=np.float32)
    out = kernels.shifted_sum(xs[..., None] if xs.ndim == 3 else xs, dy, dx, k.astype(np.float32))
    return out[..., 0] if xs.ndim == 3 else out
