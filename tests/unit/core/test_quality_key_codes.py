"""Instrument key codes used by the batch checks: equal keys share a code wherever they sit."""

from __future__ import annotations

import numpy as np

from tradeloom.quality import NAT, BarColumns, key_codes, row_problems


def test_key_codes_interleaved_keys_equal_keys_share_codes() -> None:
    keys = np.array(["NSE:B", "NSE:A", "NSE:A", "NSE:B", "NSE:C", "NSE:A"], dtype=object)
    codes, distinct = key_codes(keys)
    assert distinct == ["NSE:A", "NSE:B", "NSE:C"]
    assert [distinct[code] for code in codes] == list(keys)


def test_key_codes_empty_gives_no_codes() -> None:
    codes, distinct = key_codes(np.array([], dtype=object))
    assert codes.shape == (0,) and distinct == []


def test_row_problems_duplicate_key_apart_in_batch_only_later_rows_flagged() -> None:
    keys = np.array(["X:A", "X:B", "X:A", "X:B", "X:A"], dtype=object)
    stamps = np.array([60, 60, 120, 60, 60], dtype=np.int64) * 1_000_000_000
    ones = np.ones(5)
    bars = BarColumns(keys, stamps, ones, ones * 2, ones * 0.5, ones, ones)
    assert list(row_problems(bars, now_ns=10**18)) == ["", "", "", "duplicate_key_in_batch",
                                                        "duplicate_key_in_batch"]


def test_row_problems_first_failed_check_wins_over_duplicate() -> None:
    keys = np.array(["X:A", "X:A"], dtype=object)
    stamps = np.array([NAT, NAT], dtype=np.int64)  # also a duplicate pair: the earlier check names it
    ones = np.ones(2)
    bars = BarColumns(keys, stamps, ones, ones, ones, ones, ones)
    assert list(row_problems(bars, now_ns=10**18)) == ["unparseable_timestamp", "unparseable_timestamp"]
