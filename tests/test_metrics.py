import numpy as np
import pytest

from deeprepair.metrics import psnr, ssim


def _images(n=6, seed=0):
    """Smooth-ish random images (sums of low-frequency patterns) so SSIM is not trivially ~0."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32] / 32.0
    out = np.empty((n, 32, 32, 3), dtype=np.uint8)
    for i in range(n):
        f = rng.uniform(0.5, 3.0, size=(3, 2))
        ph = rng.uniform(0, 2 * np.pi, size=(3,))
        chans = [np.sin(2 * np.pi * (f[c, 0] * xx + f[c, 1] * yy) + ph[c]) for c in range(3)]
        img = 127.5 + 100 * np.stack(chans, -1) + rng.normal(0, 8, (32, 32, 3))
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def _noisy(x, sigma, seed=1):
    rng = np.random.default_rng(seed)
    return np.clip(x + rng.normal(0, sigma, x.shape), 0, 255).astype(np.uint8)


def test_identical_images():
    x = _images()
    p = psnr(x, x)
    s = ssim(x, x)
    assert p.shape == s.shape == (len(x),)
    assert np.all(np.isinf(p)) and np.all(p > 0)
    np.testing.assert_array_equal(s, 1.0)
    np.testing.assert_array_equal(ssim(x, x, window="uniform"), 1.0)


def test_noise_lowers_both_and_more_noise_lowers_more():
    x = _images()
    y1, y2 = _noisy(x, 10), _noisy(x, 40)
    p1, p2 = psnr(x, y1), psnr(x, y2)
    s1, s2 = ssim(x, y1), ssim(x, y2)
    assert np.all(np.isfinite(p1)) and np.all(p1 > p2)
    assert np.all(s1 < 1.0) and np.all(s1 > s2)
    assert np.all(s2 > -1.0)


def test_psnr_known_value():
    x = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    y = x.copy()
    y[0] += 1  # mse 1 -> 48.13 dB
    y[1] += 255  # mse 255^2 -> 0 dB
    np.testing.assert_allclose(psnr(x, y), [20 * np.log10(255.0), 0.0], atol=1e-12)


def test_symmetric_and_single_image():
    x = _images(3)
    y = _noisy(x, 25)
    np.testing.assert_allclose(ssim(x, y), ssim(y, x), rtol=0, atol=1e-12)
    np.testing.assert_allclose(psnr(x, y), psnr(y, x))
    np.testing.assert_allclose(ssim(x[0], y[0]), ssim(x, y)[:1])


def test_chunking_does_not_change_result():
    x = _images(5)
    y = _noisy(x, 30)
    np.testing.assert_allclose(ssim(x, y, chunk=2), ssim(x, y), rtol=0, atol=1e-14)


def test_input_validation():
    x = _images(2)
    with pytest.raises(ValueError):
        ssim(x, x[:1])
    with pytest.raises(TypeError):
        psnr(x.astype(np.float32), x.astype(np.float32))
    with pytest.raises(ValueError):
        ssim(x, x, window="box")


@pytest.mark.parametrize("window", ["gaussian", "uniform"])
def test_matches_skimage(window):
    metrics = pytest.importorskip("skimage.metrics")
    x = _images(4)
    y = _noisy(x, 30)
    if window == "gaussian":
        kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    else:
        kw = {}
    ref = [metrics.structural_similarity(a, b, channel_axis=-1, data_range=255, **kw) for a, b in zip(x, y)]
    np.testing.assert_allclose(ssim(x, y, window=window), ref, rtol=0, atol=1e-9)
    ref_p = [metrics.peak_signal_noise_ratio(a, b, data_range=255) for a, b in zip(x, y)]
    np.testing.assert_allclose(psnr(x, y), ref_p, rtol=1e-12)
