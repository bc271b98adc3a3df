"""The online feature engine's compiled step: one call advances every instrument by one bar.

`OnlineFeatureEngine` compiles the feature spec into a small program (`ops`: one row per operation,
opcode first, then slot numbers and sizes; `op_params`: its float parameter). Per instrument with a bar,
`step` writes the bar into the instrument's ring buffer, runs the program over that instrument's
windows and recursions into `slots` (one value per intermediate result), then gathers the feature
columns from the slots. Instruments without a bar (non-finite close) are skipped: their state is
untouched and their output row is NaN, so each instrument's series is its own bars.

Arithmetic: no fastmath, and every result is formed with the same operations in the same order as the
plain formulas (sequential window sums oldest first, then the two-pass deviation; the recursions of
the `ema`/`wilder_mean` aggregates in sql/010_indicator_aggregates.sql; the volume profile of
`volume_profile` in online.py), so outputs are those of the straightforward per-instrument code.
One exception: the logarithm here is the C library's (as PostgreSQL's `ln`), while numpy's own SIMD
`np.log` may differ from it in the last bit, so log returns and what is built on them (realised
volatility, correlation) can differ from numpy formulas by an ulp or so.

Ring buffer: each series keeps `2 * W` values per instrument and every value is written twice, at
`head` and `head + W`, so the last n values always sit at `head + W - n + 1 .. head + W` in time order:
no modulo and no copy per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
_Function = TypeVar("_Function", bound=Callable[..., Any])

# Series of the ring buffer (second axis).
HIGH, LOW, CLOSE, LOG_RETURN, VOLUME, REFERENCE = range(6)
SERIES_COUNT = 6
# Rows of the per-step input block.
INPUT_CLOSE, INPUT_HIGH, INPUT_LOW, INPUT_VOLUME, INPUT_BID, INPUT_ASK, INPUT_BID_SIZE, INPUT_ASK_SIZE = range(8)
INPUT_ROWS = 8
# Opcodes and their fields (after the opcode), one row of `ops` each:
OP_RETURN = 0  # output slot, lag
OP_LOG_RETURN = 1  # output slot, lag
OP_MOMENTS = 2  # period, series a, b, c, d, first of 8 slots (mean, deviation per series), correlation slot
OP_BOLLINGER = 3  # mean slot, deviation slot, upper slot, lower slot, %B slot; param: width
OP_VOLUME_Z = 4  # mean slot, deviation slot, output slot
OP_EXTREMES = 5  # period, highest slot, lowest slot
OP_PIVOTS = 6  # highest slot, lowest slot, pivot slot, support slot, resistance slot
OP_PROFILE = 7  # period, bins, highest slot, lowest slot, first of 3 output slots; param: value area
OP_RECURSION = 8  # recursion row, source, source slot, output slot
OP_RSI = 9  # gain slot, loss slot, output slot
OP_SUBTRACT = 10  # minuend slot, subtrahend slot, output slot
OP_MULTI_TIMEFRAME = 11  # coarse index, gain row, loss row, output slot, active, coarse bucket ns
OP_BOOK_IMBALANCE = 12  # output slot
OP_BOOK_SPREAD = 13  # output slot
OP_FIELDS = 8
# Inputs of a recursion row.
SOURCE_CLOSE, SOURCE_GAIN, SOURCE_LOSS, SOURCE_TRUE_RANGE, SOURCE_SLOT = range(5)
_TINY = 5e-324  # smallest subnormal: max(total, _TINY) is total for any positive total and turns 0/0 into 0


# No fastmath (results stay those of the plain formulas, operation for operation). error_model="numpy":
# a division by zero gives inf/NaN as numpy and SQL do, not an exception. _nrt=False: the kernel
# allocates nothing, and without numba's reference counting each array view or array passed to a
# helper stops costing an atomic increment and decrement (a third of a recursion step's time, measured).
# `_nrt` is a private numba option (pinned numba==0.68.1): constructing an engine fails loudly if it goes.
_OPTIONS: dict[str, Any] = {"error_model": "numpy", "_nrt": False}


def _compiled(function: _Function) -> _Function:
    """`numba.njit` with the kernel's options and an on-disk cache, typed as the function it wraps."""
    return cast(_Function, numba.njit(cache=True, **_OPTIONS)(function))


