"""Failure mining: the Dc/De split is disjoint, complete, stratified and seeded; Table 1."""

from __future__ import annotations

import numpy as np
import pytest

from deeprepair.errors import DeepRepairError
from deeprepair.mining import FailureSplit, find_failures, split_collected, stratified_quota, table1


def test_quota_is_even_when_every_class_has_enough():
    assert stratified_quota(np.full(10, 500), 1000).tolist() == [100] * 10


def test_quota_spreads_a_short_class_over_the_others():
    q = stratified_quota(np.array([30, 500, 500, 500, 500, 500, 500, 500, 500, 500]), 1000)
    assert q[0] == 30 and q.sum() == 1000 and q[1:].max() - q[1:].min() <= 1


def test_quota_takes_everything_when_there_are_too_few():
    counts = np.array([3, 0, 7])
    assert stratified_quota(counts, 1000).tolist() == [3, 0, 7]


@pytest.mark.parametrize("seed", [0, 1])
def test_split_invariants(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, 5000)
    dc, de = split_collected(labels, 1000, 10, seed=seed)
    assert len(np.intersect1d(dc, de)) == 0
    assert np.array_equal(np.sort(np.concatenate([dc, de])), np.arange(5000))
    assert np.bincount(labels[dc], minlength=10).tolist() == [100] * 10
    again, _ = split_collected(labels, 1000, 10, seed=seed)
    other, _ = split_collected(labels, 1000, 10, seed=seed + 7)
    assert np.array_equal(dc, again) and not np.array_equal(dc, other)


def test_negative_collect_is_an_error():
    with pytest.raises(DeepRepairError):
        split_collected(np.zeros(3, int), -1, 2)


def test_find_failures_indexes_the_severity_stack(tmp_path):
    y = np.array([0, 1, 2, 0])
    preds = [np.array([0, 1, 2, 1]), np.array([1, 1, 0, 0])]  # severity 1: image 3 wrong; 2: 0 and 2
    split = find_failures("x", preds, y, n_collect=2, num_classes=3, seed=0)
    assert split.index.tolist() == [3, 4, 6]
    assert split.severity.tolist() == [1, 2, 2]
    assert split.y.tolist() == [0, 0, 2] and split.pred.tolist() == [1, 1, 0]
    assert len(split.dc) == 2 and len(split.de) == 1
    split.save(tmp_path)
    back = FailureSplit.load(tmp_path, "x")
    assert np.array_equal(back.index, split.index) and back.n_images == 4
    md, csv_text = table1({"x": back}, 1000)
    assert "| x | 3 | 2 (short) | 1 | 8 |" in md
    assert csv_text.splitlines()[1] == "x,3,2,1,8"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_image_split_puts_every_photo_on_one_side(seed):
    """Leak-free split: no photo has a failure in Dc and another (other severity) in De."""
    rng = np.random.default_rng(seed)
    n, sev = 2000, 5
    y = rng.integers(0, 10, n)
    preds = [np.where(rng.random(n) < 0.15 * s, (y + 1) % 10, y) for s in range(1, sev + 1)]
    split = find_failures("x", preds, y, n_collect=500, num_classes=10, seed=seed)
    src_dc, src_de = set(split.source[split.dc]), set(split.source[split.de])
    assert src_dc and src_de and not src_dc & src_de
    assert np.bincount(split.y[split.dc], minlength=10).tolist() == [50] * 10  # the quota is still exact
    # only members of a Dc photo are ever left out of both sides
    dropped = np.setdiff1d(np.arange(len(split.index)), np.concatenate([split.dc, split.de]))
    assert set(split.source[dropped]) <= src_dc
    # the unseen stack never holds a Dc photo, and holds every other photo at every severity
    unseen = split.unseen()
    assert not set(unseen % n) & src_dc and len(unseen) == sev * (n - len(src_dc))
    # the paper's split draws failures independently: with this many severities photos are shared
    paper = find_failures("x", preds, y, n_collect=500, num_classes=10, seed=seed, split_by="failure")
    assert set(paper.source[paper.dc]) & set(paper.source[paper.de])
    assert np.array_equal(np.sort(np.concatenate([paper.dc, paper.de])), np.arange(len(paper.index)))


def test_unknown_split_is_an_error():
    with pytest.raises(DeepRepairError, match="split_by"):
        find_failures("x", [np.zeros(3, int)], np.ones(3, int), 1, 2, 0, split_by="photo")


def test_a_split_left_by_a_killed_mine_is_refused_for_another_model(tmp_path):
    """A kill after a corruption's split file but before mining.json: the split file itself says
    what it was mined with, so a rerun with another model is refused instead of reusing it."""
    from deeprepair.workflows.mine import _mine_one

    split = find_failures("fog", [np.array([0, 1, 1, 0])] * 5, np.array([0, 0, 1, 1]), 2, 2, 0)
    split.settings = '{"model_sha256": "a"}'
    split.save(tmp_path)
    assert FailureSplit.load(tmp_path, "fog").settings == split.settings
    with pytest.raises(DeepRepairError, match="another model"):
        _mine_one(None, None, "fog", None, tmp_path, 2, 0, "image", False, "cpu", "fp32", None, '{"model_sha256": "b"}')
