"""Batched linear filters and resampling shared by the corruptions (float32, NHWC).

Filters are compiled loops over the whole batch; border handling follows the
recipe's libraries: ``edge`` (skimage/scipy ``nearest``), ``reflect`` (OpenCV's default
BORDER_REFLECT_101, scipy ``mirror``) and ``symmetric`` (scipy ``reflect``).
"""

from __future__ import annotations

from functools import lru_cache

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


@lru_cache(maxsize=64)
def border_index(size: int, radius: int, mode: str) -> np.ndarray:
    """Source index of each padded coordinate -radius .. size+radius-1 for a border mode."""
    return np.pad(np.arange(size), radius, mode=mode).astype(np.int64)


def _nhwc(x: np.ndarray) -> np.ndarray:
    return x[..., None] if x.ndim == 3 else x


def correlate2d(x: np.ndarray, kernel: np.ndarray, mode: str, scale: float = 1.0) -> np.ndarray:
    """Correlate every image and channel of ``x`` (N, H, W[, C]) with a 2-D ``kernel`` (x scale)."""
    k = np.asarray(kernel, dtype=np.float64) * scale
    xs = _nhwc(x)
    rix = border_index(xs.shape[1], k.shape[0] // 2, mode)
    cix = border_index(xs.shape[2], k.shape[1] // 2, mode)
    out = kernels.filter2d(xs, k.astype(np.float32), rix, cix)
    return out[..., 0] if x.ndim == 3 else out


def gaussian_filter(x: np.ndarray, sigma: float, mode: str = "edge", truncate: float = 4.0, scale: float = 1.0) -> np.ndarray:
    """Spatial Gaussian blur of a batch (x scale), as ``skimage.filters.gaussian`` per image."""
    k = gaussian_kernel1d(sigma, truncate)
    xs = _nhwc(x)
    if len(k) == 1:
        return np.asarray(x, dtype=np.float32) * np.float32(scale)
    r = len(k) // 2
    rix, cix = border_index(xs.shape[1], r, mode), border_index(xs.shape[2], r, mode)
    out = kernels.sep_filter(xs, (k * scale).astype(np.float32), k.astype(np.float32), rix, cix)
    return out[..., 0] if x.ndim == 3 else out


@lru_cache(maxsize=32)
def gaussian_matrix(size: int, sigma: float, mode: str, truncate: float = 4.0) -> np.ndarray:
    """The 1-D Gaussian filter of a signal of ``size`` (border ``mode``) as a matrix."""
    k = gaussian_kernel1d(sigma, truncate)
    idx = border_index(size, len(k) // 2, mode)
    m = np.zeros((size, size))
    for i in range(size):
        np.add.at(m[i], idx[i : i + len(k)], k)
    return m


def smooth_fields(u: np.ndarray, sigma: float, mode: str, truncate: float = 4.0) -> np.ndarray:
    """Gaussian-smooth single-channel maps (N, H, W) as two batched matrix products."""
    n, h, w = u.shape
    gh = torch.from_numpy(gaussian_matrix(h, sigma, mode, truncate).astype(np.float32))
    gw = torch.from_numpy(gaussian_matrix(w, sigma, mode, truncate).astype(np.float32))
    return (gh @ torch.from_numpy(np.asarray(u, dtype=np.float32)) @ gw.T).numpy()


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
