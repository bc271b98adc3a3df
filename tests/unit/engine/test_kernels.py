"""The compiled kernels against the numpy expressions they replace, on random inputs: bit-identical."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradeloom.engine.config import SignalConfig
from tradeloom.engine.kernels import (
    bar_memory_kernel,
    cash_covers_kernel,
    fixed_quantity_kernel,
    held_levels_kernel,
    mark_to_market_kernel,
    signal_kernel,
)
from tradeloom.engine.signals import Signals, entry_candidates, exit_wanted, signals_by_numpy

THRESHOLDS = st.sampled_from([0.0, 0.3, 1.0 / 3.0, 0.4, 0.5, 0.55, 1.0])


def random_probabilities(rng: np.random.Generator, n: int) -> np.ndarray:
    logits = rng.standard_normal((n, 3)) * float(rng.choice([0.001, 1.0, 6.0]))
    p: np.ndarray = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    # Ties, exact thirds, zeros and missing scores: where a reordered formula would differ. (Not -0.0: no
    # model emits it, and np.maximum's choice between 0.0 and -0.0 is not specified.)
    rounded = rng.random(n) < 0.2
    p[rounded] = np.round(p[rounded], 1)
    p[rng.random((n, 3)) < 0.05] = np.nan
    p[rng.random((n, 3)) < 0.05] = 1.0 / 3.0
    p[rng.random((n, 3)) < 0.03] = 0.0
    return p


def assert_same(a: np.ndarray, b: np.ndarray) -> None:
    """Same dtype, shape and bytes (so also the sign of zeros): the values go into the decision record."""
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(a, b, equal_nan=True)
    assert a.tobytes() == b.tobytes()


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 120), enter=THRESHOLDS, exit_=THRESHOLDS,
       min_confidence=st.sampled_from([0.0, 0.01, 0.1, 0.5]))
def test_signal_kernel_random_probabilities_equals_numpy_expression(seed: int, n: int, enter: float, exit_: float,
                                                                    min_confidence: float) -> None:
    p = random_probabilities(np.random.default_rng(seed), n)
    config = SignalConfig(enter_threshold=enter, exit_threshold=exit_, min_confidence=min_confidence)
    expected = signals_by_numpy(config, p)
    for kernel in (signal_kernel, signal_kernel.python):  # type: ignore[attr-defined]
        direction, exit_direction, confidence, margin = kernel(p, enter, exit_, min_confidence)
        assert_same(direction, expected.direction)
        assert_same(exit_direction, expected.exit_direction)
        assert_same(confidence, expected.confidence)
        assert_same(margin, expected.margin)


def test_signal_kernel_strided_input_equals_numpy_expression() -> None:
    wide = random_probabilities(np.random.default_rng(3), 40).repeat(2, axis=0)[::2]  # a non-contiguous view
    config = SignalConfig(enter_threshold=0.4, exit_threshold=0.45)
    direction, _, confidence, _ = signal_kernel(wide, 0.4, 0.45, 0.0)
    expected = signals_by_numpy(config, wide)
    assert_same(direction, expected.direction)
    assert_same(confidence, expected.confidence)


@st.composite
def memory_cases(draw: st.DrawFn) -> tuple[dict[str, np.ndarray], SignalConfig]:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(0, 60))
    held = rng.random(n) < 0.4
    arrays = {
        "positions": (rng.integers(-5, 6, n) * held).astype(np.int64),
        "pending": (rng.integers(-3, 4, n) * (rng.random(n) < 0.2)).astype(np.int64),
        "last_position": (rng.integers(-5, 6, n) * (rng.random(n) < 0.4)).astype(np.int64),
        "bars_since_exit": rng.choice([0, 1, 2, 5, 40, np.iinfo(np.int32).max], n).astype(np.int64),
        "holding_bars": rng.integers(0, 50, n).astype(np.int64),
        "stop_price": np.where(rng.random(n) < 0.5, rng.random(n) * 100, np.nan),
        "take_profit_price": np.where(rng.random(n) < 0.5, rng.random(n) * 100, np.nan),
        "best_close": np.where(rng.random(n) < 0.5, rng.random(n) * 100, np.nan),
        "direction": rng.integers(-1, 2, n).astype(np.int8),
        "exit_direction": rng.integers(-1, 2, n).astype(np.int8),
    }
    config = SignalConfig(allow_short=draw(st.booleans()), cooldown_bars=draw(st.sampled_from([0, 1, 3])),
                          max_holding_bars=draw(st.sampled_from([None, 1, 10, 30])))
    return arrays, config


def numpy_memory(a: dict[str, np.ndarray], config: SignalConfig) -> tuple[np.ndarray, ...]:
    """The step's bookkeeping as it was written with numpy (before the kernel)."""
    positions = a["positions"]
    held = positions != 0
    flat = ~held
    bars_since_exit, holding_bars = a["bars_since_exit"].copy(), a["holding_bars"].copy()
    stop, target, best = a["stop_price"].copy(), a["take_profit_price"].copy(), a["best_close"].copy()
    bars_since_exit += 1
    bars_since_exit[(a["last_position"] != 0) & flat] = 0
    holding_bars += 1
    holding_bars[flat] = 0
    stop[flat] = np.nan
    target[flat] = np.nan
    best[flat] = np.nan
    signals = Signals(a["direction"], np.zeros(len(positions)), np.zeros(len(positions)), a["exit_direction"])
    opposite, timed = exit_wanted(config, signals, positions, holding_bars)
    side = entry_candidates(config, signals, positions, a["pending"], bars_since_exit, None)
    return held, opposite, timed, side, bars_since_exit, holding_bars, stop, target, best


