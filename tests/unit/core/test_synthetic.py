from __future__ import annotations

import numpy as np

from tradeloom.quality import row_problems
from tradeloom.synthetic import BARS_PER_DAY, minute_bars, synthetic_instruments


def test_minute_bars_same_seed_same_bars_and_all_clean() -> None:
    instruments = synthetic_instruments(3)
    first = minute_bars(instruments, days=2, seed=11)
    second = minute_bars(instruments, days=2, seed=11)
    other = minute_bars(instruments, days=2, seed=12)
    assert len(first) == 3 * 2 * BARS_PER_DAY
    np.testing.assert_array_equal(first.close, second.close)
    assert not np.array_equal(first.close, other.close)
    assert (row_problems(first, now_ns=2**62) == "").all()


def test_minute_bars_volume_profile_is_u_shaped() -> None:
    bars = minute_bars(synthetic_instruments(2), days=20, seed=3)
    per_minute = bars.volume.reshape(2, 20, BARS_PER_DAY).mean(axis=(0, 1))
    middle = per_minute[BARS_PER_DAY // 2 - 20: BARS_PER_DAY // 2 + 20].mean()
    assert per_minute[:20].mean() > 1.5 * middle
    assert per_minute[-20:].mean() > 1.5 * middle
