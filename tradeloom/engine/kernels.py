"""Compiled per-instrument loops for the engine's hottest array code.

Why: on a cross-section of 50-100 instruments each numpy call costs about a microsecond of overhead and
does almost no work, so a dozen chained calls cost more than one loop compiled with numba. Each kernel
does the same IEEE operations in the same order as the numpy expression it replaces (no fastmath), so
results are bit-identical; the tests compare every kernel with that expression on random inputs.

Compiled on first call and cached on disk (`cache=True`): importing the engine does not import numba;
the first call costs about a second per process (import + cache load; a few seconds when the cache is
cold), so a long-running service calls `warm_up()` at start-up instead of paying it on its first bar. Without
numba the same functions run as plain Python (slow, identical results).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Int8Array = npt.NDArray[np.int8]
BoolArray = npt.NDArray[np.bool_]
_F = TypeVar("_F", bound=Callable[..., Any])
log = logging.getLogger(__name__)


class _Kernel:
    """A function compiled with numba on its first call; `numba` itself is imported only then (~0.5 s)."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.python = function  # the plain-Python body: the fallback, and what the tests read line by line
        self._call: Callable[..., Any] | None = None
        self.__doc__ = function.__doc__

    def __call__(self, *args: Any) -> Any:
        call = self._call
        if call is None:
            call = self._call = self._compile()
        return call(*args)

    def _compile(self) -> Callable[..., Any]:
        try:
            import numba
        except ImportError:  # numba is in both lock files; without it the results are the same, only slower
            log.warning("numba is not installed: engine kernels run as plain Python")
            return self.python
        compiled: Callable[..., Any] = numba.njit(cache=True, nogil=True)(self.python)
        return compiled


def _compiled(function: _F) -> _F:
    return cast(_F, _Kernel(function))


@_compiled
def signal_kernel(probabilities: FloatArray, enter_threshold: float, exit_threshold: float,
                  min_confidence: float) -> tuple[Int8Array, Int8Array, FloatArray, FloatArray]:
    """(direction, exit direction, confidence, margin) from (N, 3) down/flat/up probabilities; NaN counts as 0.

    Mirrors: top = max(max(down, flat), up), bottom = min(min(down, flat), up),
    margin = top - (down + flat + up - top - bottom); for entries up wins on p(up) >= enter and p(up) > p(down),
    down on p(down) >= enter and p(down) > p(up); for exits the same with `exit`; either only when
    margin >= min_confidence.
    """
    n = probabilities.shape[0]
    direction = np.zeros(n, dtype=np.int8)
    exit_direction = np.zeros(n, dtype=np.int8)
    confidence = np.empty(n, dtype=np.float64)
    margin = np.empty(n, dtype=np.float64)
    for i in range(n):
        down = probabilities[i, 0]
        flat = probabilities[i, 1]
        up = probabilities[i, 2]
        # The same values as np.where(np.isnan(p), 0.0, p).
        if math.isnan(down):
            down = 0.0
        if math.isnan(flat):
            flat = 0.0
        if math.isnan(up):
            up = 0.0
        # np.maximum/np.minimum return the first argument on ties; so do these (NaN cannot occur here).
        top = down if down >= flat else flat
        top = top if top >= up else up
        bottom = down if down <= flat else flat
        bottom = bottom if bottom <= up else up
        winner_margin = top - (down + flat + up - top - bottom)
        margin[i] = winner_margin
        confident = winner_margin >= min_confidence
        if confident and up >= enter_threshold and up > down:
            direction[i] = 1
            confidence[i] = up
        elif confident and down >= enter_threshold and down > up:
            direction[i] = -1
            confidence[i] = down
        else:
            confidence[i] = flat
        if confident and up >= exit_threshold and up > down:
            exit_direction[i] = 1
        elif confident and down >= exit_threshold and down > up:
            exit_direction[i] = -1
    return direction, exit_direction, confidence, margin