@settings(max_examples=200, deadline=None)
@given(memory_cases())
def test_bar_memory_kernel_random_state_equals_numpy_expression(case: tuple[dict[str, np.ndarray],
                                                                              SignalConfig]) -> None:
    a, config = case
    expected = numpy_memory(a, config)
    for kernel in (bar_memory_kernel, bar_memory_kernel.python):  # type: ignore[attr-defined]
        state = {name: a[name].copy() for name in ("bars_since_exit", "holding_bars", "stop_price",
                                                     "take_profit_price", "best_close")}
        last_position = a["last_position"].copy()
        masks = kernel(a["positions"], a["pending"], last_position, state["bars_since_exit"],
                       state["holding_bars"], state["stop_price"], state["take_profit_price"], state["best_close"],
                       a["direction"], a["exit_direction"], config.allow_short, config.cooldown_bars,
                       -1 if config.max_holding_bars is None else config.max_holding_bars)
        got = (*masks, state["bars_since_exit"], state["holding_bars"], state["stop_price"],
               state["take_profit_price"], state["best_close"])
        for value, want in zip(got, expected, strict=True):
            assert_same(np.asarray(value), want)
        assert np.array_equal(last_position, a["last_position"])  # read only: the previous state shares it


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 60))
def test_held_levels_kernel_random_book_equals_numpy_expression(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    positions = (rng.integers(-9, 10, n) * (rng.random(n) < 0.6)).astype(np.int64)
    held = (positions != 0) & (rng.random(n) < 0.8)  # the step leaves out positions being exited
    close = np.where(rng.random(n) < 0.1, np.nan, 100 + rng.normal(0, 5, n))
    stop_price = np.where(rng.random(n) < 0.3, rng.choice([np.nan, np.inf]), 90.0 + rng.random(n))
    best_close = np.where(rng.random(n) < 0.3, rng.choice([np.nan, -np.inf, np.inf]), 100 + rng.normal(0, 5, n))
    tie = rng.random(n) < 0.1
    best_close[tie] = close[tie]
    side = np.sign(positions).astype(np.int8)
    unknown = held & ~np.isfinite(stop_price)
    best = np.where(held & ~np.isfinite(best_close), close, best_close)
    expected_best = np.where(held, np.where(side > 0, np.fmax(best, close), np.fmin(best, close)), best)
    for kernel in (held_levels_kernel, held_levels_kernel.python):  # type: ignore[attr-defined]
        anchor = best_close.copy()
        got_side, got_unknown, got_size = kernel(held, positions, close, stop_price, anchor)
        assert_same(got_side, side)
        assert_same(got_unknown, unknown)
        assert_same(got_size, np.abs(positions))
        assert_same(anchor, expected_best)


def random_prices(rng: np.random.Generator, n: int) -> np.ndarray:
    price = np.round(rng.lognormal(4.0, 1.5, n), int(rng.integers(0, 3)))
    odd = rng.random(n)
    price[odd < 0.05] = np.nan
    price[(odd >= 0.05) & (odd < 0.08)] = 0.0
    price[(odd >= 0.08) & (odd < 0.10)] = -1.0
    price[(odd >= 0.10) & (odd < 0.12)] = np.inf
    return price


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 80), quantity=st.sampled_from([1, 3, 10, 25, 999]))
def test_fixed_quantity_kernel_equals_numpy_expression(seed: int, n: int, quantity: int) -> None:
    rng = np.random.default_rng(seed)
    price = random_prices(rng, n)
    lot_size = rng.choice(np.array([1, 1, 5, 25, 50, 2000], dtype=np.int64), n)
    safe = np.isfinite(price) & (price > 0)
    wanted = np.where(safe & (quantity > 0), float(quantity), 0.0)
    expected = (np.floor(wanted / lot_size) * lot_size).astype(np.int64)
    for kernel in (fixed_quantity_kernel, fixed_quantity_kernel.python):  # type: ignore[attr-defined]
        assert_same(kernel(price, float(quantity), lot_size), expected)


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 80), rate=st.sampled_from([1.0, 1.001, 1.0000001]),
       slack=st.sampled_from([-1e-6, -1e-12, 0.0, 1e-12, 1e-6, 0.5]))
