"""Weather corruptions: snow, frost, fog, and the held-out spatter."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import cv2
import numpy as np

from . import kernels
from .base import RandomStream, register
from .filters import clipped_zoom_matrix, gaussian_filter, motion_blur


@register("snow", "weather")
def snow(x: np.ndarray, p: tuple, rs: RandomStream) -> np.ndarray:
    loc, scale, zoom, threshold, radius, sigma, blend = p
    n, h, w, _ = x.shape
    layer = rs.draw(lambda rng, k: rng.standard_normal((k, h, w), dtype=np.float32) * scale + loc, tag=0)
    a = clipped_zoom_matrix(h, zoom).astype(np.float32)
    layer = a @ layer @ a.T
    layer[layer < threshold] = 0
    layer = (np.clip(layer, 0, 1) * 255).astype(np.uint8)  # the recipe stores it as an 8-bit PNG
    angles = rs.draw(lambda rng, k: rng.uniform(-135, -45, size=k), tag=1)
    layer = np.rint(motion_blur(layer, radius, sigma, angles)).astype(np.float32) / 255.0
    return kernels.snow_blend(x, layer, float(blend))


@lru_cache(maxsize=1)
def frost_textures() -> tuple[np.ndarray, ...]:
    """The recipe's frost photographs, downscaled x0.2, RGB (see assets/NOTICE)."""
    with resources.files(__package__).joinpath("assets/frost.npz").open("rb") as f:
        data = np.load(f)
        return tuple(data[f"frost{i}"] for i in range(1, 7))


@register("frost", "weather")
def frost(x: np.ndarray, p: tuple, rs: RandomStream) -> np.ndarray:
    """Blend a random 32x32 crop of one of the first 5 frost photographs (as the recipe)."""
    img_w, frost_w = p
    n, h, w, _ = x.shape
    tex = frost_textures()[:5]
    th = np.array([t.shape[0] for t in tex])
    tw = np.array([t.shape[1] for t in tex])
    u = rs.draw(lambda rng, k: rng.random((k, 3)))
    idx = np.minimum((u[:, 0] * 5).astype(np.int64), 4)
    top = (u[:, 1] * (th[idx] - h)).astype(np.int64)  # randint(0, fh - 32)
    left = (u[:, 2] * (tw[idx] - w)).astype(np.int64)
    crops = np.empty((n, h, w, 3), dtype=np.float32)
    for i, t in enumerate(tex):  # 5 gathers, one per photograph
        sel = np.nonzero(idx == i)[0]
        if len(sel):
            rows = top[sel, None, None] + np.arange(h)[None, :, None]
            cols = left[sel, None, None] + np.arange(w)[None, None, :]
            crops[sel] = t[rows, cols]
    return (img_w * x.astype(np.float32) + frost_w * crops) / 255.0


def plasma_fractal(rs: RandomStream, n: int, mapsize: int, decay: float) -> np.ndarray:
    """Diamond-square height maps (n, mapsize, mapsize) in [0, 1], one per image."""
    m = np.zeros((n, mapsize, mapsize), dtype=np.float64)
    step, wibble, level = mapsize, 100.0, 0
    while step >= 2:
        g = mapsize // step
        r = rs.draw(lambda rng, k: rng.uniform(-1, 1, size=(k, 3, g, g)), tag=level)
        r *= wibble * wibble  # the recipe's wibble * uniform(-wibble, wibble)
        half = step // 2
        corner = m[:, 0::step, 0::step]
        sq = corner + np.roll(corner, -1, axis=1)
        sq = sq + np.roll(sq, -1, axis=2)
        m[:, half::step, half::step] = sq / 4 + r[:, 0]
        dr, ul = m[:, half::step, half::step], m[:, 0::step, 0::step]
        lt = dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=2)
        td = dr + np.roll(dr, 1, axis=2) + ul + np.roll(ul, -1, axis=1)
        m[:, 0::step, half::step] = lt / 4 + r[:, 1]
        m[:, half::step, 0::step] = td / 4 + r[:, 2]
        step, wibble, level = half, wibble / decay, level + 1
    m -= m.min(axis=(1, 2), keepdims=True)
    return m / m.max(axis=(1, 2), keepdims=True)


@register("fog", "weather")
def fog(x: np.ndarray, p: tuple, rs: RandomStream) -> np.ndarray:
    """Add a plasma-fractal haze; the CIFAR recipe draws a 32x32 map (mapsize default 32)."""
    strength, decay = p
    n, h, w, _ = x.shape
    size = 1 << int(np.ceil(np.log2(max(h, w, 2))))
    x = x.astype(np.float32) / 255.0
    max_val = x.max(axis=(1, 2, 3), keepdims=True)
    haze = plasma_fractal(rs, n, size, decay)[:, :h, :w, None].astype(np.float32)
    return (x + strength * haze) * max_val / (max_val + strength)


def _water_mask(liquid: np.ndarray) -> np.ndarray:
    """The recipe's water-drop shading for one 8-bit liquid layer (OpenCV, per image)."""
    dist = 255 - cv2.Canny(liquid, 50, 150)
    dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
    dist = cv2.equalizeHist(dist)
    ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float32)
    dist = cv2.filter2D(dist, cv2.CV_8U, ker)
    return cv2.blur(dist, (3, 3)).astype(np.float32)


@register("spatter", "weather", heldout=True)
def spatter(x: np.ndarray, p: tuple, rs: RandomStream) -> np.ndarray:
    loc, scale, sigma, threshold, intensity, mode = p
    n, h, w, _ = x.shape
    x = x.astype(np.float32) / 255.0
    liquid = rs.draw(lambda rng, k: rng.normal(loc, scale, size=(k, h, w)))
    liquid = gaussian_filter(liquid, sigma, "edge")
    liquid[liquid < threshold] = 0
    if mode == 0:  # water: per-image OpenCV edge and distance transforms
        liquid8 = (np.clip(liquid, 0, 1) * 255).astype(np.uint8)
        m = np.stack([liquid8[i] * _water_mask(liquid8[i]) for i in range(n)])
        peak = m.max(axis=(1, 2), keepdims=True)
        m = np.divide(m, peak, out=np.zeros_like(m), where=peak > 0) * intensity
        color = np.array([175, 238, 238], dtype=np.float32) / 255.0
        return x + m[..., None] * color
    m = gaussian_filter((liquid > threshold).astype(np.float32), intensity, "edge")  # mud
    m[m < 0.8] = 0
    color = np.array([63, 42, 20], dtype=np.float32) / 255.0
    return x * (1 - m[..., None]) + color * m[..., None]
