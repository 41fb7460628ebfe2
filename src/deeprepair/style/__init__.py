"""Style transfer: render clean images in the degradation "style" of failure images."""

from __future__ import annotations

from ..errors import DeepRepairError
from .adain import AdaINStyle
from .base import StyleTransfer
from .fourier import FourierStyle
from .wavelet import WaveletStyle

BACKENDS = {"wavelet": WaveletStyle, "fourier": FourierStyle, "adain": AdaINStyle}


def create_style(name: str = "wavelet", **kwargs) -> StyleTransfer:
    """A style-transfer backend by name (``wavelet``, ``fourier``, or ``adain`` with
    ``checkpoint=`` from ``deeprepair train-style``) with its options."""
    if name not in BACKENDS:
        raise DeepRepairError(f"unknown style backend {name!r}; choose from: {', '.join(BACKENDS)}")
    return BACKENDS[name](**kwargs)


__all__ = ["AdaINStyle", "BACKENDS", "FourierStyle", "StyleTransfer", "WaveletStyle", "create_style"]