@_compiled
def bar_memory_kernel(positions: IntArray, pending: IntArray, last_position: IntArray, bars_since_exit: IntArray,
                      holding_bars: IntArray, stop_price: FloatArray, take_profit_price: FloatArray,
                      best_close: FloatArray, direction: Int8Array, exit_direction: Int8Array, allow_short: bool,
                      cooldown_bars: int, max_holding_bars: int) -> tuple[BoolArray, BoolArray, BoolArray, Int8Array]:
    """The step's per-instrument bookkeeping at a bar close, in place on the (copied) state arrays, and
    its exit/entry masks: returns (held, opposite, timed, entry side). `max_holding_bars` < 0: none.

    Mirrors, with flat = positions == 0:
        bars_since_exit += 1; bars_since_exit[(last_position != 0) & flat] = 0
        holding_bars += 1; holding_bars[flat] = 0
        stop_price[flat] = take_profit_price[flat] = best_close[flat] = NaN
        signals.exit_wanted(...) -> (opposite, timed)
        signals.entry_candidates(...) without the confirmation feature (the step applies that after).
    """
    n = positions.shape[0]
    held = np.zeros(n, dtype=np.bool_)
    opposite = np.zeros(n, dtype=np.bool_)
    timed = np.zeros(n, dtype=np.bool_)
    side = np.zeros(n, dtype=np.int8)
    for i in range(n):
        position = positions[i]
        is_held = position != 0
        held[i] = is_held
        bars_since_exit[i] += 1
        if last_position[i] != 0 and not is_held:
            bars_since_exit[i] = 0
        holding_bars[i] += 1
        wanted = direction[i]
        if is_held:
            opposite[i] = exit_direction[i] * position < 0
            timed[i] = max_holding_bars >= 0 and holding_bars[i] >= max_holding_bars and not opposite[i]
            continue  # held: no entry
        holding_bars[i] = 0
        stop_price[i] = np.nan
        take_profit_price[i] = np.nan
        best_close[i] = np.nan
        if wanted < 0 and not allow_short:
            continue
        if pending[i] != 0:
            continue
        if cooldown_bars and bars_since_exit[i] < cooldown_bars:
            continue
        side[i] = wanted
    return held, opposite, timed, side


@_compiled
def held_levels_kernel(held: BoolArray, positions: IntArray, close: FloatArray, stop_price: FloatArray,
                       best_close: FloatArray) -> tuple[Int8Array, BoolArray, IntArray]:
    """(side, unknown stop, size) of held positions; ratchets `best_close` in place (the trailing anchor).

    Mirrors:
        side = np.sign(positions).astype(np.int8); size = np.abs(positions)
        unknown = held & ~np.isfinite(stop_price)
        best = np.where(held & ~np.isfinite(best_close), close, best_close)
        best_close[:] = np.where(held, np.where(side > 0, np.fmax(best, close), np.fmin(best, close)), best)
    """
    n = positions.shape[0]
    side = np.zeros(n, dtype=np.int8)
    unknown = np.zeros(n, dtype=np.bool_)
    size = np.empty(n, dtype=np.int64)
    for i in range(n):
        position = positions[i]
        size[i] = -position if position < 0 else position
        if position > 0:
            side[i] = 1
        elif position < 0:
            side[i] = -1
        if not held[i]:
            continue
        unknown[i] = not math.isfinite(stop_price[i])
        best = best_close[i]
        price = close[i]
        if not math.isfinite(best):
            best = price
        # np.fmax / np.fmin: the first argument unless the second is larger / smaller or the first is NaN.
        if side[i] > 0:
            best_close[i] = best if (best >= price or math.isnan(price)) else price
        else:
            best_close[i] = best if (best <= price or math.isnan(price)) else price
    return side, unknown, size


@_compiled
def cash_covers_kernel(quantity: IntArray, close: FloatArray, lot_size: IntArray, rate: float,
                       budget: float) -> bool:
    """True when `budget` pays for every wanted entry (quantity > 0) at close * rate plus one more lot of the
    dearest: then `risk._cash_cuts` would cut nothing. False when nothing is wanted or a wanted price is not
    positive (NaN included).

    Mirrors: price = close[wanted] * rate; price.size and all(price > 0) and
    (quantity[wanted] * price).sum() + (price * lot_size[wanted]).max() <= budget * (1 - 1e-9), with the sum
    taken left to right (numpy's is pairwise: the two differ by far less than the 1e-9 margin, which is what
    makes the test sufficient, so either order decides the same).
    """
    total = 0.0
    dearest = -math.inf
    wanted = 0
    for i in range(quantity.shape[0]):
        if quantity[i] <= 0:
            continue
        price = close[i] * rate
        if not price > 0:
            return False
        wanted += 1
        total += quantity[i] * price
        lot_price = price * lot_size[i]
        dearest = max(dearest, lot_price)
    return wanted > 0 and total + dearest <= budget * (1.0 - 1e-9)


@_compiled
def fixed_quantity_kernel(price: FloatArray, quantity: float, lot_size: IntArray) -> IntArray:
    """`quantity` units in whole lots (towards zero) wherever the price is finite and positive, else 0.

    Mirrors sizing.target_quantity for method "fixed_quantity": safe = isfinite(price) & (price > 0);
    q = where(safe & (quantity > 0), quantity, 0.0); (floor(q / lot_size) * lot_size).astype(int64).
    """
    n = price.shape[0]
    out = np.zeros(n, dtype=np.int64)
    if not quantity > 0:
        return out
    for i in range(n):
        p = price[i]
        if math.isfinite(p) and p > 0:
            out[i] = np.int64(math.floor(quantity / lot_size[i]) * lot_size[i])
    return out


@_compiled
def mark_to_market_kernel(cash: float, positions: IntArray, close: FloatArray, fallback: FloatArray) -> float:
    """cash + sum of position * mark over held instruments, the mark being the close where it is finite and
    `fallback` (the last known close) elsewhere; summed left to right in instrument order.

    Mirrors: mark = where(isfinite(close), close, fallback); held = positions != 0;
    cash + (positions[held] * mark[held]).sum() (numpy sums pairwise: the two may differ in the last bits).
    """
    total = 0.0
    for i in range(positions.shape[0]):
        position = positions[i]
        if position == 0:
            continue
        mark = close[i]
        if not math.isfinite(mark):
            mark = fallback[i]
        total += position * mark
    return cash + total


