"""The compiled online engine on messy streams: gaps, NaN volumes and highs, book tops on and off, mixed
stamp forms, save/load mid-stream, refused stamps, one compiled signature, and the saved-state format."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest

from tradeloom.errors import InvariantViolation
from tradeloom.features import kernels
from tradeloom.features.online import BookTop, OnlineFeatureEngine, replay, volume_profile
from tradeloom.features.spec import DEFAULT_SPEC

NAMES = DEFAULT_SPEC.names
MINUTE = 60_000_000_000
KEYS = ["SYNTH:SYN000", "SYNTH:SYN001", "SYNTH:SYN002", "X:Z"]  # SYN000 is the reference; X:Z has none
NUMPY_ENGINE_STATE = Path(__file__).with_name("online_state_numpy_engine.npz")


class Stream:
    """Seeded minute bars for KEYS with missing bars, NaN volumes, a few NaN highs and book tops."""

    def __init__(self, steps: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        width = len(KEYS)
        self.close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.002, (steps, width)), axis=0))
        self.high = self.close * (1 + rng.uniform(0, 0.003, self.close.shape))
        self.low = self.close * (1 - rng.uniform(0, 0.003, self.close.shape))
        self.volume = rng.integers(0, 40, self.close.shape).astype(float)  # small integers: tied profile bins
        self.volume[rng.random(self.close.shape) < 0.03] = np.nan
        self.high[rng.random(self.close.shape) < 0.005] = np.nan
        self.close[rng.random(self.close.shape) < 0.15] = np.nan
        # Stamps skip minutes now and then (the hourly RSI buckets by wall clock).
        self.stamps = np.cumsum(rng.integers(1, 3, steps)).astype(np.int64) * MINUTE
        self.books = {int(t): BookTop(self.close[t] * 0.999, self.close[t] * 1.001, rng.uniform(1, 9, width),
                                      rng.uniform(1, 9, width))
                      for t in np.flatnonzero(rng.random(steps) < 0.3)}

    def run(self, engine: OnlineFeatureEngine, start: int, stop: int) -> np.ndarray:
        out = []
        for t in range(start, stop):
            # Alternate a scalar stamp and one stamp per instrument: both must behave the same.
            stamp: int | np.ndarray = int(self.stamps[t]) if t % 2 else np.full(len(KEYS), self.stamps[t])
            out.append(engine.step(stamp, self.close[t], self.high[t], self.low[t], self.close[t], self.volume[t],
                                   self.books.get(t)))
        return np.array(out)


def test_online_engine_random_stream_saved_and_loaded_mid_stream_equals_uninterrupted_run() -> None:
    steps = 900
    stream = Stream(steps, seed=31)
    straight = stream.run(OnlineFeatureEngine(KEYS, "1m"), 0, steps)
    for cut in (37, 400, 611):  # during warm-up, mid-stream, after the ring has wrapped many times
        first = OnlineFeatureEngine(KEYS, "1m")
        head = stream.run(first, 0, cut)
        saved = io.BytesIO()
        np.savez(saved, **first.state())  # the way a service would persist it
        saved.seek(0)
        second = OnlineFeatureEngine(KEYS, "1m")
        with np.load(saved) as arrays:
            second.load_state(dict(arrays))
        tail = stream.run(second, cut, steps)
        np.testing.assert_array_equal(np.concatenate([head, tail]), straight)
    missing = ~np.isfinite(stream.close)
    assert np.isnan(straight[missing]).all()
    assert np.isfinite(straight[~missing][:, :NAMES.index("corr_ref_20")]).any(axis=0).all()


def test_online_engine_book_tops_follow_formula_when_given_and_are_nan_otherwise() -> None:
    steps = 300
    stream = Stream(steps, seed=4)
    out = stream.run(OnlineFeatureEngine(KEYS, "1m"), 0, steps)
    imbalance, spread = out[:, :, NAMES.index("book_imbalance")], out[:, :, NAMES.index("book_spread")]
    for t in range(steps):
        has_bar = np.isfinite(stream.close[t])
        book = stream.books.get(t)
        if book is None:
            assert np.isnan(imbalance[t]).all() and np.isnan(spread[t]).all()
            continue
        expected_imbalance = (book.bid_size - book.ask_size) / (book.bid_size + book.ask_size)
        expected_spread = (book.best_ask - book.best_bid) / ((book.best_ask + book.best_bid) / 2.0)
        np.testing.assert_array_equal(imbalance[t][has_bar], expected_imbalance[has_bar])
        np.testing.assert_array_equal(spread[t][has_bar], expected_spread[has_bar])
        assert np.isnan(imbalance[t][~has_bar]).all()


def _wilder(values: list[float], period: int) -> list[float]:
    out, mean = [], 0.0
    for count, x in enumerate(values, start=1):
        if count <= period:
            mean += x
            if count == period:
                mean /= period
        else:
            mean = (mean * (period - 1.0) + x) / period
        out.append(mean if count >= period else math.nan)
    return out


def test_online_engine_gappy_instruments_equal_plain_formulas_on_their_own_bars() -> None:
    steps = 500
    stream = Stream(steps, seed=8)
    stream.high[:] = np.fmax(stream.high, stream.close)  # NaN highs are covered above; plain formulas here
    out = stream.run(OnlineFeatureEngine(KEYS, "1m"), 0, steps)
    column = {name: NAMES.index(name) for name in NAMES}
    for i in range(len(KEYS)):
        kept = np.flatnonzero(np.isfinite(stream.close[:, i]))
        c, h, lo, v = (series[kept, i] for series in (stream.close, stream.high, stream.low, stream.volume))
        ours = out[kept, i]
        previous = np.concatenate([[np.nan], c[:-1]])
        change = c - previous
        gain = _wilder([max(x, 0.0) for x in change[1:]], 14)
        loss = _wilder([max(-x, 0.0) for x in change[1:]], 14)
        true_range = np.maximum(h - lo, np.maximum(np.abs(h - previous), np.abs(previous - lo)))
        atr = _wilder(list(true_range[1:]), 14)
        for t in range(len(kept)):
            row = ours[t]
            if t >= 19:
                window = slice(t - 19, t + 1)
                mean, deviation = c[window].mean(), c[window].std()
                assert row[column["sma_20"]] == pytest.approx(mean, rel=1e-13)
                assert row[column["bb_upper_20"]] == pytest.approx(mean + 2.0 * deviation, rel=1e-13)
                assert row[column["pivot_20"]] == pytest.approx((h[window].max() + lo[window].min() + c[t]) / 3.0,
                                                                rel=1e-13)
                with np.errstate(divide="ignore", invalid="ignore"):
                    z = (v[t] - v[window].mean()) / v[window].std()
                if np.isnan(z):  # a NaN volume in the window (or no variation) reads as NULL
                    assert np.isnan(row[column["volume_z_20"]])
                else:
                    assert row[column["volume_z_20"]] == pytest.approx(z, rel=1e-9, abs=1e-12)
            else:
                assert np.isnan(row[[column["sma_20"], column["bb_upper_20"], column["pivot_20"]]]).all()
            if t >= 49:
                window = slice(t - 49, t + 1)
                profile = volume_profile(h[window], lo[window], c[window], v[window], 10, 0.7)
                got = row[[column["vp_poc_50"], column["vp_va_low_50"], column["vp_va_high_50"]]]
                np.testing.assert_array_equal(got, [profile["poc"], profile["va_low"], profile["va_high"]])
            if t >= 14:
                assert row[column["atr_14"]] == atr[t - 1]  # same operations, same order: bit for bit
                total = gain[t - 1] + loss[t - 1]
                assert row[column["rsi_14"]] == (gain[t - 1] / total * 100.0 if total else 0.0)
            else:
                assert np.isnan(row[[column["atr_14"], column["rsi_14"]]]).all()


def test_online_engine_non_increasing_stamp_raises_and_changes_nothing() -> None:
    steps = 120
    stream = Stream(steps, seed=12)
    straight = stream.run(OnlineFeatureEngine(KEYS, "1m"), 0, steps)
    engine = OnlineFeatureEngine(KEYS, "1m")
    stream.run(engine, 0, 60)
    before = {name: value.copy() for name, value in engine.state().items()}
    repeated = int(stream.stamps[59])
    with pytest.raises(InvariantViolation, match=f"bar_at must increase per instrument; got \\[{repeated}"):
        engine.step(repeated, np.full(len(KEYS), 100.0), np.full(len(KEYS), 101.0), np.full(len(KEYS), 99.0),
                    np.full(len(KEYS), 100.0), np.ones(len(KEYS)))
    for name, value in engine.state().items():
        np.testing.assert_array_equal(value, before[name])
    np.testing.assert_array_equal(stream.run(engine, 60, steps), straight[60:])


def test_online_engine_inputs_of_any_layout_use_one_compiled_signature() -> None:
    steps, width = 80, 3
    rng = np.random.default_rng(6)
    grid = 50.0 + rng.uniform(0, 1, (steps, width, 5))  # (time, instrument, OHLCV): columns are strided views
    engine = OnlineFeatureEngine(KEYS[:width], "1m")
    contiguous = OnlineFeatureEngine(KEYS[:width], "1m")
    for t in range(steps):
        bars = grid[t]
        ours = engine.step(np.full(width, t * 60, dtype=np.int32), bars[:, 0], bars[:, 1], bars[:, 2],
                           list(bars[:, 3]), bars[:, 4].astype(np.int64))
        columns = [np.ascontiguousarray(bars[:, k]) for k in range(5)]
        plain = contiguous.step(t * 60, columns[0], columns[1], columns[2], columns[3],
                                columns[4].astype(np.int64).astype(np.float64))
        np.testing.assert_array_equal(ours, plain)
    assert kernels.signatures() == 1


def test_online_engine_state_saved_by_numpy_engine_loads_and_continues() -> None:
    # Saved by the numpy engine this kernel replaced (300 bars of Stream(420, seed=77)): the state format
    # the executor may hold on disk. Its log returns came from numpy's log, which can differ from the
    # C library's in the last bit, so the continuation matches to 1e-12 rather than bit for bit.
    stream = Stream(420, seed=77)
    with np.load(NUMPY_ENGINE_STATE) as arrays:
        saved = dict(arrays)
    fresh = OnlineFeatureEngine(KEYS, "1m")
    assert set(fresh.state()) == set(saved)
    straight = OnlineFeatureEngine(KEYS, "1m")
    stream.run(straight, 0, 300)
    for name, value in straight.state().items():
        assert value.shape == saved[name].shape and value.dtype.kind == saved[name].dtype.kind, name
        if value.dtype.kind in "biuf":  # the same state reached by the other implementation
            np.testing.assert_allclose(value.astype(float), saved[name].astype(float), rtol=0, atol=1e-12,
                                       err_msg=name)
    fresh.load_state(saved)
    resumed, expected = stream.run(fresh, 300, 420), stream.run(straight, 300, 420)
    assert np.array_equal(np.isnan(resumed), np.isnan(expected))
    np.testing.assert_allclose(resumed, expected, rtol=0, atol=1e-12)


def test_replay_with_one_instrument_without_reference_has_no_correlation() -> None:
    steps = 60
    close = 100.0 + np.arange(steps, dtype=float)[:, None]
    out = replay(OnlineFeatureEngine(["X:Z"], "1m"), np.arange(steps, dtype=np.int64) * MINUTE, close, close + 1,
                 close - 1, close, np.ones((steps, 1)))
    assert np.isnan(out[:, 0, NAMES.index("corr_ref_20")]).all()
    assert np.isfinite(out[-1, 0, NAMES.index("sma_20")])


def test_online_engine_custom_spec_with_unshared_lags_and_two_of_each_equals_talib() -> None:
    # Different simple and log lags, two Bollinger widths on one period, two MACDs, two ATRs: the compiled
    # program shares what it can and keeps each output apart.
    import talib

    from tradeloom.features.spec import Feature, FeatureSpec

    def feature(name: str, indicator: str, **params: int | float | str) -> Feature:
        inputs = ("high", "low", "close") if indicator == "atr_wilder" else ("close",)
        return Feature(name, indicator, inputs, tuple(sorted(params.items())))

    spec = FeatureSpec(features=(
        feature("ret_3", "return", lag=3), feature("logret_2", "log_return", lag=2),
        feature("bb_up_1", "bollinger", period=10, width=1.0, output="upper"),
        feature("bb_lo_3", "bollinger", period=10, width=3.0, output="lower"),
        feature("macd_fast", "macd", fast=5, slow=13, signal=4, output="line"),
        feature("macd_slow_signal", "macd", fast=12, slow=26, signal=9, output="signal"),
        feature("atr_5", "atr_wilder", period=5), feature("atr_20", "atr_wilder", period=20),
        feature("rvol_10", "realised_vol", period=10),
    ), labels=DEFAULT_SPEC.labels.__class__(vol_feature="rvol_10"))
    rng = np.random.default_rng(19)
    steps = 300
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.003, steps)))
    high, low = close * (1 + rng.uniform(0, 0.004, steps)), close * (1 - rng.uniform(0, 0.004, steps))
    out = replay(OnlineFeatureEngine(["X:A"], "1m", spec), np.arange(steps, dtype=np.int64) * MINUTE, close[:, None],
                 high[:, None], low[:, None], close[:, None], np.ones((steps, 1)))[:, 0]
    names = spec.names
    expected = {
        "ret_3": talib.ROCR(close, 3) - 1.0, "logret_2": np.log(talib.ROCR(close, 2)),
        "bb_up_1": talib.BBANDS(close, 10, 1.0, 1.0, 0)[0], "bb_lo_3": talib.BBANDS(close, 10, 3.0, 3.0, 0)[2],
        "macd_fast": talib.EMA(close, 5) - talib.EMA(close, 13),
        "macd_slow_signal": np.concatenate([np.full(25, np.nan),
                                            talib.EMA(talib.EMA(close, 12)[25:] - talib.EMA(close, 26)[25:], 9)]),
        "atr_5": talib.ATR(high, low, close, 5), "atr_20": talib.ATR(high, low, close, 20),
    }
    for name, reference in expected.items():
        ours = out[:, names.index(name)]
        defined = np.isfinite(reference)
        assert np.array_equal(np.isfinite(ours), defined), name
        assert np.max(np.abs(ours[defined] - reference[defined])) <= 1e-9, name
