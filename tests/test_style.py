"""Style transfer backends: shapes, ranges, determinism, exactness and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deeprepair.errors import DeepRepairError
from deeprepair.style import BACKENDS, create_style
from deeprepair.style.wavelet import decompose, haar_forward, haar_inverse, recompose

CONFIGS = [("wavelet", {}), ("wavelet", {"basis": "haar"}), ("wavelet", {"mode": "hist"}),
           ("wavelet", {"mode": "meanstd"}), ("wavelet", {"mode": "wct", "basis": "haar"}),
           ("fourier", {}), ("fourier", {"beta": 0.1, "ratio": 0.5})]  # fmt: skip
IDS = [f"{n}-{'-'.join(map(str, kw.values())) or 'default'}" for n, kw in CONFIGS]


def _imgs(smooth_images, n=8, seed=0) -> torch.Tensor:
    return torch.from_numpy(np.array(smooth_images(n, seed))).permute(0, 3, 1, 2).float() / 255


def test_haar_is_orthonormal_and_exactly_invertible():
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    ll, det = haar_forward(x)
    assert torch.allclose(haar_inverse(ll, det), x, atol=1e-12)
    energy = ll.pow(2).sum() + det.pow(2).sum()
    assert torch.allclose(energy, x.pow(2).sum())
    bands = decompose(x, 3)
    assert [b.shape[-1] for b in bands] == [3 * 64, 3 * 16, 3 * 4, 4]
    assert torch.allclose(recompose(bands, x.shape, 3), x, atol=1e-12)


@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_shape_range_dtype_and_determinism(name, kw, smooth_images):
    c, s = _imgs(smooth_images), _imgs(smooth_images, seed=1)
    st = create_style(name, **kw)
    out = st.transfer(c, s)
    assert out.shape == c.shape and out.dtype == c.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, create_style(name, **kw).transfer(c, s))


@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_alpha_zero_returns_the_content(name, kw, smooth_images):
    c, s = _imgs(smooth_images), _imgs(smooth_images, seed=1)
    assert torch.allclose(create_style(name, **kw).transfer(c, s, alpha=0.0), c)


@pytest.mark.parametrize("name,kw", [("wavelet", {}), ("wavelet", {"basis": "haar"}), ("wavelet", {"mode": "hist"}),
                                     ("wavelet", {"mode": "meanstd"}), ("fourier", {})])
def test_content_equal_to_style_is_reconstructed(name, kw, smooth_images):
    c = _imgs(smooth_images)
    assert (create_style(name, **kw).transfer(c, c) - c).abs().max() < 1e-4


@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_fitted_references_give_the_same_result_as_passing_them(name, kw, smooth_images):
    c, refs = _imgs(smooth_images), _imgs(smooth_images, n=5, seed=2)
    st = create_style(name, **kw).fit(refs)
    idx = torch.tensor([0, 4, 2, 2, 1, 3, 0, 4])
    assert torch.allclose(st.transfer(c, index=idx), create_style(name, **kw).transfer(c, refs[idx]), atol=1e-5)


def test_starlet_bands_sum_back_exactly():
    from deeprepair.style.wavelet import starlet_decompose

    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    bands = starlet_decompose(x, 3)
    assert len(bands) == 4
    assert torch.allclose(torch.stack(bands).sum(0).view(x.shape), x, atol=1e-12)


def test_energy_rule_gives_each_band_the_reference_energy():
    from deeprepair.style.wavelet import _energy

    g = torch.Generator().manual_seed(0)
    content = torch.randn(4, 3, 256, generator=g) * torch.tensor([0.1, 1.0, 3.0]).view(1, 3, 1)
    ref = torch.randn(4, 3, 256, generator=g)  # energy 1 per channel
    out = _energy(content, ref, coarse=False)
    e = out.pow(2).mean(-1)
    # shrunk exactly where the content had more; content + independent ref ~ 1 where it had less
    assert torch.allclose(e[:, 2], ref[:, 2].pow(2).mean(-1), rtol=1e-4)
    assert torch.allclose(e[:, :2], torch.ones(4, 2), atol=0.25)


def test_single_style_image_is_broadcast(smooth_images):
    c, s = _imgs(smooth_images), _imgs(smooth_images, n=1, seed=3)
    st = create_style("wavelet")
    assert torch.allclose(st.transfer(c, s), st.transfer(c, s.expand(8, -1, -1, -1)))


def test_noise_reference_adds_fine_band_energy_and_blur_removes_it(smooth_images):
    """The wavelet backend carries the degradation: noisy refs -> noisier, blurred refs -> smoother."""
    from deeprepair.corruptions import corrupt

    x = smooth_images(16, 0)
    c = _imgs(smooth_images, n=16)
    noisy = torch.from_numpy(corrupt(smooth_images(16, 5), "gaussian_noise", 5)).permute(0, 3, 1, 2).float() / 255
    blurry = torch.from_numpy(corrupt(smooth_images(16, 5), "defocus_blur", 5)).permute(0, 3, 1, 2).float() / 255
    st = create_style("wavelet")

    def fine(t):
        return decompose(t, 1)[0].pow(2).mean().item()

    assert fine(st.transfer(c, noisy)) > 5 * fine(c)
    assert fine(st.transfer(c, blurry)) < 0.7 * fine(c)
    assert x.dtype == np.uint8


def test_per_image_alpha(smooth_images):
    c, s = _imgs(smooth_images, n=2), _imgs(smooth_images, n=2, seed=1)
    st = create_style("wavelet")
    out = st.transfer(c, s, alpha=torch.tensor([0.0, 1.0]))
    assert torch.allclose(out[0], c[0]) and torch.allclose(out[1], st.transfer(c, s)[1])


def test_clear_errors(smooth_images):
    c = _imgs(smooth_images, n=2)
    st = create_style("wavelet")
    with pytest.raises(DeepRepairError, match="channels"):
        st.transfer(c, c[:, :1])
    with pytest.raises(DeepRepairError, match="resize"):
        st.transfer(c, c[:, :, :16, :16])
    with pytest.raises(DeepRepairError, match="float"):
        st.transfer((c * 255).to(torch.uint8), c)
    with pytest.raises(DeepRepairError, match="batch"):
        st.transfer(c, torch.cat([c, c, c]))
    with pytest.raises(DeepRepairError, match="fit"):
        st.transfer(c, index=torch.tensor([0, 1]))
    with pytest.raises(DeepRepairError, match="alpha"):
        st.transfer(c, c, alpha=1.5)
    with pytest.raises(DeepRepairError, match="unknown style backend"):
        create_style("vgg")
    with pytest.raises(DeepRepairError, match="no reference"):
        st.fit(c[:0])
    assert set(BACKENDS) >= {"wavelet", "fourier"}