def _inlined(function: _Function) -> _Function:
    """A helper of the kernel, inlined into it by numba (compiled with it, so cached with it)."""
    return cast(_Function, numba.njit(inline="always", **_OPTIONS)(function))


@_inlined
def _maximum(a: float, b: float) -> float:
    """np.maximum for scalars: NaN if either is NaN, `a` on ties (signed zeros as numpy gives them)."""
    return a if (a >= b or math.isnan(a)) else b


@_inlined
def _recursion_output(count: IntArray, value: FloatArray, row: int, i: int, period: int) -> float:
    return value[row, i] if count[row, i] >= period else math.nan


@_inlined
def _recurse(count: IntArray, value: FloatArray, periods: IntArray, wilder: IntArray, row: int, i: int,
             x: float) -> float:
    """Feed `x` (skipped unless finite) to an EMA (alpha = 2/(n+1)) or Wilder mean (alpha = 1/n) seeded
    with the SMA of its first n inputs; returns the value, NaN before n inputs."""
    period = periods[row]
    if math.isfinite(x):
        seen = count[row, i] + 1
        count[row, i] = seen
        current = value[row, i]
        length = float(period)
        if seen <= period:
            current += x
            if seen == period:
                current /= length
        elif wilder[row] != 0:
            current = (current * (length - 1.0) + x) / length
        else:
            current = current + (2.0 / (length + 1.0)) * (x - current)
        value[row, i] = current
    return _recursion_output(count, value, row, i, period)


@_inlined
def _rsi(gain: float, loss: float) -> float:
    # 0/0 (no movement over the window) is an RSI of 0, as in the SQL; NaN stays NaN.
    return gain / _maximum(gain + loss, _TINY) * 100.0


@_inlined
def _feed_coarse(count: IntArray, value: FloatArray, periods: IntArray, wilder: IntArray, coarse_close: FloatArray,
                 coarse: int, gain_row: int, loss_row: int, i: int) -> None:
    """One completed coarse bar into its Wilder gain/loss rows (rows 2m, 2m+1 of `coarse_close`: the coarse
    bar's close, the previous coarse close)."""
    change = coarse_close[2 * coarse, i] - coarse_close[2 * coarse + 1, i]
    _recurse(count, value, periods, wilder, gain_row, i, _maximum(change, 0.0))
    _recurse(count, value, periods, wilder, loss_row, i, _maximum(-change, 0.0))
    coarse_close[2 * coarse + 1, i] = coarse_close[2 * coarse, i]


@_inlined
def _moments(ring: FloatArray, i: int, start: int, end: int, a: int, b: int, c: int, d: int, slots: FloatArray,
             at: int, correlation: int) -> None:
    """Window mean and population deviation of four series (slots at, at + 1 for a; at + 2, at + 3 for b;
    ...) and, when `correlation` >= 0, the correlation of c with d. Each sum runs oldest first, as the
    plain formula; the four are interleaved so that their additions overlap."""
    # Views indexed from 0: numba then knows the indices are not negative and drops its wraparound
    # checks (which cost up to 8x in these loops).
    xa, xb, xc, xd = ring[i, a, start:end + 1], ring[i, b, start:end + 1], ring[i, c, start:end + 1], \
        ring[i, d, start:end + 1]
    count = end + 1 - start
    total_a, total_b, total_c, total_d = xa[0], xb[0], xc[0], xd[0]
    for k in range(1, count):
        total_a += xa[k]
        total_b += xb[k]
        total_c += xc[k]
        total_d += xd[k]
    mean_a, mean_b, mean_c, mean_d = total_a / count, total_b / count, total_c / count, total_d / count
    centred_a, centred_b, centred_c, centred_d = xa[0] - mean_a, xb[0] - mean_b, xc[0] - mean_c, xd[0] - mean_d
    squares_a, squares_b = centred_a * centred_a, centred_b * centred_b
    squares_c, squares_d = centred_c * centred_c, centred_d * centred_d
    products = centred_c * centred_d
    for k in range(1, count):
        centred_a, centred_b, centred_c, centred_d = xa[k] - mean_a, xb[k] - mean_b, xc[k] - mean_c, xd[k] - mean_d
        squares_a += centred_a * centred_a
        squares_b += centred_b * centred_b
        squares_c += centred_c * centred_c
        squares_d += centred_d * centred_d
        products += centred_c * centred_d
    slots[at], slots[at + 1] = mean_a, np.sqrt(squares_a / count)
    slots[at + 2], slots[at + 3] = mean_b, np.sqrt(squares_b / count)
    slots[at + 4], slots[at + 5] = mean_c, np.sqrt(squares_c / count)
    slots[at + 6], slots[at + 7] = mean_d, np.sqrt(squares_d / count)
    if correlation >= 0:
        slots[correlation] = products / np.sqrt(squares_c * squares_d)


