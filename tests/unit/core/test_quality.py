from __future__ import annotations

import numpy as np

from tradeloom.quality import NAT, BarColumns, row_problems

NOW = 1_700_000_000 * 1_000_000_000
MIN = 60 * 1_000_000_000


def _bars(rows: list[tuple[str, int, float, float, float, float, float]]) -> BarColumns:
    keys, stamps, o, h, lo, c, v = zip(*rows, strict=True)
    return BarColumns(np.array(keys, dtype=object), np.array(stamps, dtype=np.int64), *(
        np.array(values, dtype=np.float64) for values in (o, h, lo, c, v)))


def test_row_problems_each_bad_row_gets_its_reason() -> None:
    good = ("X:A", NOW - 10 * MIN, 10.0, 11.0, 9.0, 10.5, 100.0)
    rows = [
        good,
        ("X:A", NAT, 10.0, 11.0, 9.0, 10.5, 100.0),
        ("X:A", NOW + 3600 * 1_000_000_000, 10.0, 11.0, 9.0, 10.5, 100.0),
        ("X:A", NOW - 9 * MIN, float("nan"), 11.0, 9.0, 10.5, 100.0),
        ("X:A", NOW - 8 * MIN, 10.0, 11.0, 0.0, 10.5, 100.0),
        ("X:A", NOW - 7 * MIN, 10.0, 10.2, 9.0, 10.5, 100.0),
        ("X:A", NOW - 6 * MIN, 10.0, 11.0, 10.2, 10.5, 100.0),
        ("X:A", NOW - 5 * MIN, 10.0, 11.0, 9.0, 10.5, -1.0),
        ("X:A", NOW - 10 * MIN, 10.0, 11.0, 9.0, 10.6, 100.0),
    ]
    reasons = list(row_problems(_bars(rows), NOW))
    assert reasons == [
        "", "unparseable_timestamp", "future_timestamp", "non_finite_price", "non_positive_price",
        "high_below_open_or_close", "low_above_open_or_close", "invalid_volume", "duplicate_key_in_batch",
    ]


def test_row_problems_same_time_other_instrument_is_not_duplicate() -> None:
    rows = [("X:A", NOW - MIN, 1.0, 1.0, 1.0, 1.0, 0.0), ("X:B", NOW - MIN, 1.0, 1.0, 1.0, 1.0, 0.0)]
    assert list(row_problems(_bars(rows), NOW)) == ["", ""]


def test_row_problems_a_bad_first_copy_does_not_cost_the_corrected_one() -> None:
    rows = [("X:A", NOW - MIN, float("nan"), 1.0, 1.0, 1.0, 0.0), ("X:A", NOW - MIN, 1.0, 1.0, 1.0, 1.0, 0.0),
            ("X:A", NOW - MIN, 1.0, 1.0, 1.0, 1.0, 5.0)]
    assert list(row_problems(_bars(rows), NOW)) == ["non_finite_price", "", "duplicate_key_in_batch"]
