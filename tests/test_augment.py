"""Batched AugMix ops against a per-image PIL reference; StyleAug's structure; the JSD loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from _pil_augmix import OPS, apply, augmix
from deeprepair.augment import AUGMIX_OPS, StyleAug, StyleOps, jsd_loss
from deeprepair.augment.ops import int_parameter
from deeprepair.cluster import ReferenceSampler
from deeprepair.errors import DeepRepairError
from deeprepair.style import create_style


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(x)).permute(0, 3, 1, 2).float() / 255


@pytest.fixture(scope="module")
def imgs(smooth_images):
    return np.array(smooth_images(24, seed=4))


@pytest.mark.parametrize("name", ["autocontrast", "equalize", "posterize", "solarize"])
def test_colour_ops_match_pil_exactly(name, imgs):
    level = np.linspace(0.1, 3, len(imgs))
    ours = AUGMIX_OPS[name](_t(imgs), torch.tensor(level, dtype=torch.float32), np.random.default_rng(0))
    ours = (ours * 255).round().permute(0, 2, 3, 1).numpy().astype(np.uint8)
    ref = np.stack([np.asarray(apply(name, Image.fromarray(im), lv, 1)) for im, lv in zip(imgs, level)])
    assert np.abs(ours.astype(int) - ref).max() <= 1


@pytest.mark.parametrize("name", ["rotate", "shear_x", "shear_y", "translate_x", "translate_y"])
def test_geometric_ops_match_pil_closely(name, imgs):
    level = np.linspace(0.5, 3, len(imgs))
    signs = np.where(np.random.default_rng(1).uniform(size=len(imgs)) > 0.5, -1.0, 1.0)
    ours = AUGMIX_OPS[name](_t(imgs), torch.tensor(level), np.random.default_rng(1))
    ours = ours.permute(0, 2, 3, 1).numpy() * 255
    ref = np.stack([np.asarray(apply(name, Image.fromarray(im), lv, s)) for im, lv, s in zip(imgs, level, signs)])
    # interior pixels: same resampling up to rounding; borders may differ by PIL's edge rule
    diff = np.abs(ours - ref)[:, 3:-3, 3:-3]
    assert diff.mean() < 1.5, diff.mean()
    assert np.abs(ours - imgs).mean() > 2  # and the op did something


def test_level_mapping():
    assert int_parameter(torch.tensor([2.9]), 4).item() == 1
    assert int_parameter(torch.tensor([3.0]), 30).item() == 9


def test_augmix_matches_the_per_image_reference_in_distribution(imgs):
    """Mean and spread of the per-image change |aug - x| agree between batched and PIL AugMix."""
    x = np.concatenate([imgs] * 8)
    ours = StyleAug()(_t(x), np.random.default_rng(0)).permute(0, 2, 3, 1).numpy()
    rng = np.random.default_rng(1)
    ref = np.stack([augmix(im, rng) for im in x])
    d_ours = np.abs(ours - x / 255).mean((1, 2, 3))
    d_ref = np.abs(ref - x / 255).mean((1, 2, 3))
    assert abs(d_ours.mean() - d_ref.mean()) < 0.25 * d_ref.mean()
    assert abs(d_ours.std() - d_ref.std()) < 0.35 * d_ref.std()
    assert ours.min() >= 0 and ours.max() <= 1


class _Recorder:
    """Style ops stand-in that records which chain step called it."""

    def __init__(self, n):
        self.n, self.calls = n, 0

    def __len__(self):
        return self.n

    def __call__(self, x, group, rng):
        self.calls += len(x)
        return torch.zeros_like(x)


def test_style_ops_only_as_first_op(imgs):
    rec = _Recorder(5)
    aug = StyleAug(rec, depth=3)  # 9 + 5 ops for the first, 9 for the 2nd and 3rd
    n = 2000
    x = torch.rand(n, 3, 8, 8)
    aug(x, np.random.default_rng(0))
    # expected style draws: width 3 chains x n images x 5/14 (first op only)
    assert rec.calls == pytest.approx(3 * n * 5 / 14, rel=0.06)


def test_styleaug_with_real_style_ops_is_deterministic(imgs):
    refs = _t(imgs[:10])
    ops = StyleOps(create_style("wavelet"), refs, ReferenceSampler("eq4", 3).fit(imgs[:10]))
    a = StyleAug(ops)(_t(imgs), np.random.default_rng(5))
    b = StyleAug(ops)(_t(imgs), np.random.default_rng(5))
    assert torch.equal(a, b) and a.shape == (24, 3, 32, 32)


def test_unknown_op_is_an_error():
    with pytest.raises(DeepRepairError, match="unknown augmentation ops"):
        StyleAug(ops=["color"])


def test_jsd_is_zero_for_identical_and_positive_otherwise():
    logits = torch.randn(8, 10)
    assert jsd_loss(logits, logits, logits).abs().item() < 1e-6
    assert jsd_loss(logits, torch.randn(8, 10), logits).item() > 0.01
    assert set(OPS) == set(AUGMIX_OPS)
