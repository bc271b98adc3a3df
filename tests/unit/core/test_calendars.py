from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from tradeloom.adapters.sources import EURUSD
from tradeloom.calendars import count_gaps, expected_bar_times
from tradeloom.domain import Timeframe
from tradeloom.synthetic import synthetic_instruments


def test_expected_bar_times_nse_minutes_per_day() -> None:
    instrument = synthetic_instruments(1)[0]
    day = expected_bar_times(instrument, Timeframe.MINUTE, datetime(2024, 1, 1, tzinfo=UTC),
                             datetime(2024, 1, 1, 23, 59, tzinfo=UTC))
    assert day.size == 375
    assert datetime.fromtimestamp(day[0] / 1e9, tz=UTC) == datetime(2024, 1, 1, 3, 45, tzinfo=UTC)


def test_expected_bar_times_fx_week_has_120_hours() -> None:
    week = expected_bar_times(EURUSD, Timeframe.HOUR, datetime(2017, 1, 1, 22, tzinfo=UTC),
                              datetime(2017, 1, 6, 21, tzinfo=UTC))
    assert week.size == 120


def test_count_gaps_counts_missing_bars_and_runs() -> None:
    expected = np.arange(10, dtype=np.int64)
    present = np.array([0, 1, 4, 5, 7, 9], dtype=np.int64)
    assert count_gaps(present, expected) == (4, 3)
