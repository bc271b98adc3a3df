"""Splits found in an adjusted close and applied to raw bars."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tradeloom.corporate import back_adjust, splits_from_adjusted_close
from tradeloom.errors import InputError

DAY = 86_400 * 10**9


def test_a_split_is_found_and_a_dividend_is_not() -> None:
    stamps = np.arange(6, dtype=np.int64) * DAY
    close = np.array([100.0, 102.0, 51.0, 52.0, 51.0, 50.5])
    # Adjusted for the 2-for-1 on day 2 and a small dividend on day 4.
    adjusted = np.array([49.0, 49.98, 49.98, 50.96, 50.49, 50.0])
    assert splits_from_adjusted_close(stamps, close, adjusted) == [(2 * DAY, 2.0)]


def test_back_adjusting_removes_the_split_gap_and_keeps_the_inputs() -> None:
    stamps = np.arange(4, dtype=np.int64) * DAY
    prices = np.array([[100.0, 101.0], [102.0, 103.0], [51.0, 52.0], [52.0, 53.0]])
    volume = np.array([10.0, 10.0, 20.0, 20.0])
    adjusted, shares = back_adjust(stamps, prices, volume, [(2 * DAY, 2.0)])
    np.testing.assert_allclose(adjusted[:, 0], [50.0, 51.0, 51.0, 52.0])
    np.testing.assert_allclose(shares, [20.0, 20.0, 20.0, 20.0])
    assert prices[0, 0] == 100.0 and volume[0] == 10.0


def test_bad_input_names_what_is_wrong() -> None:
    stamps = np.array([2, 1], dtype=np.int64)
    with pytest.raises(InputError, match="strictly increasing"):
        splits_from_adjusted_close(stamps, np.ones(2), np.ones(2))
    with pytest.raises(InputError, match="one shape"):
        splits_from_adjusted_close(np.arange(3, dtype=np.int64), np.ones(2), np.ones(2))
    with pytest.raises(InputError, match=re.escape("split ratio must be > 0, got 0.0")):
        back_adjust(np.arange(2, dtype=np.int64), np.ones(2), np.ones(2), [(1, 0.0)])
