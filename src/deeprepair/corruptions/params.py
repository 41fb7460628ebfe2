"""Severity parameters of the CIFAR-10-C recipe (Hendrycks & Dietterich, 2019), severities 1..5.

PARAMS holds the CIFAR-specific values of the public ``make_cifar_c.py`` (smaller kernels and
displacements than ImageNet-C's, for 32x32 images), IMAGENET_PARAMS those of ``make_imagenet_c.py``
(224x224). Each entry is indexed by ``severity - 1``. ``param(name, severity, size)`` picks the
values for an image size by one rule (below; docs/corruptions.md, "Any image size").
"""

from __future__ import annotations

import math

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
    "elastic_transform": (  # alpha, sigma, affine; all x the image's (shorter) side, 32 here
        (0, 0, 0.08),
        (0.05, 0.2, 0.07),
        (0.08, 0.06, 0.06),
        (0.1, 0.04, 0.05),
        (0.1, 0.03, 0.03),
    ),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),  # box-downscale factor
    "jpeg_compression": (80, 65, 58, 50, 40),  # JPEG quality
}


# ImageNet-C's parameters (``make_imagenet_c.py``, 224x224 images), in the same layout as PARAMS
# except where noted. Elastic: the recipe's pixel values (244 x k) divided by 224, so that they
# are fractions of the image side like the CIFAR row.
IMAGENET_PARAMS: dict[str, tuple] = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    "shot_noise": (60, 25, 12, 5, 3),
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
    "speckle_noise": (0.15, 0.2, 0.35, 0.45, 0.6),
    "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
    "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
    "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    "zoom_blur": ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03)),  # max, step
    "gaussian_blur": (1, 2, 3, 4, 6),
    "snow": (
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
        (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
    ),
    "frost": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
    "fog": ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)),
    "spatter": (
        (0.65, 0.3, 4, 0.69, 0.6, 0),
        (0.65, 0.3, 3, 0.68, 0.6, 0),
        (0.65, 0.3, 2, 0.68, 0.5, 0),
        (0.65, 0.3, 1, 0.65, 1.5, 1),
        (0.67, 0.4, 1, 0.65, 1.5, 1),
    ),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "saturate": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)),
    "elastic_transform": tuple(
        tuple(244 * v / 224 for v in row)
        for row in ((2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02), (0.07, 0.01, 0.02), (0.12, 0.01, 0.02))
    ),
    "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
    "jpeg_compression": (25, 18, 15, 10, 7),
}

# The size rule. ``s`` = the image's shorter side. s <= SMALL: the CIFAR-10-C row, exactly;
# s >= LARGE: the ImageNet-C row; in between every parameter moves linearly with s from the one
# to the other: p = p_cifar + t (p_imagenet - p_cifar), t = (s - SMALL) / (LARGE - SMALL).
# Integer parameters are rounded half up. Parameters that the recipes already give relative to
# the image (elastic's fractions of the side, pixelate's factor, zoom factors) are interpolated the
# same way; fog's map size is always the next power of two of the image's longer side.
SMALL, LARGE = 32, 224

# Positions of integer-valued entries (rounded after interpolation); () for a scalar parameter.
_INTEGER: dict[str, tuple[int, ...]] = {
    "glass_blur": (1, 2),  # max delta, iterations
    "motion_blur": (0,),  # radius
    "snow": (4,),  # motion-blur radius
    "spatter": (5,),  # mode: 0 water, 1 mud
    "jpeg_compression": (0,),  # quality
}

# Entries the CIFAR rows leave implicit, appended to them so that both rows have one layout:
# zoom_blur's step (0.01), frost's texture scale (the recipes downscale the photographs x0.2 for
# CIFAR and use them at full size, x1, for ImageNet).
_CIFAR_EXTRA: dict[str, tuple] = {"zoom_blur": (0.01,), "frost": (0.2,)}
_IMAGENET_EXTRA: dict[str, tuple] = {"frost": (1.0,)}


def size_weight(size: int | None) -> float:
    """t of the size rule: 0 at or below SMALL (CIFAR-10-C), 1 at or above LARGE (ImageNet-C)."""
    if size is None:
        return 0.0
    return min(max((int(size) - SMALL) / (LARGE - SMALL), 0.0), 1.0)


def _row(value) -> tuple:
    return tuple(value) if isinstance(value, tuple) else (value,)


def param(name: str, severity: int, size: int | None = None):
    """The parameter of ``name`` at ``severity`` (1..5) for images whose shorter side is ``size``.

    ``size`` None or <= 32 gives the CIFAR-10-C value of PARAMS (zoom_blur as ``(max, step)`` and
    frost as ``(image weight, frost weight, texture scale)`` at every size); see the size rule above.
    """
    cifar = _row(PARAMS[name][severity - 1]) + _CIFAR_EXTRA.get(name, ())
    t = size_weight(size)
    if t == 0.0:
        out = cifar
    elif t == 1.0:
        out = _row(IMAGENET_PARAMS[name][severity - 1]) + _IMAGENET_EXTRA.get(name, ())
    else:
        inet = _row(IMAGENET_PARAMS[name][severity - 1]) + _IMAGENET_EXTRA.get(name, ())
        out = tuple(a + t * (b - a) for a, b in zip(cifar, inet))
        ints = _INTEGER.get(name, ())
        out = tuple(int(math.floor(v + 0.5)) if i in ints else v for i, v in enumerate(out))
    return out[0] if len(out) == 1 else out


def table(name: str, size: int | None = None) -> tuple:
    """The five severities' parameters of ``name`` that images of shorter side ``size`` are
    rendered with (what ``corrupt``'s manifest and ``deeprepair corruptions --size`` record).

    At ``size`` None or <= 32 this is the CIFAR-10-C row of PARAMS as published (zoom_blur's
    step 0.01 and frost's texture scale 0.2 left implicit, as the recipe does); at other sizes it is
    ``param(name, s, size)`` for s = 1..5, in param's layout (zoom_blur ``(max, step)``, frost
    ``(image weight, frost weight, texture scale)``).
    """
    if size_weight(size) == 0.0:
        return PARAMS[name]
    return tuple(param(name, s, size) for s in range(1, 6))
