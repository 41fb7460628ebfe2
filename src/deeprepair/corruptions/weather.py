"""Weather corruptions: snow, frost, fog, and the held-out spatter."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import cv2
import numpy as np

from . import kernels
from .base import RandomStream, register
from .filters import clipped_zoom_matrix, gaussian_filter, motion_blur


@register("snow", "weather", colour=True)
def snow(x: np.ndarray, p: tuple, rs: RandomStream) -> np.ndarray:
    loc, scale, zoom, threshold, radius, sigma, blend = p
    n, h, w, _ = x.shape
    layer = rs.draw(lambda rng, k: rng.standard_normal((k, h, w), dtype=np.float32) * scale + loc, tag=0)
    ah = clipped_zoom_matrix(h, zoom).astype(np.float32)
    aw = clipped_zoom_matrix(w, zoom).astype(np.float32)
    layer = ah @ layer @ aw.T
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


@lru_cache(maxsize=8)
def frost_layers(scale: float, h: int, w: int) -> tuple[np.ndarray, ...]:
    """The first 5 frost photographs at ``scale`` of their original size (the assets are x0.2:
    scale 0.2 is the stored array itself, larger scales are upsampled bicubically), each mirror-
    tiled where needed to exceed h x w so that a random h x w crop exists. float32 RGB."""
    out = []
    for t in frost_textures()[:5]:
        f = scale / 0.2
        if f != 1.0:
            size = (max(1, round(t.shape[1] * f)), max(1, round(t.shape[0] * f)))  # (width, height)
            t = np.clip(cv2.resize(t.astype(np.float32), size, interpolation=cv2.INTER_CUBIC), 0, 255)
        ph, pw = max(0, h + 1 - t.shape[0]), max(0, w + 1 - t.shape[1])
        if ph or pw:  # mirror-tile (repeated reflection) until the photograph covers the image
            t = np.pad(t, ((0, ph), (0, pw), (0, 0)), mode="symmetric")
        out.append(np.ascontiguousarray(t, dtype=np.float32))
    return tuple(out)


@register("frost", "weather", colour=True)
def frost(x: np.ndarray, p: tuple, rs: RandomStream) -> np.ndarray:
    """Blend a random h x w crop of one of the first 5 frost photographs (as the recipe), taken
    at the size rule's texture scale (x0.2 for CIFAR, x1 for ImageNet-C) and tiled if too small."""
    img_w, frost_w, scale = p
    n, h, w, _ = x.shape
    tex = frost_layers(round(float(scale), 6), h, w)
    th = np.array([t.shape[0] for t in tex])
    tw = np.array([t.shape[1] for t in tex])
    u = rs.draw(lambda rng, k: rng.random((k, 3)))
    idx = np.minimum((u[:, 0] * 5).astype(np.int64), 4)
    top = (u[:, 1] * (th[idx] - h)).astype(np.int64)  # randint(0, fh - h)
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
    draws = 3 * sum((mapsize // step) ** 2 for step in (mapsize >> k for k in range(int(np.log2(mapsize)))))
    r = rs.draw(lambda rng, k: rng.uniform(-1, 1, size=(k, draws)))
    return kernels.plasma_fractal(r, mapsize, float(decay))


@register("fog", "weather")
def fog(x: np.ndarray, p: tuple, rs: RandomStream) -> np.ndarray:
    """Add a plasma-fractal haze. The CIFAR recipe draws a 32x32 map (mapsize default 32),
    ImageNet-C's 256x256 for 224 px: the next power of two of the longer side, cropped."""
    strength, decay = p
    n, h, w, _ = x.shape
    size = 1 << int(np.ceil(np.log2(max(h, w, 2))))
    haze = plasma_fractal(rs, n, size, decay)[:, :h, :w]
    return kernels.fog_blend(x, np.ascontiguousarray(haze), float(strength))


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


@register("spatter", "weather", heldout=True, colour=True)
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
