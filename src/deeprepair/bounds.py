"""Confidence bounds on proportions and paired differences, and mean ± spread: the one place the
tool's statistics live (numpy and scipy only, no torch).

- ``wilson``: the Wilson score interval of a proportion (two-sided), for reporting;
  ``wilson_interval`` is the same over arrays of counts (the gate scores every threshold at once).
- ``clopper_pearson_upper``: the exact one-sided upper bound of a proportion (Clopper & Pearson
  1934), the bound a stated break limit is certified with: for k breaks among n images the
  original got right, the true break rate is <= the bound with the given confidence.
- ``clopper_pearson_min_n``: how many images a validation set needs before any bound (with 0
  breaks) can reach a limit.
- ``paired_change_lower``: a one-sided lower bound on the paired accuracy change of two models on
  the same images (exact McNemar: a Clopper-Pearson bound on the share of discordant pairs that
  the new model wins).
- ``mean_std``: "mean ± sample std" of a few seeds.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import beta

__all__ = ["wilson", "wilson_interval", "clopper_pearson_upper", "clopper_pearson_min_n", "paired_change_lower", "mean_std"]


def wilson_interval(k, n, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval ``(low, high)`` for proportions k/n, vectorised over arrays of ``k``
    (and ``n``); (0, 1) where n = 0."""
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        d = 1 + z * z / n
        c = (p + z * z / (2 * n)) / d
        h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    empty = n <= 0
    return np.where(empty, 0.0, np.maximum(0.0, c - h)), np.where(empty, 1.0, np.minimum(1.0, c + h))


def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    """Wilson score interval ``[low, high]`` for a proportion k/n (95% two-sided by default)."""
    low, high = wilson_interval(k, n, z)
    return [float(low), float(high)]


def clopper_pearson_upper(k, n, confidence: float = 0.95):
    """Exact one-sided upper confidence bound of a proportion with ``k`` successes in ``n`` trials:
    the p with P(Binomial(n, p) <= k) = 1 - confidence; 1 where k = n or n = 0. Vectorised over
    arrays of ``k`` (and ``n``)."""
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        ub = beta.ppf(confidence, k + 1, np.maximum(n - k, 1e-300))
    ub = np.where((n <= 0) | (k >= n), 1.0, ub)
    return float(ub) if ub.ndim == 0 else ub


def clopper_pearson_min_n(limit: float, confidence: float = 0.95) -> int:
    """The fewest trials for which 0 successes give an upper bound <= ``limit``:
    (1 - limit)^n <= 1 - confidence, i.e. n >= log(1 - confidence) / log(1 - limit)."""
    return int(math.ceil(math.log(1 - confidence) / math.log(1 - limit)))


def paired_change_lower(right_before: np.ndarray, right_after: np.ndarray, confidence: float = 0.95) -> float:
    """One-sided lower bound on accuracy(after) - accuracy(before) over the same images (exact
    McNemar): of the d discordant images, w are won (wrong before, right after); the share won
    has the exact lower bound L, so the change is >= (2 L - 1) d / n with the given confidence."""
    rb, ra = np.asarray(right_before, bool), np.asarray(right_after, bool)
    n = len(rb)
    if n == 0:
        return 0.0
    won, lost = int((~rb & ra).sum()), int((rb & ~ra).sum())
    d = won + lost
    if d == 0:
        return 0.0
    low = 0.0 if won == 0 else float(beta.ppf(1 - confidence, won, lost + 1))
    return (2 * low - 1) * d / n


def mean_std(values, digits: int = 2, scale: float = 1.0) -> str:
    """``"m ± s"`` (sample std, ddof 1) of a few seeds' values, each statistic times ``scale`` (100:
    shares as percentages); ``"m"`` for one value, ``"n/a"`` for none (``None`` values are left out)."""
    v = np.array([float(x) for x in values if x is not None])
    if not len(v):
        return "n/a"
    if len(v) == 1:
        return f"{v[0] * scale:.{digits}f}"
    return f"{v.mean() * scale:.{digits}f} ± {v.std(ddof=1) * scale:.{digits}f}"