@_compiled
def round_trips_kernel(index: IntArray, side: IntArray, quantity: IntArray, price: FloatArray, fee: FloatArray,
                       n_instruments: int) -> tuple[IntArray, IntArray, IntArray, IntArray, IntArray, FloatArray,
                                                    FloatArray, IntArray, FloatArray, FloatArray]:
    """Round trips, flat to flat per instrument, from fills in time order: per trade (instrument, side, first
    fill, last fill, entry quantity, entry value, exit value, exit quantity, cash, fees).

    Mirrors the per-fill loop (Python floats, same operations in the same order): on each fill of an instrument
    `cash -= side * qty * price + fee`, `fees += fee`, entry or exit quantity and value grow by the side of the
    first fill, `position += side * qty`; at position 0 the trade closes and the next fill opens a new one.
    """
    n = index.shape[0]
    open_ = np.zeros(n_instruments, dtype=np.bool_)
    first = np.zeros(n_instruments, dtype=np.int64)
    book_side = np.zeros(n_instruments, dtype=np.int64)
    position = np.zeros(n_instruments, dtype=np.int64)
    entry_qty = np.zeros(n_instruments, dtype=np.int64)
    exit_qty = np.zeros(n_instruments, dtype=np.int64)
    cash = np.zeros(n_instruments, dtype=np.float64)
    fees = np.zeros(n_instruments, dtype=np.float64)
    entry_value = np.zeros(n_instruments, dtype=np.float64)
    exit_value = np.zeros(n_instruments, dtype=np.float64)
    out_i = np.empty(n, dtype=np.int64)
    out_side = np.empty(n, dtype=np.int64)
    out_first = np.empty(n, dtype=np.int64)
    out_last = np.empty(n, dtype=np.int64)
    out_entry_qty = np.empty(n, dtype=np.int64)
    out_entry_value = np.empty(n, dtype=np.float64)
    out_exit_value = np.empty(n, dtype=np.float64)
    out_exit_qty = np.empty(n, dtype=np.int64)
    out_cash = np.empty(n, dtype=np.float64)
    out_fees = np.empty(n, dtype=np.float64)
    trades = 0
    for k in range(n):
        i = index[k]
        s = side[k]
        q = quantity[k]
        p = price[k]
        if not open_[i]:
            open_[i] = True
            first[i] = k
            book_side[i] = s
            position[i] = 0
            entry_qty[i] = 0
            exit_qty[i] = 0
            cash[i] = 0.0
            fees[i] = 0.0
            entry_value[i] = 0.0
            exit_value[i] = 0.0
        cash[i] -= s * q * p + fee[k]
        fees[i] += fee[k]
        if s == book_side[i]:
            entry_qty[i] += q
            entry_value[i] += q * p
        else:
            exit_qty[i] += q
            exit_value[i] += q * p
        position[i] += s * q
        if position[i] == 0:
            out_i[trades] = i
            out_side[trades] = book_side[i]
            out_first[trades] = first[i]
            out_last[trades] = k
            out_entry_qty[trades] = entry_qty[i]
            out_entry_value[trades] = entry_value[i]
            out_exit_value[trades] = exit_value[i]
            out_exit_qty[trades] = exit_qty[i]
            out_cash[trades] = cash[i]
            out_fees[trades] = fees[i]
            trades += 1
            open_[i] = False
    return (out_i[:trades], out_side[:trades], out_first[:trades], out_last[:trades], out_entry_qty[:trades],
            out_entry_value[:trades], out_exit_value[:trades], out_exit_qty[:trades], out_cash[:trades],
            out_fees[:trades])


def warm_up() -> None:
    """Compile (or load from the disk cache) every kernel for the dtypes the engine passes."""
    signal_kernel(np.full((1, 3), 1.0 / 3.0), 0.5, 0.5, 0.0)
    ones, nan = np.ones(1, dtype=np.int64), np.full(1, np.nan)
    bar_memory_kernel(ones, ones.copy(), ones.copy(), ones.copy(), ones.copy(), nan, nan.copy(), nan.copy(),
                      np.ones(1, dtype=np.int8), np.ones(1, dtype=np.int8), False, 0, -1)
    held_levels_kernel(np.ones(1, dtype=np.bool_), ones, np.ones(1), nan.copy(), nan.copy())
    round_trips_kernel(np.zeros(1, dtype=np.int64), ones, ones, np.ones(1), np.ones(1), 1)
    cash_covers_kernel(ones, np.ones(1), ones, 1.0, 1.0)
    fixed_quantity_kernel(np.ones(1), 1.0, ones)
    mark_to_market_kernel(1.0, ones, np.ones(1), nan)
