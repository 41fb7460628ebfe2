"""Image fidelity metrics on uint8 NHWC batches: PSNR and SSIM, vectorised over the batch.

``ssim`` is the SSIM of Wang, Bovik, Sheikh & Simoncelli (IEEE TIP 2004) computed per RGB channel
and averaged over channels and over the "valid" window positions (no padding), with
``K1 = 0.01``, ``K2 = 0.03`` and dynamic range ``L = 255``:

* ``window="gaussian"`` (default): 11x11 Gaussian window, sigma 1.5, population (biased) variances
  -- the setting of the paper; equals ``skimage.metrics.structural_similarity(a, b,
  channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False)``;
* ``window="uniform"``: 7x7 box window with sample (N-1) covariances -- equals scikit-image's
  default ``structural_similarity(a, b, channel_axis=-1, data_range=255)``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["psnr", "ssim"]

_K1, _K2, _L = 0.01, 0.03, 255.0


def _check_pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    if a.ndim == 3:  # one HWC image -> batch of one
        a, b = a[None], b[None]
    if a.ndim != 4:
        raise ValueError(f"expected NHWC (or HWC) arrays, got shape {a.shape}")
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise TypeError(f"expected uint8 images, got {a.dtype} and {b.dtype}")
    return a, b


def psnr(a, b) -> np.ndarray:
    """Per-image PSNR in dB (peak 255) between uint8 NHWC batches; ``inf`` where identical."""
    a, b = _check_pair(a, b)
    diff = a.astype(np.float64) - b.astype(np.float64)
    mse = np.mean(diff * diff, axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10((_L * _L) / mse)


def _gaussian_kernel(sigma: float = 1.5, radius: int = 5) -> np.ndarray:
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _filter_valid(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of (N, H, W, C) float64 with 1-D kernel k along H and W."""
    w = k.size
    x = np.lib.stride_tricks.sliding_window_view(x, w, axis=1) @ k  # (N, H-w+1, W, C)
    return np.lib.stride_tricks.sliding_window_view(x, w, axis=2) @ k  # (N, H-w+1, W-w+1, C)


def ssim(a, b, window: str = "gaussian", chunk: int = 1024) -> np.ndarray:
    """Per-image mean SSIM between uint8 NHWC batches (see module docstring for the definition).

    Returns a float64 array of shape (N,); identical images give exactly 1.0.
    """
    a, b = _check_pair(a, b)
    if window == "gaussian":
        k = _gaussian_kernel(1.5, 5)
        cov_norm = 1.0
    elif window == "uniform":
        k = np.full(7, 1.0 / 7.0)
        n = k.size * k.size
        cov_norm = n / (n - 1.0)
    else:
        raise ValueError(f"window must be 'gaussian' or 'uniform', got {window!r}")
    if a.shape[1] < k.size or a.shape[2] < k.size:
        raise ValueError(f"images must be at least {k.size}x{k.size}, got {a.shape[1:3]}")

    c1 = (_K1 * _L) ** 2
    c2 = (_K2 * _L) ** 2
    out = np.empty(a.shape[0], dtype=np.float64)
    for s in range(0, a.shape[0], chunk):
        x = a[s : s + chunk].astype(np.float64)
        y = b[s : s + chunk].astype(np.float64)
        mx, my = _filter_valid(x, k), _filter_valid(y, k)
        vx = cov_norm * (_filter_valid(x * x, k) - mx * mx)
        vy = cov_norm * (_filter_valid(y * y, k) - my * my)
        cxy = cov_norm * (_filter_valid(x * y, k) - mx * my)
        num = (2.0 * mx * my + c1) * (2.0 * cxy + c2)
        den = (mx * mx + my * my + c1) * (vx + vy + c2)
        out[s : s + chunk] = np.mean(num / den, axis=(1, 2, 3))
    return out
