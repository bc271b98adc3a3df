"""The compiled online engine against per-instrument references: gaps, the volume profile, buffer wrap."""

from __future__ import annotations

import numpy as np

from tradeloom.features.online import OnlineFeatureEngine, replay, volume_profile
from tradeloom.features.spec import DEFAULT_SPEC

NAMES = DEFAULT_SPEC.names
MINUTE = 60_000_000_000


def _bars(steps: int, width: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.002, (steps, width)), axis=0))
    high = close * (1 + rng.uniform(0, 0.003, close.shape))
    low = close * (1 - rng.uniform(0, 0.003, close.shape))
    volume = rng.integers(0, 1000, close.shape) + rng.uniform(0, 1, close.shape)
    return close, high, low, volume


def test_online_engine_instrument_with_gaps_equals_its_own_series_alone() -> None:
    steps = 700
    close, high, low, volume = _bars(steps, 3, 21)
    gaps = np.random.default_rng(4).random(steps) < 0.2
    close[gaps, 1] = np.nan
    stamps = np.arange(steps, dtype=np.int64) * MINUTE
    keys = ["X:A", "X:B", "X:C"]
    together = replay(OnlineFeatureEngine(keys, "1m"), stamps, close, high, low, close, volume)[:, 1]
    kept = ~gaps
    alone = replay(OnlineFeatureEngine(["X:B"], "1m"), stamps[kept], close[kept, 1:2], high[kept, 1:2],
                   low[kept, 1:2], close[kept, 1:2], volume[kept, 1:2])[:, 0]
    assert np.isnan(together[gaps]).all()
    # The hourly RSI buckets by wall-clock time, the same with or without the gaps; the correlation
    # reads the cross-section, so neither is per-instrument here.
    columns = [i for i, name in enumerate(NAMES) if name not in ("corr_ref_20",)]
    # Window sums may associate differently with another cross-section width: the project tolerance.
    np.testing.assert_allclose(together[kept][:, columns], alone[:, columns], rtol=0, atol=1e-9)
    assert np.isfinite(alone[-1, :NAMES.index("corr_ref_20")]).all()  # past warm-up: real values compared


def test_online_engine_volume_profile_equals_scalar_reference_on_each_window() -> None:
    steps, width, period = 160, 4, 50
    close, high, low, volume = _bars(steps, width, 9)
    volume[70:75, 2] = np.nan  # missing volume: profile undefined while it is in the window
    stamps = np.arange(steps, dtype=np.int64) * MINUTE
    out = replay(OnlineFeatureEngine([f"X:{i}" for i in range(width)], "1m"), stamps, close, high, low, close,
                 volume)
    columns = [NAMES.index(name) for name in ("vp_poc_50", "vp_va_low_50", "vp_va_high_50")]
    for t in range(steps):
        for i in range(width):
            got = out[t, i, columns]
            if t + 1 < period:
                assert np.isnan(got).all()
                continue
            window = slice(t + 1 - period, t + 1)
            expected = volume_profile(high[window, i], low[window, i], close[window, i], volume[window, i], 10, 0.7)
            np.testing.assert_array_equal(got, [expected["poc"], expected["va_low"], expected["va_high"]])


def test_online_engine_state_round_trip_across_buffer_wrap_continues_identically() -> None:
    steps, cut = 1300, 555  # the window buffer moves to its front every 512 steps
    close, high, low, volume = _bars(steps, 2, 13)
    close[600:620, 0] = np.nan
    stamps = np.arange(steps, dtype=np.int64) * MINUTE
    keys = ["X:A", "X:B"]
    straight = replay(OnlineFeatureEngine(keys, "1m"), stamps, close, high, low, close, volume)
    first = OnlineFeatureEngine(keys, "1m")
    replay(first, stamps[:cut], close[:cut], high[:cut], low[:cut], close[:cut], volume[:cut])
    second = OnlineFeatureEngine(keys, "1m")
    second.load_state({name: value.copy() for name, value in first.state().items()})
    resumed = replay(second, stamps[cut:], close[cut:], high[cut:], low[cut:], close[cut:], volume[cut:])
    np.testing.assert_array_equal(resumed, straight[cut:])
