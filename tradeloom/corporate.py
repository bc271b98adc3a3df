"""Splits: found in a vendor's adjusted close, and applied to raw bars (back-adjusted, as the dbt layer's
`int_bars_adjusted` does), so a 2-for-1 split is not a 50% crash in a backtest. Pure: no I/O."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tradeloom.errors import InputError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Split = tuple[int, float]  # (ex-date as ns since the epoch, new shares per old share)


def splits_from_adjusted_close(bar_at_ns: IntArray, close: FloatArray, adjusted_close: FloatArray, *,
                               min_change: float = 0.25) -> list[Split]:
    """Splits where the adjusted-to-raw close ratio jumps from one bar to the next by more than `min_change`
    (a dividend moves it by a few percent at most); the ratio is rounded to 4 decimals (2.0 for 2-for-1)."""
    if not (bar_at_ns.shape == close.shape == adjusted_close.shape):
        raise InputError(f"bar_at_ns, close and adjusted_close must have one shape, got {bar_at_ns.shape}, "
                         f"{close.shape} and {adjusted_close.shape}")
    if bar_at_ns.size and np.any(np.diff(bar_at_ns) <= 0):
        raise InputError("bar_at_ns must be strictly increasing to find splits")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = adjusted_close / close
        step = ratio[1:] / ratio[:-1]
    jumps = np.flatnonzero(np.isfinite(step) & (np.abs(step - 1.0) > min_change))
    return [(int(bar_at_ns[i + 1]), round(float(step[i]), 4)) for i in jumps]


def back_adjust(bar_at_ns: IntArray, prices: FloatArray, volume: FloatArray,
                splits: list[Split]) -> tuple[FloatArray, FloatArray]:
    """(prices, volume) with every bar before each split's ex-date divided (prices, any trailing shape) or
    multiplied (volume) by its ratio; new arrays, the inputs are left alone."""
    prices, volume = prices.astype(np.float64, copy=True), volume.astype(np.float64, copy=True)
    for ex_at_ns, ratio in splits:
        if not ratio > 0:
            raise InputError(f"split ratio must be > 0, got {ratio} (ex-date {ex_at_ns})")
        before = bar_at_ns < ex_at_ns
        prices[before] /= ratio
        volume[before] *= ratio
    return prices, volume


def back_adjust_column(bar_at_ns: IntArray, grid: dict[str, FloatArray], column: int, splits: list[Split]) -> None:
    """`back_adjust` one instrument's column of (T, N) open/high/low/close/volume arrays, in place."""
    names = ("open", "high", "low", "close")
    prices, grid["volume"][:, column] = back_adjust(
        bar_at_ns, np.stack([grid[name][:, column] for name in names], axis=1), grid["volume"][:, column], splits)
    for j, name in enumerate(names):
        grid[name][:, column] = prices[:, j]
