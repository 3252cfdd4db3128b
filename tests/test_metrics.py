"""Metrics: accuracy, macro-F1, Wilson interval, exact McNemar."""

import math

import pytest

from core.metrics import McNemarResult, accuracy, macro_f1, mcnemar_exact, wilson_interval


@pytest.mark.parametrize(
    "correct, expected",
    [([], 0.0), ([True], 1.0), ([False], 0.0), ([True, False, True, True], 0.75), ((True,) * 3 + (False,) * 7, 0.3)],
)
def test_accuracy(correct, expected):
    assert accuracy(correct) == pytest.approx(expected)


def test_macro_f1_perfect_and_none_counts_wrong():
    labels = ["yes", "no", "maybe"]
    gold = ["yes", "no", "maybe", "yes"]
    assert macro_f1(gold, gold, labels) == 1.0
    # yes: tp1 fn1 -> 2/3; no: 1; maybe: 1
    assert macro_f1(gold, ["yes", "no", "maybe", None], labels) == pytest.approx((2 / 3 + 1 + 1) / 3)


def test_macro_f1_known_value():
    gold = ["a", "a", "a", "b", "b", "c"]
    pred = ["a", "a", "b", "b", "c", "c"]
    # a: tp2 fp0 fn1 -> 0.8; b: tp1 fp1 fn1 -> 0.5; c: tp1 fp1 fn0 -> 2/3
    assert macro_f1(gold, pred, ["a", "b", "c"]) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_macro_f1_skips_labels_absent_from_gold_and_pred():
    assert macro_f1(["yes", "no"], ["yes", "no"], ["yes", "no", "maybe"]) == 1.0
    assert macro_f1(["yes", "no"], ["yes", "maybe"], ["yes", "no", "maybe"]) == pytest.approx(1 / 3)


def test_macro_f1_empty_and_mismatch():
    assert macro_f1([], [], ["a", "b"]) == 0.0
    with pytest.raises(ValueError):
        macro_f1(["a"], [], ["a"])


@pytest.mark.parametrize(
    "k, n, lo, hi",
    [(8, 10, 0.4902, 0.9433), (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (50, 100, 0.4038, 0.5962), (1, 1, 0.2065, 1.0)],
)
def test_wilson_known_values(k, n, lo, hi):
    a, b = wilson_interval(k, n)
    assert a == pytest.approx(lo, abs=1e-4)
    assert b == pytest.approx(hi, abs=1e-4)
    assert 0.0 <= a <= k / n <= b <= 1.0


def test_wilson_edge_cases():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(5, 3)
    with pytest.raises(ValueError):
        wilson_interval(-1, 3)
    wide, narrow = wilson_interval(8, 10, z=2.576), wilson_interval(8, 10, z=1.0)
    assert wide[0] < narrow[0] and wide[1] > narrow[1]


def _pairs(both, only_a, only_b, neither):
    a = [True] * both + [True] * only_a + [False] * only_b + [False] * neither
    b = [True] * both + [False] * only_a + [True] * only_b + [False] * neither
    return a, b


@pytest.mark.parametrize(
    "only_a, only_b, p",
    [
        (1, 6, 0.125),
        (6, 1, 0.125),
        (0, 0, 1.0),
        (3, 3, 1.0),
        (0, 5, 0.0625),
        (0, 1, 1.0),
        (2, 10, 2 * (1 + 12 + 66) / 2**12),
        (10, 30, 2 * sum(math.comb(40, i) for i in range(11)) / 2**40),
    ],
)
def test_mcnemar_exact_known_values(only_a, only_b, p):
    res = mcnemar_exact(*_pairs(5, only_a, only_b, 4))
    assert isinstance(res, McNemarResult)
    assert (res.b, res.c) == (only_a, only_b)
    assert res.p_value == pytest.approx(p)


def test_mcnemar_large_and_mismatch():
    res = mcnemar_exact(*_pairs(0, 0, 3000, 0))
    assert res.p_value == 0.0 or res.p_value < 1e-300
    with pytest.raises(ValueError):
        mcnemar_exact([True], [True, False])
