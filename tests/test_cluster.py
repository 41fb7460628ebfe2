"""k-means and the Eq. 4 reference sampling."""

from __future__ import annotations

import numpy as np
import pytest

from deeprepair.cluster import ReferenceSampler, eq4_probabilities, kmeans
from deeprepair.errors import DeepRepairError


def test_eq4_sums_to_one_and_prefers_the_centre():
    p = eq4_probabilities(np.array([0.5, 1.0, 3.0, 2.0]))
    assert p.sum() == pytest.approx(1.0)
    assert p[0] > p[1] > p[3] > p[2]


def test_eq4_singleton_and_zero_distances():
    assert eq4_probabilities(np.array([0.0])).tolist() == [1.0]
    assert eq4_probabilities(np.zeros(3)).tolist() == pytest.approx([1 / 3] * 3)


def test_kmeans_finds_separated_blobs_and_is_seeded():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10]], float)
    f = np.concatenate([c + rng.normal(0, 0.5, (30, 2)) for c in centres])
    labels, c = kmeans(f, 3, seed=1)
    assert sorted(np.bincount(labels).tolist()) == [30, 30, 30]
    assert np.array_equal(labels, kmeans(f, 3, seed=1)[0])
    assert kmeans(f[:2], 5)[1].shape[0] == 2  # k capped at n


def _images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)


def test_sampler_strategies():
    x, y = _images(60), np.arange(60) % 3
    eq4 = ReferenceSampler("eq4", 5, seed=0).fit(x, y)
    assert len(eq4.groups) == 5
    assert sorted(np.concatenate([g[0] for g in eq4.groups]).tolist()) == list(range(60))
    assert all(g[1].sum() == pytest.approx(1) for g in eq4.groups)
    uni = ReferenceSampler("uniform", 5).fit(x, y)
    assert len(uni.groups) == 5 and all(len(g[0]) == 60 for g in uni.groups)
    per = ReferenceSampler("per-class", 2, seed=0).fit(x, y)
    assert len(per.groups[0][0]) == 6  # 2 clusters x 3 classes


def test_sampler_draws_from_the_chosen_group():
    x = _images(40)
    s = ReferenceSampler("eq4", 4, seed=0).fit(x)
    rng = np.random.default_rng(0)
    for g in range(len(s.groups)):
        got = s.sample(np.full(50, g), rng)
        assert set(got.tolist()) <= set(s.groups[g][0].tolist())


def test_single_failure_and_empty_set():
    s = ReferenceSampler("eq4", 5).fit(_images(1))
    assert len(s.groups) == 1 and s.groups[0][1].tolist() == [1.0]
    with pytest.raises(DeepRepairError, match="empty"):
        ReferenceSampler("eq4").fit(_images(0))
    with pytest.raises(DeepRepairError, match="sampling"):
        ReferenceSampler("nearest").fit(_images(3))


def test_kmeans_is_as_good_as_scikit_learns():
    """Kept over sklearn.cluster.KMeans because it is faster on Dc-sized inputs (cluster.kmeans); it must
    reach the same within-cluster spread (inertia) on clustered data."""
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(3)
    f = (rng.normal(size=(5, 64)) * 3)[rng.integers(0, 5, 600)] + rng.normal(size=(600, 64))
    labels, c = kmeans(f, 5, seed=0)
    ours = float(((f - c[labels]) ** 2).sum())
    theirs = KMeans(5, n_init=1, random_state=0).fit(f).inertia_
    assert ours <= theirs * 1.01, (ours, theirs)


def test_style_features_group_images_by_degradation(smooth_images):
    """Noisy vs blurred versions of the same images: style features separate them, pixels hardly."""
    from sklearn.metrics import adjusted_rand_score

    from deeprepair.cluster import features
    from deeprepair.corruptions import corrupt

    x = np.array(smooth_images(30, seed=1))
    imgs = np.concatenate([corrupt(x, "gaussian_noise", 4), corrupt(x, "defocus_blur", 4)])
    truth = np.repeat([0, 1], 30)
    ari_style = adjusted_rand_score(kmeans(features(imgs, "style"), 2, seed=0)[0], truth)
    ari_pixels = adjusted_rand_score(kmeans(features(imgs, "pixels"), 2, seed=0)[0], truth)
    assert ari_style > 0.75 and ari_style > ari_pixels + 0.3, (ari_style, ari_pixels)
