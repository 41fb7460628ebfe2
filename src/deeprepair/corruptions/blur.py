"""Blur corruptions: defocus, glass, motion, zoom, and the held-out gaussian blur."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
import torch

from . import kernels
from .base import RandomStream, register
from .filters import apply_pixel_operator, clipped_zoom_matrix, correlate2d, gaussian_filter, motion_blur


@lru_cache(maxsize=16)
def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The recipe's anti-aliased disk: a binary disk on a 17x17 grid, Gaussian-smoothed (3x3);
    for radii above 8 (ImageNet-C) the grid is (2 ceil(radius) + 1)^2 and the smoothing 5x5."""
    g = 8 if radius <= 8 else int(np.ceil(radius))
    t = np.arange(-g, g + 1)
    xx, yy = np.meshgrid(t, t)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float32)
    disk /= disk.sum()
    ks = 3 if radius <= 8 else 5
    k = cv2.GaussianBlur(disk, ksize=(ks, ks), sigmaX=alias_blur)
    k[k < 1e-12] = 0  # weights this small cannot change a stored value (and denormals are slow)
    nz = np.nonzero(k)
    r = int(max(np.abs(nz[0] - g).max(), np.abs(nz[1] - g).max()))  # trim the all-zero border
    return k[g - r : g + 1 + r, g - r : g + 1 + r]


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
    neighbour into (h, w) and leaves the neighbour as it was, for h, w from H - d down to d + 1
    with offsets in {-d .. d-1} (d = max delta). With d = 1 (all CIFAR-10-C severities) the
    offsets are {-1, 0} and, the raster running backwards, every source pixel is still
    unmodified when it is read, so a pass is one gather. With d > 1 (larger images) a source
    may already have been moved: a compiled sequential raster per image, as the recipe.
    """
    sigma, delta, iterations = p
    n, h, w, _ = x.shape
    y = gaussian_filter(x, sigma, "edge")  # 0..255 scale
    y = (y + 1e-3).astype(np.uint8)  # the recipe truncates to uint8 between the two blurs
    if delta == 1:
        hh, ww = np.meshgrid(np.arange(delta + 1, h), np.arange(delta + 1, w), indexing="ij")
        rows = np.arange(n)[:, None, None]
    for it in range(iterations):
        if delta == 1:
            # randint(-1, 1) -> {-1, 0}: one random bit per coordinate
            bits = rs.draw(lambda rng, k: rng.integers(0, 2, size=(k, 2, h - delta - 1, w - delta - 1), dtype=np.int8), tag=it)
            src_h = hh[None] - bits[:, 1].astype(np.int64)
            src_w = ww[None] - bits[:, 0].astype(np.int64)
            y[:, delta + 1 :, delta + 1 :] = y[rows, src_h, src_w]
        elif h > 2 * delta and w > 2 * delta:
            # randint(-d, d) per visited pixel: (dx, dy), visited rows/columns d+1 .. H-d
            offs = rs.draw(lambda rng, k: rng.integers(-delta, delta, size=(k, 2, h - 2 * delta, w - 2 * delta), dtype=np.int8), tag=it)
            kernels.glass_shuffle(y, offs, int(delta))
    return gaussian_filter(y, sigma, "edge", scale=1 / 255.0)


@register("motion_blur", "blur")
def motion_blur_(x: np.ndarray, p: tuple, rs: RandomStream) -> np.ndarray:
    radius, sigma = p
    angles = rs.draw(lambda rng, k: rng.uniform(-45, 45, size=k))
    out = motion_blur(x, radius, sigma, angles)
    return np.rint(out).astype(np.uint8)  # ImageMagick rounds to 8 bit when it writes the PNG


OPERATOR_PIXELS = 32 * 32  # up to this many pixels zoom blur is one (h*w, h*w) matrix


@lru_cache(maxsize=8)
def zoom_blur_operator(h: int, w: int, max_zoom: float, step: float = 0.01) -> np.ndarray:
    """(x + sum_z clipped_zoom(x, z)) / (len(zooms) + 1) as one (h*w, h*w) matrix."""
    zooms = np.arange(1, max_zoom, step)
    m = np.eye(h * w)
    for z in zooms:
        m += np.kron(clipped_zoom_matrix(h, float(z)), clipped_zoom_matrix(w, float(z)))
    return (m / (len(zooms) + 1)).astype(np.float32)


# Speed trick: piece=4 (1,024 CIFAR images a piece), its pixel-operator GEMM gains from the longer
# batch. Pieces of 512 (elastic's) ran 19.5k img/s on 2,000 images against 23.0k in one call, and
# 19.5k on 10,000 against 20.9k in pieces of 1,024 (AMD EPYC, 2 cores, best of 5; a one-off timing, not a
# benchmark; benchmarks/speed_regression.py checks that zoom blur keeps its recorded speed)
@register("zoom_blur", "blur", chunked=False, piece=4)
def zoom_blur(x: np.ndarray, p: tuple, rs: RandomStream) -> np.ndarray:
    """The recipe's average of x and its clipped zooms 1, 1 + step, ... < max_zoom. Small images:
    one matrix over the pixels; larger ones (the matrix would be (h w)^2): per zoom, the separable
    ``A_h X A_w^T`` over the whole batch."""
    max_zoom, step = p
    n, h, w, c = x.shape
    xf = x.astype(np.float32) / 255.0
    if h * w <= OPERATOR_PIXELS:
        return apply_pixel_operator(xf, zoom_blur_operator(h, w, max_zoom, step))
    t = torch.from_numpy(xf).permute(0, 3, 1, 2)  # (n, c, h, w) view
    acc = t.clone()
    zooms = np.arange(1, max_zoom, step)
    for z in zooms:
        ah = torch.from_numpy(clipped_zoom_matrix(h, float(z)).astype(np.float32))
        aw = torch.from_numpy(clipped_zoom_matrix(w, float(z)).astype(np.float32))
        acc += ah @ t @ aw.T
    acc /= len(zooms) + 1
    return np.ascontiguousarray(acc.permute(0, 2, 3, 1).numpy())