@_inlined
def _extremes(ring: FloatArray, i: int, start: int, end: int) -> tuple[float, float]:
    """Highest high and lowest low of the window; NaN if any is NaN, as np.maximum/np.minimum give."""
    high, low = ring[i, HIGH, start:end + 1], ring[i, LOW, start:end + 1]
    highest, lowest = high[0], low[0]
    missing = math.isnan(highest) or math.isnan(lowest)
    for k in range(1, end + 1 - start):
        # Selects rather than branches; NaN is tracked on the side.
        highest = high[k] if high[k] > highest else highest
        lowest = low[k] if low[k] < lowest else lowest
        missing |= math.isnan(high[k]) | math.isnan(low[k])
    if missing:
        for k in range(end + 1 - start):
            if math.isnan(high[k]):
                highest = math.nan
            if math.isnan(low[k]):
                lowest = math.nan
    return highest, lowest


@_inlined
def _profile(ring: FloatArray, i: int, start: int, end: int, bins: int, value_area: float, highest: float,
             lowest: float, slots: FloatArray, at: int, filled: FloatArray, order: IntArray) -> None:
    """Volume by typical-price bin over the window: point of control, value area low and high into
    slots[at:at + 3]; NaN unless the window spans a range and traded. `order` holds `bins` + window
    integers of scratch."""
    high, low, close = ring[i, HIGH, start:end + 1], ring[i, LOW, start:end + 1], ring[i, CLOSE, start:end + 1]
    volume = ring[i, VOLUME, start:end + 1]
    count = end + 1 - start
    span = highest - lowest
    if not span > 0.0:
        slots[at] = slots[at + 1] = slots[at + 2] = math.nan
        return
    # Bin of every bar first (a loop numba vectorises), then the sums in time order.
    bars = order[bins:]
    for k in range(count):
        position = ((high[k] + low[k] + close[k]) / 3.0 - lowest) / span * bins
        # Clamped to the bins, then truncated: the floor on [0, bins - 1]; NaN to bin 0 as the reference.
        bars[k] = int(min(max(position, 0.0), bins - 1.0)) if not math.isnan(position) else 0
    for b in range(bins):
        filled[b] = 0.0
    # The total and the bins in one pass: the total's additions overlap the bins' loads and stores.
    total = 0.0
    for k in range(count):
        amount = volume[k]
        total = amount if k == 0 else total + amount
        if math.isinf(amount):  # only +inf matters (a NaN or -inf fails the total): np.nan_to_num's clamp
            amount = 1.7976931348623157e308
        filled[bars[k]] += amount
    if not total > 0.0:
        slots[at] = slots[at + 1] = slots[at + 2] = math.nan
        return
    # Fullest first, the lowest bin on ties (a stable insertion sort of at most a few dozen bins).
    for b in range(bins):
        amount, j = filled[b], b
        while j > 0 and filled[order[j - 1]] < amount:
            order[j] = order[j - 1]
            j -= 1
        order[j] = b
    # Bins are taken while the volume of those before them is short of the value area.
    limit = total * value_area
    covered = filled[order[0]]
    first = last = order[0]
    for rank in range(1, bins):
        if covered < limit:
            first, last = min(first, order[rank]), max(last, order[rank])
        covered += filled[order[rank]]
    width = span / bins
    slots[at] = (order[0] + 0.5) * width + lowest
    slots[at + 1] = float(first) * width + lowest
    slots[at + 2] = (last + 1.0) * width + lowest


