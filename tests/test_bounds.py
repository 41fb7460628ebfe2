"""The statistics every stated limit rests on (deeprepair.bounds)."""

import numpy as np
import pytest
from scipy.stats import binom

from deeprepair.bounds import (clopper_pearson_min_n, clopper_pearson_upper, mean_std, paired_change_lower, wilson,
                               wilson_interval)


@pytest.mark.parametrize("k,n", [(0, 100), (3, 500), (10, 1000), (40, 4500)])
def test_clopper_pearson_upper_is_the_exact_binomial_bound(k, n):
    ub = clopper_pearson_upper(k, n)
    assert k / n < ub < 1
    assert binom.cdf(k, n, ub) == pytest.approx(0.05, abs=1e-6)  # P(X <= k | p = ub) = 5%


def test_clopper_pearson_covers_the_true_rate_at_least_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    p, n = 0.01, 900
    k = rng.binomial(n, p, size=4000)
    assert (clopper_pearson_upper(k, n) >= p).mean() >= 0.95


def test_clopper_pearson_edge_cases_and_min_n():
    assert clopper_pearson_upper(5, 5) == 1.0 and clopper_pearson_upper(0, 0) == 1.0
    n = clopper_pearson_min_n(0.01)
    assert n == 299
    assert clopper_pearson_upper(0, n) <= 0.01 < clopper_pearson_upper(0, n - 1)


def test_paired_change_lower_bound():
    before = np.array([True] * 90 + [False] * 10)
    same = paired_change_lower(before, before)
    assert same == 0.0
    better = before.copy(); better[90:] = True  # 10 won, 0 lost
    assert paired_change_lower(before, better) > 0
    worse = before.copy(); worse[:10] = False  # 10 lost, 0 won
    assert paired_change_lower(before, worse) < -0.1 + 1e-9


def test_wilson_and_mean_std():
    lo, hi = wilson(10, 1000)
    assert lo < 0.01 < hi
    assert mean_std([1.0, 2.0, 3.0]) == "2.00 ± 1.00"
    assert mean_std([0.5]) == "0.50" and mean_std([]) == "n/a"


def test_wilson_interval_is_wilson_over_arrays():
    import math

    def scalar(k, n, z=1.96):  # the bound as first written, one proportion at a time
        p, d = k / n, 1 + z * z / n
        c, h = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
        return [max(0.0, c - h), min(1.0, c + h)]

    n = 437
    low, high = wilson_interval(np.arange(n + 1), n)
    assert [[float(a), float(b)] for a, b in zip(low, high)] == [scalar(k, n) for k in range(n + 1)]  # to the bit
    assert wilson(17, n) == scalar(17, n)
    assert np.all(np.diff(high) > 0) and low[0] == 0.0 and high[-1] == 1.0
    assert wilson(0, 0) == [0.0, 1.0]
    assert [float(v) for v in wilson_interval([0, 3], [0, 0])[1]] == [1.0, 1.0]
    # the interval's closed form: p-hat's distance from the centre is z times its standard error at the ends
    lo, hi = wilson(30, 200)
    for end in (lo, hi):
        assert abs(0.15 - end) == pytest.approx(1.96 * np.sqrt(end * (1 - end) / 200), rel=1e-9)
