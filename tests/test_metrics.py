"""``verification.metrics.difference`` on tiny arrays whose max |d|, relative L2 and cosine are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from i3d_convert.verification.metrics import difference, ncthw_to_nthwc


def test_max_abs_relative_l2_and_cosine_of_a_3_4_triangle():
    # candidate (3, 4), reference (0, 5): d = (3, -1), |d| = sqrt(10), |ref| = 5, |cand| = 5, cand . ref = 20.
    d = difference([3.0, 4.0], [0.0, 5.0])
    assert d.max_abs == 3.0
    assert d.rel_l2 == pytest.approx(math.sqrt(10) / 5, rel=1e-15)
    assert d.cosine == pytest.approx(20 / 25, rel=1e-15)


def test_relative_l2_divides_by_the_reference_not_the_candidate():
    # d = (2, 0, 0); |ref| = 2 but |cand| = 4: rel L2 = 2 / 2 = 1, and swapped 2 / 4.
    assert difference([4.0, 0.0, 0.0], [2.0, 0.0, 0.0]).rel_l2 == 1.0
    assert difference([2.0, 0.0, 0.0], [4.0, 0.0, 0.0]).rel_l2 == 0.5


def test_identical_and_opposite_arrays():
    a = np.array([[1.0, -2.0], [2.0, 4.0]])  # |a| = 5
    same = difference(a, a.copy())
    assert (same.max_abs, same.rel_l2, same.cosine) == (0.0, 0.0, 1.0)
    flipped = difference(-a, a)  # d = -2a: max |d| = 8, |d| = 10, rel = 10 / 5
    assert flipped.max_abs == 8.0 and flipped.rel_l2 == 2.0 and flipped.cosine == -1.0


def test_orthogonal_arrays_have_cosine_zero():
    d = difference([1.0, 0.0], [0.0, 2.0])  # d = (1, -2): |d| = sqrt(5), |ref| = 2
    assert d.cosine == 0.0
    assert d.rel_l2 == pytest.approx(math.sqrt(5) / 2, rel=1e-15)
    assert d.max_abs == 2.0


def test_zero_reference_gives_the_absolute_l2_and_cosine_by_norms():
    # No relative error against zero: rel_l2 falls back to |d| = |(1, 2, 2)| = 3.
    d = difference([1.0, 2.0, 2.0], [0.0, 0.0, 0.0])
    assert d.rel_l2 == 3.0 and d.max_abs == 2.0 and d.cosine == 0.0
    both_zero = difference(np.zeros(3), np.zeros(3))
    assert (both_zero.rel_l2, both_zero.cosine) == (0.0, 1.0)


def test_float32_inputs_are_compared_in_float64():
    # 1 + 2**-23 is the float32 after 1: the measures are exactly 2**-23 and come back as Python floats.
    a = np.array([1.0 + 2.0 ** -23], np.float32)
    d = difference(a, np.array([1.0], np.float32))
    assert d.max_abs == 2.0 ** -23 and d.rel_l2 == 2.0 ** -23
    assert isinstance(d.rel_l2, float)


def test_shapes_must_match_and_are_named():
    with pytest.raises(ValueError, match=r"shapes differ: \(2,\) vs \(3,\)"):
        difference([1.0, 2.0], [1.0, 2.0, 3.0])


def test_as_dict_lists_the_three_measures():
    assert difference([3.0, 4.0], [0.0, 5.0]).as_dict() == {
        "max_abs": 3.0, "rel_l2": math.sqrt(10) / 5, "cosine": 0.8}


def test_ncthw_to_nthwc_moves_channels_last_and_leaves_logits():
    x = np.arange(2 * 3 * 4 * 5 * 6).reshape(2, 3, 4, 5, 6)
    y = ncthw_to_nthwc(x)
    assert y.shape == (2, 4, 5, 6, 3) and y[1, 2, 3, 4, 0] == x[1, 0, 2, 3, 4]
    logits = np.ones((2, 400))
    assert ncthw_to_nthwc(logits) is logits or np.array_equal(ncthw_to_nthwc(logits), logits)