@_compiled
def step(stamps: IntArray, inputs: FloatArray, timeframe_ns: int, ring: FloatArray, head: IntArray,
         bar_count: IntArray, last_bar_at: IntArray, reference: IntArray, count: IntArray, value: FloatArray,
         periods: IntArray, wilder: IntArray, coarse_bucket: IntArray, coarse_pending: IntArray,
         coarse_close: FloatArray, ops: IntArray, op_params: FloatArray, feature_slot: IntArray, ready: IntArray,
         slots: FloatArray, log_returns: FloatArray, out: FloatArray, filled: FloatArray,
         order: IntArray) -> int:
    """Advance every instrument with a finite close in `inputs` by one bar and write the features into
    `out` (instruments x features). Returns 1, changing nothing, when a stamp does not increase."""
    size = stamps.shape[0]
    width = ring.shape[2] // 2
    for i in range(size):
        if math.isfinite(inputs[INPUT_CLOSE, i]) and stamps[i] <= last_bar_at[i]:
            return 1
    # Log returns first: an instrument's reference series reads another instrument's.
    for i in range(size):
        close = inputs[INPUT_CLOSE, i]
        log_returns[i] = np.log(close / ring[i, CLOSE, head[i] + width]) if math.isfinite(close) else math.nan
    features = feature_slot.shape[0]
    for i in range(size):
        close = inputs[INPUT_CLOSE, i]
        if not math.isfinite(close):
            for f in range(features):
                out[i, f] = math.nan
            continue
        high, low, volume = inputs[INPUT_HIGH, i], inputs[INPUT_LOW, i], inputs[INPUT_VOLUME, i]
        previous = ring[i, CLOSE, head[i] + width]
        at = head[i] + 1
        if at == width:
            at = 0
        head[i] = at
        linked = reference[i]
        reference_return = log_returns[linked] if linked >= 0 else math.nan
        for position in (at, at + width):
            ring[i, HIGH, position] = high
            ring[i, LOW, position] = low
            ring[i, CLOSE, position] = close
            ring[i, LOG_RETURN, position] = log_returns[i]
            ring[i, VOLUME, position] = volume
            ring[i, REFERENCE, position] = reference_return
        bar_count[i] += 1
        last_bar_at[i] = stamps[i]
        change = close - previous
        gain, loss = _maximum(change, 0.0), _maximum(-change, 0.0)
        true_range = _maximum(high - low, _maximum(abs(high - previous), abs(previous - low)))
        end = at + width  # the newest value; a window of n is [end - n + 1, end]
        for op in range(ops.shape[0]):
            kind = ops[op, 0]
            if kind == OP_RETURN:
                slots[ops[op, 1]] = close / ring[i, CLOSE, end - ops[op, 2]] - 1.0
            elif kind == OP_LOG_RETURN:
                slots[ops[op, 1]] = np.log(close / ring[i, CLOSE, end - ops[op, 2]])
            elif kind == OP_MOMENTS:
                _moments(ring, i, end - ops[op, 1] + 1, end, ops[op, 2], ops[op, 3], ops[op, 4], ops[op, 5],
                         slots, ops[op, 6], ops[op, 7])
            elif kind == OP_BOLLINGER:
                mean, deviation, band = slots[ops[op, 1]], slots[ops[op, 2]], op_params[op]
                upper = mean + band * deviation
                lower = mean + (-band) * deviation
                slots[ops[op, 3]] = upper
                slots[ops[op, 4]] = lower
                percent = (close - lower) / (upper - lower)
                slots[ops[op, 5]] = math.nan if math.isinf(percent) else percent  # zero width reads as NULL
            elif kind == OP_VOLUME_Z:
                score = (volume - slots[ops[op, 1]]) / slots[ops[op, 2]]
                slots[ops[op, 3]] = math.nan if math.isinf(score) else score
            elif kind == OP_EXTREMES:
                slots[ops[op, 2]], slots[ops[op, 3]] = _extremes(ring, i, end - ops[op, 1] + 1, end)
            elif kind == OP_PIVOTS:
                highest, lowest = slots[ops[op, 1]], slots[ops[op, 2]]
                pivot = (highest + lowest + close) / 3.0
                slots[ops[op, 3]] = pivot
                slots[ops[op, 4]] = 2.0 * pivot - highest
                slots[ops[op, 5]] = 2.0 * pivot - lowest
            elif kind == OP_PROFILE:
                _profile(ring, i, end - ops[op, 1] + 1, end, ops[op, 2], op_params[op], slots[ops[op, 3]],
                         slots[ops[op, 4]], slots, ops[op, 5], filled, order)
            elif kind == OP_RECURSION:
                source = ops[op, 2]
                if source == SOURCE_CLOSE:
                    x = close
                elif source == SOURCE_GAIN:
                    x = gain
                elif source == SOURCE_LOSS:
                    x = loss
                elif source == SOURCE_TRUE_RANGE:
                    x = true_range
                else:
                    x = slots[ops[op, 3]]
                slots[ops[op, 4]] = _recurse(count, value, periods, wilder, ops[op, 1], i, x)
            elif kind == OP_RSI:
                slots[ops[op, 3]] = _rsi(slots[ops[op, 1]], slots[ops[op, 2]])
            elif kind == OP_SUBTRACT:
                slots[ops[op, 3]] = slots[ops[op, 1]] - slots[ops[op, 2]]
            elif kind == OP_MULTI_TIMEFRAME:
                if ops[op, 5] == 0:  # the row timeframe is coarser than the feature's
                    slots[ops[op, 4]] = math.nan
                    continue
                coarse, gain_row, loss_row, bucket_ns = ops[op, 1], ops[op, 2], ops[op, 3], ops[op, 6]
                # A coarse bar is complete once a row closes at or after its end, or once a row of a
                # later coarse bucket arrives (the as-of rule of the dbt model).
                stamp = stamps[i]
                bucket = stamp - stamp % bucket_ns
                if coarse_pending[coarse, i] != 0 and bucket != coarse_bucket[coarse, i]:
                    _feed_coarse(count, value, periods, wilder, coarse_close, coarse, gain_row, loss_row, i)
                coarse_bucket[coarse, i] = bucket
                coarse_close[2 * coarse, i] = close
                coarse_pending[coarse, i] = 1
                if stamp + timeframe_ns >= bucket + bucket_ns:
                    _feed_coarse(count, value, periods, wilder, coarse_close, coarse, gain_row, loss_row, i)
                    coarse_pending[coarse, i] = 0
                slots[ops[op, 4]] = _rsi(_recursion_output(count, value, gain_row, i, periods[gain_row]),
                                         _recursion_output(count, value, loss_row, i, periods[loss_row]))
            elif kind == OP_BOOK_IMBALANCE:
                bid_size, ask_size = inputs[INPUT_BID_SIZE, i], inputs[INPUT_ASK_SIZE, i]
                slots[ops[op, 1]] = (bid_size - ask_size) / (bid_size + ask_size)
            elif kind == OP_BOOK_SPREAD:
                bid, ask = inputs[INPUT_BID, i], inputs[INPUT_ASK, i]
                slots[ops[op, 1]] = (ask - bid) / ((ask + bid) / 2.0)
        seen = bar_count[i]
        for f in range(features):
            out[i, f] = slots[feature_slot[f]] if seen >= ready[f] else math.nan
    return 0


def signatures() -> int:
    """How many signatures the step kernel has compiled in this process (one when types are consistent)."""
    return len(cast(Any, step).signatures)
