"""Blur corruptions: defocus, glass, motion, zoom, and the held-out gaussian blur."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from .base import RandomStream, register
from .filters import apply_pixel_operator, clipped_zoom_matrix, correlate2d, gaussian_filter, motion_blur


@lru_cache(maxsize=8)
def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The recipe's anti-aliased disk: a binary disk on a 17x17 grid, Gaussian-smoothed (3x3)."""
    t = np.arange(-8, 9)
    xx, yy = np.meshgrid(t, t)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float32)
    disk /= disk.sum()
    k = cv2.GaussianBlur(disk, ksize=(3, 3), sigmaX=alias_blur)
    k[k < 1e-12] = 0  # weights this small cannot change a stored value (and denormals are slow)
    nz = np.nonzero(k)
    r = int(max(np.abs(nz[0] - 8).max(), np.abs(nz[1] - 8).max()))  # trim the all-zero border
    return k[8 - r : 9 + r, 8 - r : 9 + r]


@register("defocus_blur", "blur")
def defocus_blur(x: np.ndarray, p: tuple, rs: RandomStream) -> np.ndarray:
    radius, alias = p
    return correlate2d(x, disk_kernel(radius, alias), "reflect", scale=1 / 255.0)


@register("gaussian_blur", "blur", heldout=True)
def gaussian_blur(x: np.ndarray, sigma: float, rs: RandomStream) -> np.ndarray:
    return gaussian_filter(x, sigma, "edge", scale=1 / 255.0)


@register("glass_blur", "blur")
def glass_blur(x: np.ndarray, p: tuple, rs: RandomStream) -> np.ndarray:
    """Blur, locally shuffle pixels, blur again.

    The recipe's "swap" ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on NumPy views copies the
    neighbour into (h, w) and leaves the neighbour as it was. With offsets in {-1, 0} and the
    raster running backwards, every source pixel is still unmodified when it is read, so a
    pass is one gather: ``x[h, w] <- x[h + dy, w + dx]`` for h, w in 2..H-1 (max delta 1).
    """
    sigma, delta, iterations = p
    assert delta == 1, "the vectorised pass relies on max delta 1 (all CIFAR-10-C severities)"
    n, h, w, _ = x.shape
    y = gaussian_filter(x, sigma, "edge")  # 0..255 scale
    y = (y + 1e-3).astype(np.uint8)  # the recipe truncates to uint8 between the two blurs
    hh, ww = np.meshgrid(np.arange(delta + 1, h), np.arange(delta + 1, w), indexing="ij")
    rows = np.arange(n)[:, None, None]
    for it in range(iterations):
        # randint(-1, 1) -> {-1, 0}: one random bit per coordinate
        bits = rs.draw(lambda rng, k: rng.integers(0, 2, size=(k, 2, h - delta - 1, w - delta - 1), dtype=np.int8), tag=it)
        src_h = hh[None] - bits[:, 1].astype(np.int64)
        src_w = ww[None] - bits[:, 0].astype(np.int64)
        y[:, delta + 1 :, delta + 1 :] = y[rows, src_h, src_w]
    return gaussian_filter(y, sigma, "edge", scale=1 / 255.0)


@register("motion_blur", "blur")
def motion_blur_(x: np.ndarray, p: tuple, rs: RandomStream) -> np.ndarray:
    radius, sigma = p
    angles = rs.draw(lambda rng, k: rng.uniform(-45, 45, size=k))
    out = motion_blur(x, radius, sigma, angles)
    return np.rint(out).astype(np.uint8)  # ImageMagick rounds to 8 bit when it writes the PNG


@lru_cache(maxsize=8)
def zoom_blur_operator(h: int, w: int, max_zoom: float) -> np.ndarray:
    """(x + sum_z clipped_zoom(x, z)) / (len(zooms) + 1) as one (h*w, h*w) matrix."""
    zooms = np.arange(1, max_zoom, 0.01)
    m = np.eye(h * w)
    for z in zooms:
        m += np.kron(clipped_zoom_matrix(h, float(z)), clipped_zoom_matrix(w, float(z)))
    return (m / (len(zooms) + 1)).astype(np.float32)


@register("zoom_blur", "blur", chunked=False)
def zoom_blur(x: np.ndarray, max_zoom: float, rs: RandomStream) -> np.ndarray:
    n, h, w, c = x.shape
    return apply_pixel_operator(x.astype(np.float32) / 255.0, zoom_blur_operator(h, w, max_zoom))
