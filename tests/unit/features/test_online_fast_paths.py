"""The online engine's batched fast paths against the scalar references: tied profile bins (integer
volumes, where the order of equal bins decides the point of control and the value area) and bars whose
high is missing while the close is not (the recursions must leave the fast path for that step)."""

from __future__ import annotations

import numpy as np
import talib

from tradeloom.features.online import OnlineFeatureEngine, replay, volume_profile
from tradeloom.features.spec import DEFAULT_SPEC

NAMES = DEFAULT_SPEC.names
MINUTE = 60_000_000_000


def test_online_engine_volume_profile_with_tied_integer_bins_equals_scalar_reference() -> None:
    rng = np.random.default_rng(17)
    steps, width, period = 130, 5, 50
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.002, (steps, width)), axis=0))
    high, low = close * 1.001, close * 0.999
    volume = rng.integers(0, 3, (steps, width)).astype(float)  # few distinct volumes: many tied bins
    volume[:, 4] = 7.0  # one instrument with every bar equal
    stamps = np.arange(steps, dtype=np.int64) * MINUTE
    out = replay(OnlineFeatureEngine([f"X:{i}" for i in range(width)], "1m"), stamps, close, high, low, close,
                 volume)
    columns = [NAMES.index(name) for name in ("vp_poc_50", "vp_va_low_50", "vp_va_high_50")]
    for t in range(period - 1, steps):
        window = slice(t + 1 - period, t + 1)
        for i in range(width):
            expected = volume_profile(high[window, i], low[window, i], close[window, i], volume[window, i], 10, 0.7)
            np.testing.assert_array_equal(out[t, i, columns], [expected["poc"], expected["va_low"],
                                                               expected["va_high"]])


def test_online_engine_missing_high_on_a_bar_matches_talib_atr_after_it() -> None:
    # A NaN high makes that bar's true range NULL (skipped by the Wilder mean), so ATR over the whole
    # series equals TA-Lib's ATR on the series with that bar's true range left out of the recursion.
    rng = np.random.default_rng(23)
    steps = 400
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.002, (steps, 2)), axis=0))
    high, low = close * 1.002, close * 0.998
    high[200, 1] = np.nan
    stamps = np.arange(steps, dtype=np.int64) * MINUTE
    out = replay(OnlineFeatureEngine(["X:A", "X:B"], "1m"), stamps, close, high, low, close, np.ones((steps, 2)))
    atr = out[:, :, NAMES.index("atr_14")]
    clean = talib.ATR(high[:, 0], low[:, 0], close[:, 0], 14)
    assert np.nanmax(np.abs(atr[14:, 0] - clean[14:])) <= 1e-9  # the untouched instrument is unaffected
    # Instrument 1: the Wilder recursion skips bar 200, so the value after it is the recursion of the
    # true ranges without that bar.
    true_range = np.maximum(high[1:, 1] - low[1:, 1], np.maximum(np.abs(high[1:, 1] - close[:-1, 1]),
                                                                 np.abs(low[1:, 1] - close[:-1, 1])))
    kept = true_range[np.isfinite(true_range)]
    value = kept[:14].mean()
    for x in kept[14:]:
        value = (value * 13 + x) / 14
    assert abs(atr[-1, 1] - value) <= 1e-9
    assert np.isfinite(atr[200:, 1]).all()
