"""Training-free photorealistic style transfer in a wavelet basis: by default the undecimated
B3-spline "starlet" (a trous) transform, optionally the orthonormal Haar one (``basis="haar"``).

Degradations live in characteristic bands: noise and JPEG blocks in the fine detail bands,
blur is their absence, haze, contrast and brightness in the coarse approximation. We
decompose content and reference into wavelet bands (starlet: the bands sum back to the image;
Haar: exactly invertible), match the content's coefficients to the reference's per band and channel, and
invert. Matching modes: ``energy`` (the default: per detail band and channel, shrink the
content's coefficients where the reference has less energy -- blur -- and add the
reference's own coefficients where it has more -- noise, blocks, snow -- so the output's band
energy equals the reference's; the coarse band gets the reference's overall brightness and
contrast, pooled over channels so the content keeps its colours), ``hist`` (quantile/histogram matching: the content's coefficient
ranks take the reference's values, which carries the reference's noise level and
distribution while keeping the content's spatial layout), ``meanstd`` (shift and scale, the
AdaIN statistic), and ``wct`` (whitening-colouring across the 3 channels, as in WCT2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import DeepRepairError
from .base import StyleTransfer


def haar_forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One orthonormal Haar level: approximation (B,C,H/2,W/2) and details (B,C,3,H/2,W/2)."""
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    ll = (a + b + c + d) * 0.5
    lh = (a - b + c - d) * 0.5
    hl = (a + b - c - d) * 0.5
    hh = (a - b - c + d) * 0.5
    return ll, torch.stack([lh, hl, hh], 2)


def haar_inverse(ll: torch.Tensor, det: torch.Tensor) -> torch.Tensor:
    """Exact inverse of ``haar_forward``."""
    lh, hl, hh = det.unbind(2)
    a = (ll + lh + hl + hh) * 0.5
    b = (ll - lh + hl - hh) * 0.5
    c = (ll + lh - hl - hh) * 0.5
    d = (ll - lh - hl + hh) * 0.5
    B, C, h, w = ll.shape
    out = ll.new_empty(B, C, 2 * h, 2 * w)
    out[..., 0::2, 0::2], out[..., 0::2, 1::2] = a, b
    out[..., 1::2, 0::2], out[..., 1::2, 1::2] = c, d
    return out


