"""Severity parameters of the CIFAR-10-C recipe (Hendrycks & Dietterich, 2019), severities 1..5.

These are the CIFAR-specific values of the public ``make_cifar_c.py`` (smaller kernels and
displacements than ImageNet-C's, for 32x32 images). Each entry is indexed by ``severity - 1``.
"""

from __future__ import annotations

PARAMS: dict[str, tuple] = {
    # noise
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # std of additive N(0, c) on [0,1]
    "shot_noise": (500, 250, 100, 75, 50),  # Poisson(x * c) / c
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),  # salt & pepper amount per value
    "speckle_noise": (0.06, 0.10, 0.12, 0.16, 0.20),  # x + x * N(0, c)
    # blur
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),  # radius, alias
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),  # s, d, it
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),  # radius, sigma
    "zoom_blur": (1.06, 1.11, 1.16, 1.21, 1.26),  # zooms np.arange(1, c, 0.01)
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),  # sigma
    # weather
    "snow": (  # loc, scale, zoom, threshold, blur radius, blur sigma, blend
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ),
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),  # image, frost weight
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),  # strength, wibble decay
    "spatter": (  # loc, scale, sigma, threshold, intensity, mode (0 water, 1 mud)
        (0.62, 0.1, 0.7, 0.7, 0.5, 0),
        (0.65, 0.1, 0.8, 0.7, 0.5, 0),
        (0.65, 0.3, 1, 0.69, 0.5, 0),
        (0.65, 0.1, 0.7, 0.69, 0.6, 1),
        (0.65, 0.1, 0.5, 0.68, 0.6, 1),
    ),
    # digital
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),  # added to HSV value
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # factor around the per-image channel mean
    "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),  # HSV s * a + b
    "elastic_transform": (  # alpha, sigma, affine; all x image size (32)
        (0, 0, 0.08),
        (0.05, 0.2, 0.07),
        (0.08, 0.06, 0.06),
        (0.1, 0.04, 0.05),
        (0.1, 0.03, 0.03),
    ),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),  # box-downscale factor
    "jpeg_compression": (80, 65, 58, 50, 40),  # JPEG quality
}


def param(name: str, severity: int):
    """The recipe's parameter tuple for ``name`` at ``severity`` (1..5)."""
    return PARAMS[name][severity - 1]
