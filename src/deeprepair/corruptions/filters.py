"""Batched linear filters and resampling shared by the corruptions (float32, NHWC).

Convolutions run as one torch call over the whole batch; border handling follows the
recipe's libraries: ``edge`` (skimage/scipy ``nearest``), ``reflect`` (OpenCV's default
BORDER_REFLECT_101, scipy ``mirror``) and ``symmetric`` (scipy ``reflect``).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F


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


def correlate2d(x: np.ndarray, kernel: np.ndarray, mode: str) -> np.ndarray:
    """Correlate every image and channel of ``x`` (N, H, W[, C]) with a 2-D ``kernel``."""
    kernel = np.asarray(kernel, dtype=np.float32)
    kh, kw = kernel.shape
    xp = _pad(np.asarray(x, dtype=np.float32), kh // 2, kw // 2, mode)
    t = torch.from_numpy(np.ascontiguousarray(xp))
    squeeze = t.ndim == 3
    t = t.unsqueeze(-1) if squeeze else t
    n, hp, wp, c = t.shape
    t = t.permute(0, 3, 1, 2).reshape(n * c, 1, hp, wp)
    out = F.conv2d(t, torch.from_numpy(kernel)[None, None])
    out = out.reshape(n, c, out.shape[-2], out.shape[-1]).permute(0, 2, 3, 1)
    out = out[..., 0] if squeeze else out
    return np.ascontiguousarray(out.numpy())


def gaussian_filter(x: np.ndarray, sigma: float, mode: str = "edge", truncate: float = 4.0) -> np.ndarray:
    """Spatial Gaussian blur of a batch, as ``skimage.filters.gaussian`` per image."""
    k = gaussian_kernel1d(sigma, truncate)
    if len(k) == 1:
        return np.asarray(x, dtype=np.float32)
    y = correlate2d(x, k[:, None], mode)
    return correlate2d(y, k[None, :], mode)


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
    squeeze = x.ndim == 3
    xs = x[..., None] if squeeze else x
    n, h, w, c = xs.shape
    p = len(i)
    xp = np.pad(np.asarray(xs, dtype=np.float32), [(0, 0), (p, p), (p, p), (0, 0)], mode="edge")
    wp = w + 2 * p
    flat = xp.reshape(n, -1, c)
    base = ((np.arange(h)[:, None] + p) * wp + np.arange(w)[None, :] + p).reshape(-1)
    out = np.zeros((n, h * w, c), dtype=np.float32)
    for t in range(p):
        off = np.clip(dy[:, t], -p, p) * wp + np.clip(dx[:, t], -p, p)
        idx = base[None, :] + off[:, None]
        out += np.float32(k[t]) * np.take_along_axis(flat, idx[..., None], axis=1)
    out = out.reshape(n, h, w, c)
    return out[..., 0] if squeeze else out