def test_cash_covers_kernel_decides_as_the_numpy_expression(seed: int, n: int, rate: float, slack: float) -> None:
    rng = np.random.default_rng(seed)
    close = random_prices(rng, n)
    quantity = (rng.integers(0, 50, n) * (rng.random(n) < 0.5)).astype(np.int64)
    lot_size = rng.choice(np.array([1, 5, 25], dtype=np.int64), n)
    wanted = quantity > 0
    price = close[wanted] * rate
    valid = bool(price.size) and bool(np.all(price > 0))
    need = float((quantity[wanted] * price).sum() + (price * lot_size[wanted]).max()) if valid else 0.0
    # Budgets at, just above and just below the boundary: where a different summation order could matter.
    budget = need / (1.0 - 1e-9) * (1.0 + slack) if valid and np.isfinite(need) else 1e6 * (1.0 + slack)
    expected = valid and need <= budget * (1.0 - 1e-9)
    for kernel in (cash_covers_kernel, cash_covers_kernel.python):  # type: ignore[attr-defined]
        got = kernel(quantity, close, lot_size, rate, budget)
        if got != expected:  # only a summation-order difference, i.e. within rounding of the boundary
            assert abs(need - budget * (1.0 - 1e-9)) <= 1e-12 * max(abs(need), 1.0), (got, expected, need, budget)


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 120))
def test_mark_to_market_kernel_equals_numpy_expression(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    positions = (rng.integers(-500, 500, n) * (rng.random(n) < 0.5)).astype(np.int64)
    close = random_prices(rng, n)
    close[np.isinf(close)] = np.nan
    fallback = np.where(rng.random(n) < 0.1, np.nan, 100 + rng.normal(0, 5, n))
    cash = float(rng.normal(1e6, 1e5))
    mark = np.where(np.isfinite(close), close, fallback)
    held = positions != 0
    expected = float(cash + (positions[held] * mark[held]).sum())
    for kernel in (mark_to_market_kernel, mark_to_market_kernel.python):  # type: ignore[attr-defined]
        got = kernel(cash, positions, close, fallback)
        if np.isnan(expected):  # a held position with no mark at all: the equity is unknown either way
            assert np.isnan(got)
        else:  # the same terms, summed in another order: equal to rounding
            assert got == pytest.approx(expected, rel=1e-12, abs=1e-6)
