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
    torch.testing.assert_close(st.transfer(c, s), st.transfer(c, s.expand(8, -1, -1, -1)), atol=1e-6, rtol=1e-5)


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


# ------------------------------------------------------------------------------ adain backend
def _classifier(seed=0):
    from deeprepair.models import Classifier, create_model

    torch.manual_seed(seed)
    return Classifier(create_model("resnet-20", 10)).eval()


def test_encoder_cuts_at_the_last_full_resolution_map():
    from deeprepair.style.adain import FeatureEncoder

    enc = FeatureEncoder(_classifier())
    assert enc.layer == "net.blocks.2"  # the end of resnet-20's first (32x32, 16-channel) stage
    assert enc(torch.rand(2, 3, 32, 32)).shape == (2, 16, 32, 32)
    assert FeatureEncoder(_classifier(), "net.blocks.5")(torch.rand(1, 3, 32, 32)).shape == (1, 32, 16, 16)
    with pytest.raises(DeepRepairError, match="not a submodule"):
        FeatureEncoder(_classifier(), "net.nope")


def test_adain_statistics_are_the_references():
    from deeprepair.style.adain import adain, mean_colour, mean_std, wct

    g = torch.Generator().manual_seed(0)
    fc, fs = torch.randn(3, 8, 16, 16, generator=g), 3 * torch.randn(3, 8, 16, 16, generator=g) + 1
    m, s = mean_std(adain(fc, *mean_std(fs)))
    torch.testing.assert_close((m, s), mean_std(fs), atol=1e-4, rtol=1e-4)
    out = wct(fc, *mean_colour(fs))
    flat, ref = out.flatten(2), fs.flatten(2)
    cov = lambda t: (t - t.mean(-1, keepdim=True)) @ (t - t.mean(-1, keepdim=True)).transpose(1, 2) / t.shape[-1]
    torch.testing.assert_close(cov(flat), cov(ref), atol=1e-3, rtol=1e-3)


@pytest.fixture(scope="module")
def adain_checkpoint(tmp_path_factory, smooth_images):
    from deeprepair.style.adain import FeatureEncoder, save_style_checkpoint, train_decoder

    enc = FeatureEncoder(_classifier())
    decoder, history = train_decoder(enc, np.array(smooth_images(64, 3)), epochs=2, batch_size=32, width=16)
    assert len(history) == 2 and history[-1]["pixel_mse"] < history[0]["pixel_mse"] * 1.5
    path = tmp_path_factory.mktemp("adain") / "style.safetensors"
    meta = {"encoder": {"arch": "resnet-20", "num_classes": 10, "mean": [0.5] * 3, "std": [0.5] * 3}}
    save_style_checkpoint(path, enc, decoder, meta)
    return path, enc, decoder


@pytest.mark.parametrize("mode", ["adain", "wct"])
def test_adain_backend_contract(adain_checkpoint, smooth_images, mode):
    path, enc, decoder = adain_checkpoint
    st = create_style("adain", checkpoint=path, mode=mode)
    c, s = _imgs(smooth_images, 6), _imgs(smooth_images, 6, seed=1)
    out = st.transfer(c, s)
    assert out.shape == c.shape and out.dtype == c.dtype and 0 <= out.min() and out.max() <= 1
    torch.testing.assert_close(out, st.transfer(c, s))  # deterministic
    torch.testing.assert_close(st.transfer(c, s, alpha=0.0), c)
    st.fit(s)
    torch.testing.assert_close(st.transfer(c, index=torch.arange(6)), out, atol=1e-5, rtol=1e-5)


def test_adain_checkpoint_round_trip_matches_the_trained_modules(adain_checkpoint, smooth_images):
    from deeprepair.style import AdaINStyle

    path, enc, decoder = adain_checkpoint
    c, s = _imgs(smooth_images, 4), _imgs(smooth_images, 4, seed=1)
    direct = AdaINStyle(encoder=enc, decoder=decoder).transfer(c, s)
    torch.testing.assert_close(AdaINStyle(path).transfer(c, s), direct)
    assert json_meta(path)["layer"] == "net.blocks.2"


def json_meta(path):
    import json

    return json.loads(path.with_suffix(".json").read_text())


def test_decoder_training_resumes_to_the_same_weights(tmp_path, smooth_images):
    from deeprepair.style.adain import FeatureEncoder, train_decoder

    x = np.array(smooth_images(32, 4))
    enc = FeatureEncoder(_classifier())
    kw = dict(batch_size=16, width=8, precision="fp32")
    full, _ = train_decoder(enc, x, epochs=2, **kw)
    state = tmp_path / "s.safetensors"
    train_decoder(enc, x, epochs=2, state_path=state, **kw)  # writes both epochs
    # interrupt after epoch 1: keep a state file with one epoch, then resume
    state2 = tmp_path / "s2.safetensors"

    class Stop(Exception):
        pass

    def stop(row):
        if row["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop):
        train_decoder(enc, x, epochs=2, state_path=state2, on_epoch=stop, **kw)
    resumed, hist = train_decoder(enc, x, epochs=2, state_path=state2, **kw)
    assert [r["epoch"] for r in hist] == [1, 2]
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b)
    with pytest.raises(DeepRepairError, match="other settings"):
        train_decoder(enc, x, epochs=3, state_path=state2, **kw)


def test_adain_errors(tmp_path):
    with pytest.raises(DeepRepairError, match="checkpoint"):
        create_style("adain")
    with pytest.raises(DeepRepairError, match="not found"):
        create_style("adain", checkpoint=tmp_path / "missing.safetensors")
    with pytest.raises(DeepRepairError, match="mode"):
        create_style("adain", checkpoint=tmp_path / "x.safetensors", mode="hist")