def decompose(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Bands as a list of (B, C, n_k) tensors: the detail bands of each level, fine to coarse
    (each band's three orientations flattened together), then the final approximation."""
    bands = []
    for _ in range(levels):
        x, det = haar_forward(x)
        bands.append(det.flatten(2))
    bands.append(x.flatten(2))
    return bands


def recompose(bands: list[torch.Tensor], shape: torch.Size, levels: int) -> torch.Tensor:
    B, C, H, W = shape
    sizes = [(H >> (k + 1), W >> (k + 1)) for k in range(levels)]
    x = bands[-1].view(B, C, *sizes[-1])
    for k in reversed(range(levels)):
        x = haar_inverse(x, bands[k].view(B, C, 3, *sizes[k]))
    return x


_B3 = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)


def starlet_decompose(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Isotropic undecimated ("a trous", B3-spline) wavelet bands, flattened (B, C, H*W):
    details d_1..d_J (fine to coarse), then the smooth residual; they sum back to ``x`` exactly.

    No subsampling, so shrinking or adding detail leaves no block artefacts (unlike Haar).
    """
    b, c, h, w = x.shape
    w0, w1, w2 = _B3[:3]
    cur, bands = x, []
    for j in range(levels):
        d = 2**j
        pad = 2 * d
        if pad >= min(h, w):
            break
        # separable 5-tap B3 filter with holes, as sums of shifted slices (4x faster than conv2d here)
        p = F.pad(cur, (pad, pad, 0, 0), mode="reflect")
        sm = torch.add(p[..., :w], p[..., 4 * d:4 * d + w]).mul_(w0)
        sm.add_(torch.add(p[..., d:d + w], p[..., 3 * d:3 * d + w]), alpha=w1).add_(p[..., 2 * d:2 * d + w], alpha=w2)
        p = F.pad(sm, (0, 0, pad, pad), mode="reflect")
        sm = torch.add(p[..., :h, :], p[..., 4 * d:4 * d + h, :]).mul_(w0)
        sm.add_(torch.add(p[..., d:d + h, :], p[..., 3 * d:3 * d + h, :]), alpha=w1).add_(p[..., 2 * d:2 * d + h, :], alpha=w2)
        bands.append((cur - sm).reshape(b, c, h * w))
        cur = sm
    bands.append(cur.reshape(b, c, h * w))
    return bands


def max_levels(h: int, w: int) -> int:
    n = 0
    while h % 2 == 0 and w % 2 == 0 and min(h, w) > 2:
        h, w, n = h // 2, w // 2, n + 1
    return n


class WaveletStyle(StyleTransfer):
    """Per band and channel statistic matching over ``levels`` wavelet levels, starlet (default)
    or Haar basis (see module doc)."""

    name = "wavelet"
    MODES = ("energy", "hist", "meanstd", "wct")

    BASES = ("starlet", "haar")

    def __init__(self, levels: int = 3, mode: str = "energy", coarse: str | None = None,
                 basis: str = "starlet"):
        super().__init__()
        if mode not in self.MODES or (coarse is not None and coarse not in self.MODES):
            raise DeepRepairError(f"wavelet mode must be one of {self.MODES}, got {mode!r}")
        if basis not in self.BASES:
            raise DeepRepairError(f"wavelet basis must be one of {self.BASES}, got {basis!r}")
        self.levels, self.mode, self.coarse, self.basis = levels, mode, coarse or mode, basis

    def _decompose(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.basis == "starlet":
            return starlet_decompose(x, self.levels)
        return decompose(x, self._levels(x))

    def _recompose(self, bands: list[torch.Tensor], shape: torch.Size) -> torch.Tensor:
        if self.basis == "starlet":  # the bands sum back to the image
            out = bands[0].clone()
            for b in bands[1:]:
                out += b
            return out.view(shape)
        return recompose(bands, shape, len(bands) - 1)

    def _levels(self, x: torch.Tensor) -> int:
        n = min(self.levels, max_levels(x.shape[2], x.shape[3]))
        if n < 1:
            raise DeepRepairError(f"images of {tuple(x.shape[2:])} are too small or odd-sized for a "
                                  "Haar decomposition (need even H and W >= 4)")
        return n

    def stats(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        bands = self._decompose(images)
        out = []
        for k, band in enumerate(bands):
            mode = self.coarse if k == len(bands) - 1 else self.mode
            if mode == "energy":
                out.append(band)  # the coefficients themselves: they are added where energy is missing
            elif mode == "hist":
                out.append(band.sort(-1).values)
            elif mode == "meanstd":
                out.append(torch.stack([band.mean(-1), band.std(-1, unbiased=False)], -1))
            else:
                out.append(_mean_cov(band))
        return tuple(out)

    def apply(self, content: torch.Tensor, stats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        bands = self._decompose(content)
        out = []
        for k, (band, st) in enumerate(zip(bands, stats)):
            mode = self.coarse if k == len(bands) - 1 else self.mode
            if mode == "energy":
                out.append(_energy(band, st, coarse=k == len(bands) - 1))
            elif mode == "hist":
                out.append(_match_hist(band, st))
            elif mode == "meanstd":
                mu, sd = band.mean(-1, keepdim=True), band.std(-1, unbiased=False, keepdim=True)
                out.append((band - mu) / (sd + 1e-6) * st[..., 1:2] + st[..., 0:1])
            else:
                out.append(_wct(band, st))
        return self._recompose(out, content.shape)


def _energy(band: torch.Tensor, ref: torch.Tensor, coarse: bool) -> torch.Tensor:
    """Give ``band`` the reference band's energy: shrink it, or add the reference's coefficients."""
    if coarse:  # brightness and contrast, pooled over channels (keeps the content's colours)
        n = band.shape[1] * band.shape[2]
        mu_c, mu_r = band.mean((1, 2), keepdim=True), ref.mean((1, 2), keepdim=True)
        dc, dr = band - mu_c, ref - mu_r
        sd_c = torch.linalg.vector_norm(dc, dim=(1, 2), keepdim=True) / (n - 1) ** 0.5  # std, as torch.std
        sd_r = torch.linalg.vector_norm(dr, dim=(1, 2), keepdim=True) / (n - 1) ** 0.5
        return dc.mul_(sd_r / (sd_c + 1e-6)).add_(mu_r)
    e_c = torch.linalg.vector_norm(band, dim=-1, keepdim=True).square_().div_(band.shape[-1])
    e_r = torch.linalg.vector_norm(ref, dim=-1, keepdim=True).square_().div_(ref.shape[-1])
    gain = torch.sqrt(torch.clamp(e_r / (e_c + 1e-12), max=1.0))
    extra = torch.sqrt(torch.clamp(e_r - e_c, min=0) / (e_r + 1e-12))
    return torch.addcmul(gain * band, extra, ref)


def _match_hist(band: torch.Tensor, ref_sorted: torch.Tensor) -> torch.Tensor:
    """Give each coefficient the reference's value at the same rank (ties broken by position)."""
    n, m = band.shape[-1], ref_sorted.shape[-1]
    order = band.argsort(-1)
    ranks = torch.empty_like(order).scatter_(-1, order, torch.arange(n, device=band.device).expand_as(order))
    if m != n:
        ranks = (ranks.float() * (m - 1) / max(n - 1, 1)).round().long()
    return ref_sorted.gather(-1, ranks)


def _mean_cov(band: torch.Tensor) -> torch.Tensor:
    """(B, 3 + 3*3): channel means and the colouring matrix (covariance square root)."""
    mu = band.mean(-1, keepdim=True)
    xc = band - mu
    cov = xc @ xc.transpose(1, 2) / band.shape[-1]
    sq = _sqrtm(cov, power=0.5)
    return torch.cat([mu.squeeze(-1), sq.flatten(1)], 1)


def _sqrtm(cov: torch.Tensor, power: float) -> torch.Tensor:
    c = cov.shape[-1]
    evals, evecs = torch.linalg.eigh(cov + 1e-5 * torch.eye(c, device=cov.device))
    return evecs @ torch.diag_embed(evals.clamp_min(1e-8) ** power) @ evecs.transpose(-1, -2)


def _wct(band: torch.Tensor, st: torch.Tensor) -> torch.Tensor:
    c = band.shape[1]
    mu = band.mean(-1, keepdim=True)
    xc = band - mu
    cov = xc @ xc.transpose(1, 2) / band.shape[-1]
    white = _sqrtm(cov, power=-0.5) @ xc
    colour = st[:, c:].view(-1, c, c)
    return colour @ white + st[:, :c, None]


def style_features(x: torch.Tensor, levels: int = 3) -> torch.Tensor:
    """(N, F) degradation descriptor of float (N, C, H, W) images: log energy of each starlet
    detail band per channel, and the smooth residual's mean and std per channel. Images with
    the same noise, blur or haze land close together whatever they show."""
    bands = starlet_decompose(x, levels)
    feats = [torch.log(b.pow(2).mean(-1) + 1e-6) for b in bands[:-1]]
    feats += [bands[-1].mean(-1), bands[-1].std(-1)]
    return torch.cat(feats, 1)
