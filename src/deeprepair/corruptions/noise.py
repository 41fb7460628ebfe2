"""Noise corruptions: gaussian, shot (Poisson), impulse (salt & pepper), speckle.

The recipe adds noise in float and stores ``uint8(clip(.) * 255)``. For a uint8 input pixel
``x`` the stored value therefore follows a discrete distribution over 0..255 that depends only
on ``x`` and the severity. We compute that distribution exactly (its CDF, ``cdf[x, j] =
P(out <= j | x)``) and sample it by inversion with 16 random bits per value: one table
lookup per value instead of a float normal or Poisson draw. Probabilities are resolved to
2**-16, far below what 8-bit storage can show.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.special import ndtr, pdtr

from . import kernels
from .base import RandomStream, register

_U = 1 << 16
_J = np.arange(256, dtype=np.float64)
_X = np.arange(256, dtype=np.float64)[:, None]


def _inverse_cdf_table(cdf: np.ndarray) -> np.ndarray:
    """uint8 table ``t[x, u]`` = smallest j with ``cdf[x, j] > (u + 0.5) / 2**16``."""
    cdf = np.array(cdf, dtype=np.float64)
    cdf[:, -1] = 1.0
    grid = (np.arange(_U) + 0.5) / _U
    first = np.searchsorted(grid, cdf, side="left")  # first u whose grid point reaches cdf[x, j]
    counts = np.zeros((256, _U + 1), dtype=np.int32)
    np.add.at(counts, (np.arange(256)[:, None], first), 1)
    return np.cumsum(counts[:, :_U], axis=1).astype(np.uint8)


@lru_cache(maxsize=12)  # 16 MB each; one image size needs at most 10 (shot and speckle x 5 severities)
def noise_table(name: str, c: float) -> np.ndarray:
    """Inverse-CDF table of the stored value for ``name`` with parameter ``c`` (flattened)."""
    if name == "gaussian_noise":  # out = floor(x + 255 n), n ~ N(0, c)
        cdf = ndtr((_J + 1 - _X) / (255.0 * c))
    elif name == "speckle_noise":  # out = floor(x (1 + n)), n ~ N(0, c)
        with np.errstate(divide="ignore"):
            cdf = ndtr(((_J + 1) / _X - 1) / c)
        cdf[0] = 1.0  # a black pixel stays black
    elif name == "shot_noise":  # out = uint8(clip(k / c, 0, 1) * 255), k ~ Poisson(x c / 255)
        k = np.arange(int(c) + 1, dtype=np.float64)
        out_k = np.uint8(np.clip(k / c, 0, 1) * 255)  # the recipe's own float64 expression
        kmax = np.searchsorted(out_k, np.arange(256), side="right") - 1  # last k with out <= j
        with np.errstate(invalid="ignore"):
            cdf = pdtr(np.maximum(kmax, 0)[None, :], _X * c / 255.0)
        cdf = np.where(kmax[None, :] < 0, 0.0, cdf)
    else:
        raise KeyError(name)
    return _inverse_cdf_table(cdf).reshape(-1)


def _sample(x: np.ndarray, table: np.ndarray, rs: RandomStream) -> np.ndarray:
    return kernels.table_sample(x, rs.bits16(x.shape[1:]), table)


@lru_cache(maxsize=8)
def gaussian_offsets(c: float) -> np.ndarray:
    """Inverse-CDF table (2**16 entries) of floor(255 n), n ~ N(0, c): the stored shift."""
    k = np.arange(-256, 256, dtype=np.float64)
    cdf = ndtr((k + 1) / (255.0 * c))  # P(floor(255 n) <= k)
    cdf[-1] = 1.0  # shifts beyond +-255 clip like +-255 (matters for ImageNet-C's larger c)
    grid = (np.arange(_U) + 0.5) / _U
    return k[np.searchsorted(cdf, grid, side="right")].astype(np.int32)


@register("gaussian_noise", "noise")
def gaussian_noise(x: np.ndarray, c: float, rs: RandomStream) -> np.ndarray:
    """out = clip(x + floor(255 n)): the recipe's uint8(clip(x/255 + n, 0, 1) * 255)."""
    return kernels.add_offsets(x, rs.bits16(x.shape[1:]), gaussian_offsets(c))


@register("shot_noise", "noise")
def shot_noise(x: np.ndarray, c: float, rs: RandomStream) -> np.ndarray:
    return _sample(x, noise_table("shot_noise", c), rs)


@register("speckle_noise", "noise", heldout=True)
def speckle_noise(x: np.ndarray, c: float, rs: RandomStream) -> np.ndarray:
    return _sample(x, noise_table("speckle_noise", c), rs)


@register("impulse_noise", "noise")
def impulse_noise(x: np.ndarray, c: float, rs: RandomStream) -> np.ndarray:
    """Each value (per channel) is replaced with probability c, by 0 or 255 with equal odds."""
    return kernels.impulse(x, rs.bits16(x.shape[1:] + (2,)), round(c * _U))
