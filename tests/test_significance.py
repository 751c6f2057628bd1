"""The seed statistics every table, sweep summary and report relies on."""

import math

import pytest
from scipy import stats

from bench_harness.significance import compare_rows, holm, mean_interval, paired_difference, t_critical_95


def test_mean_interval_of_known_values():
    interval = mean_interval([88.0, 89.0, 90.0])
    assert (interval.mean, interval.std, interval.n) == (89.0, 1.0, 3)
    assert interval.half_width == pytest.approx(4.302653 / math.sqrt(3))
    single = mean_interval([88.5])
    assert single.mean == 88.5 and math.isnan(single.std) and math.isnan(single.half_width)
    assert math.isnan(mean_interval([]).mean)


def test_t_critical_values():
    assert t_critical_95(2) == pytest.approx(4.302653)
    assert t_critical_95(30) == pytest.approx(2.042272)
    with pytest.raises(ValueError):
        t_critical_95(0)


def test_paired_difference_is_scipys_paired_t_test_on_shared_seeds():
    a = {0: 88.1, 1: 89.3, 2: 90.2, 3: 87.9, 9: 50.0}
    b = {0: 87.8, 1: 89.0, 2: 89.6, 3: 87.9, 5: 99.0}  # seeds 5 and 9 have no partner and are left out
    paired = paired_difference(a, b)
    seeds = [0, 1, 2, 3]
    expected = stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds])
    assert paired.pairs == 4
    assert paired.delta == pytest.approx(0.3)
    assert paired.p_value == pytest.approx(expected.pvalue)
    differences = [a[s] - b[s] for s in seeds]
    assert paired.half_width == pytest.approx(stats.t.ppf(0.975, 3) * stats.tstd(differences) / 2)


def test_paired_difference_without_enough_pairs_or_spread():
    one = paired_difference({0: 90.0, 1: 91.0}, {1: 89.0})
    assert one.delta == 2.0 and one.pairs == 1 and math.isnan(one.p_value) and math.isnan(one.half_width)
    same = paired_difference({0: 90.0, 1: 91.0}, {0: 90.0, 1: 91.0})
    assert same.delta == 0.0 and same.p_value == 1.0


def test_holm_adjusts_in_input_order_and_skips_missing_tests():
    adjusted = holm([0.01, 0.04, 0.03, 0.005, math.nan])
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> kept monotone at 0.06
    assert adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[4])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_compare_rows_marks_the_best_and_the_rows_tied_with_it():
    per_seed = {
        "a": {0: 90.0, 1: 91.0, 2: 92.0, 3: 90.5},
        "b": {0: 89.9, 1: 91.2, 2: 91.8, 3: 90.4},  # within noise of a
        "c": {0: 85.0, 1: 86.1, 2: 86.9, 3: 85.6},  # clearly worse
        "d": {0: 95.0},  # one seed: no test, so never marked tied
    }
    comparisons, best, tied = compare_rows(per_seed, ["d", "a", "b", "c"])
    assert best == "d"
    assert tied == set()
    comparisons, best, tied = compare_rows(per_seed, ["a", "b", "c"])
    assert best == "a" and tied == {"b"}
    assert comparisons["a"].baseline == "b" and comparisons["b"].baseline == "a"
    assert comparisons["a"].p_holm == comparisons["b"].p_holm  # one test, counted once
    assert comparisons["c"].paired.delta < -4 and comparisons["c"].p_holm < 0.05
    named, _, _ = compare_rows(per_seed, ["a", "b", "c"], baseline="c")
    assert set(named) == {"a", "b", "d"} and all(c.baseline == "c" for c in named.values())
