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
