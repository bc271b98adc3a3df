"""Baseline strategies as class probabilities (down, flat, up), so models and baselines are compared on the
same folds through the same engine."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def simple_moving_average(close: FloatArray, window: int) -> FloatArray:
    """Trailing mean along axis 0 (time); NaN until `window` values are in. Works on (T,) and (T, N)."""
    out = np.full(close.shape, np.nan)
    if close.shape[0] < window:
        return out
    # Sum each window directly (not a running cumsum) so long series carry no accumulated rounding drift.
    windows = np.lib.stride_tricks.sliding_window_view(close, window, axis=0)
    out[window - 1:] = windows.mean(axis=-1)
    return out


def one_hot(direction: npt.NDArray[np.int8]) -> FloatArray:
    """+1 -> up, -1 -> down, 0 -> flat."""
    probabilities = np.zeros((*direction.shape, 3))
    probabilities[..., 0] = direction < 0
    probabilities[..., 1] = direction == 0
    probabilities[..., 2] = direction > 0
    return probabilities


def sma_cross_direction(close: FloatArray, fast: int, slow: int, *, on_cross: bool = True) -> npt.NDArray[np.int8]:
    """+1 where the fast SMA crosses above the slow one, -1 where it crosses below, else 0.

    With `on_cross=False` the state (fast above / below slow) is returned on every bar instead.
    A cross at t needs fast < slow at t-1 and fast > slow at t (strict, as backtesting.py's `crossover`).
    """
    fast_sma, slow_sma = simple_moving_average(close, fast), simple_moving_average(close, slow)
    with np.errstate(invalid="ignore"):
        above, below = fast_sma > slow_sma, fast_sma < slow_sma
    if not on_cross:
        return np.where(above, 1, np.where(below, -1, 0)).astype(np.int8)
    up = np.zeros(close.shape, dtype=bool)
    down = np.zeros(close.shape, dtype=bool)
    up[1:] = below[:-1] & above[1:]
    down[1:] = above[:-1] & below[1:]
    return np.where(up, 1, np.where(down, -1, 0)).astype(np.int8)


def sma_cross_probabilities(close: FloatArray, fast: int = 10, slow: int = 20, *, on_cross: bool = True) -> FloatArray:
    """(T, [N,] 3) probabilities of the SMA-cross baseline."""
    return one_hot(sma_cross_direction(close, fast, slow, on_cross=on_cross))


def buy_and_hold_probabilities(shape: tuple[int, ...]) -> FloatArray:
    """Always 'up': enter on the first bar and never exit."""
    return one_hot(np.ones(shape, dtype=np.int8))
