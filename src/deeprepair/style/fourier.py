"""Amplitude-spectrum style transfer (FDA, Yang & Soatto 2020; amplitude-phase recombination).

An image's Fourier amplitude carries its "style" (contrast, haze, blur, noise level) and the
phase its content. We keep the content's phase and replace, or mix, the amplitude inside a
centred band of the spectrum with the reference's: ``beta`` is the band's half-width as a
fraction of the image size (0.5 = the whole spectrum), ``ratio`` how much of the reference
amplitude enters (1 = swap).
"""

from __future__ import annotations

import torch

from ..errors import DeepRepairError
from .base import StyleTransfer


class FourierStyle(StyleTransfer):
    name = "fourier"

    def __init__(self, beta: float = 0.5, ratio: float = 1.0):
        super().__init__()
        if not 0 < beta <= 0.5:
            raise DeepRepairError(f"fourier beta must be in (0, 0.5], got {beta}")
        if not 0 <= ratio <= 1:
            raise DeepRepairError(f"fourier ratio must be in [0, 1], got {ratio}")
        self.beta, self.ratio = beta, ratio
        self._mask: torch.Tensor | None = None

    def _band(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        m = self._mask
        if m is None or m.shape != (h, w) or m.device != device:
            fy = torch.fft.fftfreq(h, device=device).abs()[:, None]
            fx = torch.fft.fftfreq(w, device=device).abs()[None, :]
            m = ((fy <= self.beta) & (fx <= self.beta)).float() * self.ratio
            self._mask = m
        return m

    def stats(self, images: torch.Tensor) -> torch.Tensor:
        return torch.fft.fft2(images).abs()

    def apply(self, content: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        spec = torch.fft.fft2(content)
        amp, phase = spec.abs(), spec.angle()
        m = self._band(content.shape[2], content.shape[3], content.device)
        amp = amp + m * (stats - amp)
        return torch.fft.ifft2(torch.polar(amp, phase)).real
