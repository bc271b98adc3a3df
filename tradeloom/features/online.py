"""The online feature engine: stepped once per bar close over the cross-section of instruments.

The feature plan is compiled once at construction: which window statistics each feature needs, grouped
so that one statistic (a window mean/deviation, a max/min, a volume profile, a recursion) is computed
once per step for every feature and instrument using it, with no per-feature dispatch on the hot path.
Windows live in one time-major buffer (series x time x instrument): a step writes one row and the last n
values of a series are one contiguous block, so nothing is shifted per bar. Statistics are recomputed
from the window each step (two-pass mean/deviation, exact max/min, time-ordered bin sums) rather than
kept as running sums, so there is no drift: outputs agree with the straightforward formulas to ~1e-14
(only the association of the window sums differs) and with TA-Lib and the dbt `features` table to 1e-9.

Instruments without a bar in a step (NaN close) keep their state untouched: each instrument's series is
its own bars, exactly as in the dbt `features` model, which groups rows by (instrument_id, timeframe)
and orders them by bar_at.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from tradeloom.errors import ConfigError, InvariantViolation
from tradeloom.features.spec import DEFAULT_SPEC, TIMEFRAME_SECONDS, Feature, FeatureSpec

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
NS = 1_000_000_000
_SLACK = 512  # steps between two moves of the buffer's window to its front

# Series kept in the window buffer (first axis). The first six are the engine's state; TYPICAL and
# VOLUME_FILLED are derived per bar for the volume profile and rebuilt from the others on load_state.
SERIES = ("close", "log_return", "volume", "reference_log_return", "high", "low")
CLOSE, LOG_RETURN, VOLUME, REFERENCE, HIGH, LOW, TYPICAL, VOLUME_FILLED = range(8)


@dataclass(frozen=True)
class BookTop:
    """Latest depth snapshot inside the bar per instrument (NaN where none): best bid/ask and the summed
    sizes over the five levels each side."""

    best_bid: FloatArray
    best_ask: FloatArray
    bid_size: FloatArray
    ask_size: FloatArray


class _Bank:
    """Recursions of one kind, one row each: EMA (alpha = 2/(n+1)) or Wilder mean (alpha = 1/n), seeded
    with the SMA of the first n inputs - the same arithmetic as the `ema` and `wilder_mean` aggregates in
    sql/010_indicator_aggregates.sql. Once every row is past its seed and every instrument has a finite
    input, a step is three in-place array operations for the whole bank."""

    def __init__(self, size: int, periods: Sequence[int], *, wilder: bool) -> None:
        self.wilder = wilder
        self.periods = np.array(list(periods), dtype=np.int64).reshape(-1, 1)
        self.period_f = self.periods.astype(np.float64)
        self.keep = self.period_f - 1.0
        self.alpha = 2.0 / (self.period_f + 1.0)
        self.count = np.zeros((len(periods), size), dtype=np.int64)
        self.value = np.zeros((len(periods), size))
        self.warm = False
        self.refresh()

    def refresh(self) -> None:
        self.warm = bool((self.count >= self.periods).all())

    def update(self, x: FloatArray, mask: BoolArray, all_bars: bool, finite: bool) -> None:
        value = self.value
        if all_bars and self.warm and (finite or math.isfinite(float(x.sum()))):
            if self.wilder:
                value *= self.keep
                value += x
                value /= self.period_f
            else:
                step = x - value
                step *= self.alpha
                value += step
            self.count += 1
            return
        shape = value.shape
        xs = np.broadcast_to(x, shape)
        take = mask[None, :] & np.isfinite(xs)
        count = self.count + take
        seeding = take & (count <= self.periods)
        running = take & (count > self.periods)
        value[seeding] += xs[seeding]
        done = seeding & (count == self.periods)
        value[done] /= np.broadcast_to(self.period_f, shape)[done]
        if running.any():
            old = value[running]
            if self.wilder:
                value[running] = (old * np.broadcast_to(self.keep, shape)[running] + xs[running]) \
                    / np.broadcast_to(self.period_f, shape)[running]
            else:
                value[running] = old + np.broadcast_to(self.alpha, shape)[running] * (xs[running] - old)
        self.count = count
        self.refresh()

    def output(self) -> FloatArray:
        if self.warm:
            return self.value
        return np.where(self.count >= self.periods, self.value, np.nan)


def _rsi(gain: FloatArray, loss: FloatArray, out: FloatArray) -> None:
    total = gain + loss
    np.divide(gain, total, out=out)  # callers silence 0/0: it is handled below
    out *= 100.0
    # 0/0 (no movement over the window) is an RSI of 0, as in the SQL; NaN totals stay NaN.
    out[total == 0.0] = 0.0


@dataclass
class _Stats:
    """Mean and population deviation (two-pass) of the last `period` values of `series`, plus the
    centred windows the correlation needs - one computation for every feature using that window."""

    period: int
    series: list[int]
    sma: list[tuple[int, int]] = field(default_factory=list)  # (work row, series position)
    bollinger: list[tuple[int, float, str]] = field(default_factory=list)  # (work row, width, output)
    realised_vol: list[int] = field(default_factory=list)
    volume_z: list[int] = field(default_factory=list)
    correlation: list[int] = field(default_factory=list)

    def position(self, series: int) -> int:
        if series not in self.series:
            self.series.append(series)
            self.series.sort()
        return self.series.index(series)


@dataclass
class _Profile:
    period: int
    bins: int
    value_area: float
    rows: list[tuple[int, str]] = field(default_factory=list)
    offsets: FloatArray = field(default_factory=lambda: np.zeros(0))  # instrument * bins
    row_starts: IntArray = field(default_factory=lambda: np.zeros((0, 1), dtype=np.int64))
    bin_range: IntArray = field(default_factory=lambda: np.zeros((1, 0), dtype=np.int64))

    def prepare(self, size: int) -> None:
        self.offsets = np.arange(size, dtype=np.float64) * self.bins
        self.row_starts = (np.arange(size, dtype=np.int64) * self.bins)[:, None]
        self.bin_range = np.arange(self.bins, dtype=np.int64)[None, :]


class OnlineFeatureEngine:
    """Features of `spec` for `keys` (instrument keys, 'EXCHANGE:SYMBOL') on `timeframe` bars."""

    def __init__(self, keys: Sequence[str], timeframe: str, spec: FeatureSpec = DEFAULT_SPEC) -> None:
        if timeframe not in TIMEFRAME_SECONDS:
            raise ConfigError(f"timeframe={timeframe!r} unknown; expected one of {sorted(TIMEFRAME_SECONDS)}")
        self.spec = spec
        self.keys = tuple(keys)
        self.timeframe = timeframe
        self.timeframe_ns = TIMEFRAME_SECONDS[timeframe] * NS
        size = len(self.keys)
        self.size = size
        windows = [1]
        for feature in spec.features:
            for key in ("lag", "period", "slow"):
                if any(name == key for name, _ in feature.params):
                    windows.append(feature.int_param(key) + 1)
        self.window = max(windows)
        self.bar_count = np.zeros(size, dtype=np.int64)
        self.last_bar_at = np.full(size, np.iinfo(np.int64).min, dtype=np.int64)
        self._last_max = int(np.iinfo(np.int64).min)
        # Time-major (series, time, instrument): a step writes one contiguous row and the last n values
        # of a series are one contiguous block. The buffer holds `_SLACK` steps beyond the window; when
        # it is full the last `window` rows move to the front (one copy every `_SLACK` steps).
        self._rows = self.window + _SLACK
        self._buffer = np.full((8, self._rows, size), np.nan)
        self._position = self.window - 1
        self.reference_index = np.zeros(size, dtype=np.int64)
        index = {key: position for position, key in enumerate(self.keys)}
        unlinked = []
        for position, key in enumerate(self.keys):
            reference = spec.reference_for(key.split(":", 1)[0])
            if reference is not None and reference in index:
                self.reference_index[position] = index[reference]
            else:
                unlinked.append(position)
        self._unlinked = np.array(unlinked, dtype=np.int64) if unlinked else None
        self._compile()

    # -- construction: the feature plan ---------------------------------------------------------------

    def _compile(self) -> None:
        spec, size = self.spec, self.size
        features = spec.features
        mtf_features = [f for f in features if f.timeframe is not None and f.timeframe != self.timeframe]
        for feature in mtf_features:
            if feature.indicator != "rsi_wilder":
                raise ConfigError(f"feature {feature.name!r}: only rsi_wilder runs on a coarser timeframe")
        own = [f for f in features if f not in mtf_features]
        unknown = [f for f in own if f.indicator not in _ONLINE]
        if unknown:
            raise ConfigError(f"feature {unknown[0].name!r}: indicator {unknown[0].indicator!r} has no online "
                              "implementation")
        # Work rows, grouped so each group writes a contiguous block: returns, log returns, then the
        # columns whose infinities read as NULL (Bollinger, volume z-score), then the rest.
        kinds = ("return", "log_return", "bollinger", "volume_zscore")
        ordered = [f for kind in kinds for f in own if f.indicator == kind]
        ordered += [f for f in own if f.indicator not in kinds] + mtf_features
        row = {f.name: position for position, f in enumerate(ordered)}
        self._work = np.full((len(ordered), size), np.nan)
        self._order = np.array([row[name] for name in spec.names], dtype=np.int64)
        self._permuted = bool((self._order != np.arange(len(self._order))).any())
        self._everyone = np.ones(size, dtype=bool)
        ready = np.zeros(len(spec.names), dtype=np.int64)
        column = {name: position for position, name in enumerate(spec.names)}

        def needs(feature: Feature, bars: int) -> None:
            ready[column[feature.name]] = bars

        # Returns: one ratio per distinct lag.
        returns = [f for f in own if f.indicator in ("return", "log_return")]
        self._lags = sorted({f.int_param("lag") for f in returns})
        lag_position = {lag: position for position, lag in enumerate(self._lags)}
        simple = [f for f in returns if f.indicator == "return"]
        logs = [f for f in returns if f.indicator == "log_return"]
        self._return_rows = (0, len(simple), len(simple) + len(logs))
        self._lag_rows = np.array([-1 - lag for lag in self._lags], dtype=np.int64)
        self._simple_lags = self._selection([lag_position[f.int_param("lag")] for f in simple])
        self._log_lags = self._selection([lag_position[f.int_param("lag")] for f in logs])
        for feature in returns:
            needs(feature, feature.int_param("lag") + 1)
        self._infinite_rows = (len(returns), len(returns) + sum(f.indicator in ("bollinger", "volume_zscore")
                                                                for f in own))
        # Window statistics per period.
        stats: dict[int, _Stats] = {}
        pivots: dict[int, list[tuple[int, str]]] = {}
        profiles: dict[tuple[int, int, float], _Profile] = {}
        self._ema: list[tuple[int, str]] = []  # (work row, bank key)
        self._rsi: list[tuple[int, int]] = []  # (work row, period)
        self._atr: list[tuple[int, str]] = []
        self._macd: list[tuple[int, tuple[int, int, int], str]] = []
        self._book: list[tuple[int, str]] = []
        ema_periods: list[int] = []
        wilder_rows: list[tuple[str, int]] = []  # (source, period)
        signal_keys: list[tuple[int, int, int]] = []
        for feature in own:
            kind, at = feature.indicator, row[feature.name]
            period = feature.int_param("period") if any(k == "period" for k, _ in feature.params) else 0
            if kind in ("sma", "bollinger", "realised_vol", "volume_zscore", "correlation"):
                group = stats.setdefault(period, _Stats(period, []))
                if kind == "sma":
                    group.position(CLOSE)
                    group.sma.append((at, CLOSE))
                elif kind == "bollinger":
                    group.position(CLOSE)
                    group.bollinger.append((at, feature.float_param("width"), str(feature.param("output"))))
                elif kind == "realised_vol":
                    group.position(LOG_RETURN)
                    group.realised_vol.append(at)
                elif kind == "volume_zscore":
                    group.position(VOLUME)
                    group.volume_z.append(at)
                else:
                    group.position(LOG_RETURN)
                    group.position(REFERENCE)
                    group.correlation.append(at)
                if kind != "correlation":
                    needs(feature, period + 1 if kind == "realised_vol" else period)
            elif kind == "pivots":
                pivots.setdefault(period, []).append((at, str(feature.param("output"))))
                needs(feature, period)
            elif kind == "volume_profile":
                key = (period, feature.int_param("bins"), feature.float_param("value_area"))
                profiles.setdefault(key, _Profile(*key)).rows.append((at, str(feature.param("output"))))
                needs(feature, period)
            elif kind == "ema":
                ema_periods.append(period)
                self._ema.append((at, f"ema_{period}"))
            elif kind == "rsi_wilder":
                wilder_rows += [("gain", period), ("loss", period)]
                self._rsi.append((at, period))
            elif kind == "atr_wilder":
                wilder_rows.append(("true_range", period))
                self._atr.append((at, f"tr_{period}"))
            elif kind == "macd":
                fast, slow, signal = (feature.int_param(key) for key in ("fast", "slow", "signal"))
                ema_periods += [fast, slow]
                signal_keys.append((fast, slow, signal))
                self._macd.append((at, (fast, slow, signal), str(feature.param("output"))))
            elif kind in ("book_imbalance", "book_spread"):
                self._book.append((at, kind))
        self._stats = sorted(stats.values(), key=lambda group: group.period)
        self._pivots = sorted(pivots.items())
        self._profiles = list(profiles.values())
        # Recursions: phase one (EMAs of close, Wilder means of gain/loss/true range), phase two (MACD
        # signal lines, which read the phase-one EMAs of the same step).
        self._ema_periods = sorted(set(ema_periods))
        self._ema_bank = _Bank(size, self._ema_periods, wilder=False)
        wilder_keys: list[tuple[str, int]] = []
        for source, period in wilder_rows:
            if (source, period) not in wilder_keys:
                wilder_keys.append((source, period))
        self._wilder_sources = [source for source, _ in wilder_keys]
        self._wilder_bank = _Bank(size, [period for _, period in wilder_keys], wilder=True)
        self._wilder_input = np.zeros((len(wilder_keys), size))
        self._signal_keys = sorted(set(signal_keys))
        self._signal_bank = _Bank(size, [signal for _, _, signal in self._signal_keys], wilder=False)
        self._signal_input = np.zeros((len(self._signal_keys), size))
        # The state names of the original engine: "ema_12", "gain_14", "tr_14", "macd_signal_12_26_9".
        self._bank_rows: dict[str, tuple[_Bank, int]] = {}
        for position, period in enumerate(self._ema_periods):
            self._bank_rows[f"ema_{period}"] = (self._ema_bank, position)
        for position, (source, period) in enumerate(wilder_keys):
            name = "tr" if source == "true_range" else source
            self._bank_rows[f"{name}_{period}"] = (self._wilder_bank, position)
        for position, (fast, slow, signal) in enumerate(self._signal_keys):
            self._bank_rows[f"macd_signal_{fast}_{slow}_{signal}"] = (self._signal_bank, position)
        self._ema_position = {period: position for position, period in enumerate(self._ema_periods)}
        self.multi_timeframe: dict[str, _MultiTimeframe] = {}
        self._mtf_rows: list[tuple[int, _MultiTimeframe]] = []
        for feature in mtf_features:
            mtf = _MultiTimeframe(
                size, TIMEFRAME_SECONDS[str(feature.timeframe)] * NS, feature.int_param("period"),
                active=TIMEFRAME_SECONDS[self.timeframe] <= TIMEFRAME_SECONDS[str(feature.timeframe)],
            )
            self.multi_timeframe[feature.name] = mtf
            self._mtf_rows.append((row[feature.name], mtf))
        self._ready = ready
        self._ready_max = int(ready.max()) if len(ready) else 0
        self._all_ready = False
        for profile in self._profiles:
            profile.prepare(size)
        # Recursion outputs as bank rows, resolved once.
        rows = self._bank_rows
        self._rsi_rows = [(at, rows[f"gain_{period}"][1], rows[f"loss_{period}"][1]) for at, period in self._rsi]
        self._atr_rows = [(at, rows[key][1]) for at, key in self._atr]
        self._ema_rows = [(at, rows[key][1]) for at, key in self._ema]
        self._macd_rows = [(at, self._ema_position[fast], self._ema_position[slow],
                            self._signal_keys.index((fast, slow, signal)), output)
                           for at, (fast, slow, signal), output in self._macd]
        self._signal_sources = [(self._ema_position[fast], self._ema_position[slow])
                                for fast, slow, _ in self._signal_keys]
        self._stats_index: list[tuple[_Stats, slice | IntArray, dict[int, int]]] = []
        for group in self._stats:
            first = group.series[0]
            contiguous = group.series == list(range(first, first + len(group.series)))
            group_index: slice | IntArray = slice(first, first + len(group.series)) if contiguous \
                else np.array(group.series, dtype=np.int64)
            self._stats_index.append((group, group_index, {s: i for i, s in enumerate(group.series)}))

    @staticmethod
    def _selection(positions: list[int]) -> IntArray | None:
        """Rows to pick, or None when they are all rows in order (no gather needed)."""
        return None if positions == list(range(len(positions))) else np.array(positions, dtype=np.int64)

    # -- stepping -------------------------------------------------------------------------------------

    def step(
        self, bar_at_ns: int | npt.NDArray[np.int64], open_: FloatArray, high: FloatArray, low: FloatArray,
        close: FloatArray, volume: FloatArray, book: BookTop | None = None,
    ) -> FloatArray:
        """Advance by one closed bar per instrument (NaN close = no bar) and return the features as an
        array (instruments x features) in `spec.names` order; rows without a bar are NaN."""
        close = np.asarray(close, dtype=np.float64)
        total = float(np.add.reduce(close))
        all_bars = math.isfinite(total)  # a finite sum: every instrument has a bar
        has_bar = self._everyone if all_bars else np.isfinite(close)
        all_bars = all_bars or bool(has_bar.all())
        stamp: int | None = None
        if isinstance(bar_at_ns, (int, np.integer)) and not isinstance(bar_at_ns, bool):
            stamp = int(bar_at_ns)
        if stamp is not None and all_bars:
            if stamp <= self._last_max and self.size:
                self._stamp_error(np.full(self.size, stamp), has_bar)
            stamps = self.last_bar_at
            stamps.fill(stamp)
            self._last_max = stamp
        else:
            stamps = np.broadcast_to(np.asarray(bar_at_ns, dtype=np.int64), (self.size,)).copy()
            if np.any(stamps[has_bar] <= self.last_bar_at[has_bar]):
                self._stamp_error(stamps, has_bar)
            self.last_bar_at = np.where(has_bar, stamps, self.last_bar_at)
            self._last_max = int(self.last_bar_at.max()) if self.size else self._last_max
        buffer, window = self._buffer, self.window
        position = self._position + 1
        if position == self._rows:
            buffer[:, :window] = buffer[:, position - window:]
            position = window
        self._position = position
        previous_close = buffer[CLOSE, position - 1]
        at = buffer[:, position]
        with np.errstate(divide="ignore", invalid="ignore"):
            log_return = at[LOG_RETURN]
            np.divide(close, previous_close, out=log_return)
            np.log(log_return, out=log_return)
            np.take(log_return, self.reference_index, out=at[REFERENCE])
            if self._unlinked is not None:
                at[REFERENCE][self._unlinked] = np.nan
            at[CLOSE] = close
            at[HIGH] = high
            at[LOW] = low
            at[VOLUME] = volume
            typical = at[TYPICAL]
            np.add(at[HIGH], at[LOW], out=typical)
            typical += close
            typical /= 3.0
            filled = at[VOLUME_FILLED]
            filled[:] = at[VOLUME]
            if not math.isfinite(float(np.add.reduce(filled))):
                np.nan_to_num(filled, copy=False)
            if all_bars:
                self.bar_count += 1
                missing = None
            else:
                missing = ~has_bar
                # Instruments without a bar keep their window: move it one row forward with the rest.
                buffer[:, position - window + 1:position + 1, missing] = buffer[:, position - window:position, missing]
                self.bar_count += has_bar
            work = self._work
            self._recursions(close, at[HIGH], at[LOW], previous_close, has_bar, all_bars, work)
            for row, mtf in self._mtf_rows:
                mtf.update(stamp, stamps, close, has_bar, all_bars, self.timeframe_ns)
                work[row] = mtf.value
            self._window_features(close, at[VOLUME], work)
            for row, kind in self._book:
                if book is None:
                    work[row] = np.nan
                elif kind == "book_imbalance":
                    work[row] = (book.bid_size - book.ask_size) / (book.bid_size + book.ask_size)
                else:
                    work[row] = (book.best_ask - book.best_bid) / ((book.best_ask + book.best_bid) / 2.0)
        out = work.T[:, self._order] if self._permuted else work.T.copy()
        if not self._all_ready:
            self._all_ready = bool(self.bar_count.min(initial=self._ready_max) >= self._ready_max)
            if not self._all_ready:
                out[self.bar_count[:, None] < self._ready[None, :]] = np.nan
        if missing is not None:
            out[missing] = np.nan
        return out

    def _stamp_error(self, stamps: IntArray, has_bar: BoolArray) -> None:
        raise InvariantViolation(
            f"bar_at must increase per instrument; got {stamps[has_bar].tolist()} after "
            f"{self.last_bar_at[has_bar].tolist()}"
        )

    def _recursions(self, close: FloatArray, high: FloatArray, low: FloatArray, previous_close: FloatArray,
                    has_bar: BoolArray, all_bars: bool, work: FloatArray) -> None:
        if self._ema_periods:
            self._ema_bank.update(close, has_bar, all_bars, finite=True)
        if self._wilder_sources:
            change = close - previous_close
            inputs = self._wilder_input
            done: dict[str, int] = {}
            for position, source in enumerate(self._wilder_sources):
                target = inputs[position]
                if source in done:
                    target[:] = inputs[done[source]]
                elif source == "gain":
                    np.maximum(change, 0.0, out=target)
                elif source == "loss":
                    np.negative(change, out=target)
                    np.maximum(target, 0.0, out=target)
                else:
                    np.subtract(high, previous_close, out=target)
                    np.abs(target, out=target)
                    np.maximum(np.abs(low - previous_close), target, out=target)
                    np.maximum(high - low, target, out=target)
                done[source] = position
            self._wilder_bank.update(inputs, has_bar, all_bars, finite=False)
        emas = self._ema_bank.output()
        if self._signal_keys:
            lines = self._signal_input
            for position, (fast, slow) in enumerate(self._signal_sources):
                np.subtract(emas[fast], emas[slow], out=lines[position])
            self._signal_bank.update(lines, has_bar, all_bars, finite=False)
        for row, position in self._ema_rows:
            work[row] = emas[position]
        if self._wilder_sources:
            means = self._wilder_bank.output()
            for row, gain, loss in self._rsi_rows:
                _rsi(means[gain], means[loss], work[row])
            for row, position in self._atr_rows:
                work[row] = means[position]
        if self._macd_rows:
            signals = self._signal_bank.output()
            for row, fast, slow, signal, output in self._macd_rows:
                if output == "line":
                    np.subtract(emas[fast], emas[slow], out=work[row])
                elif output == "signal":
                    work[row] = signals[signal]
                else:
                    np.subtract(emas[fast] - emas[slow], signals[signal], out=work[row])

    def _window_features(self, close: FloatArray, volume: FloatArray, work: FloatArray) -> None:
        buffer, end = self._buffer, self._position + 1
        if self._lags:
            ratio = close / buffer[CLOSE, self._lag_rows + end]
            start, middle, stop = self._return_rows
            if start < middle:
                np.subtract(ratio if self._simple_lags is None else ratio[self._simple_lags], 1.0,
                            out=work[start:middle])
            if middle < stop:
                np.log(ratio if self._log_lags is None else ratio[self._log_lags], out=work[middle:stop])
        add = np.add.reduce
        for group, index, position in self._stats_index:
            period = group.period
            windows = buffer[index, end - period:end]
            mean = add(windows, axis=1)
            mean /= period
            centred = windows - mean[:, None, :]
            squares = centred * centred
            sums = add(squares, axis=1)
            deviation = sums / period
            np.sqrt(deviation, out=deviation)
            for row, series in group.sma:
                work[row] = mean[position[series]]
            if group.bollinger:
                middle_band, width_band = mean[position[CLOSE]], deviation[position[CLOSE]]
                for row, width, output in group.bollinger:
                    spread = width * width_band
                    if output == "upper":
                        np.add(middle_band, spread, out=work[row])
                    elif output == "lower":
                        np.subtract(middle_band, spread, out=work[row])
                    else:
                        lower = middle_band - spread
                        np.divide(close - lower, (middle_band + spread) - lower, out=work[row])
            for row in group.realised_vol:
                work[row] = deviation[position[LOG_RETURN]]
            for row in group.volume_z:
                np.divide(volume - mean[position[VOLUME]], deviation[position[VOLUME]], out=work[row])
            if group.correlation:
                x, y = position[LOG_RETURN], position[REFERENCE]
                covariance = add(centred[x] * centred[y], axis=0)
                value = covariance / np.sqrt(sums[x] * sums[y])
                for row in group.correlation:
                    work[row] = value
        start, stop = self._infinite_rows
        if start < stop:
            block = work[start:stop]
            block[np.isinf(block)] = np.nan  # a zero deviation reads as NULL, as in the SQL
        for period, outputs in self._pivots:
            highest = np.maximum.reduce(buffer[HIGH, end - period:end], axis=0)
            lowest = np.minimum.reduce(buffer[LOW, end - period:end], axis=0)
            pivot = highest + lowest
            pivot += close
            pivot /= 3.0
            for row, output in outputs:
                if output == "pivot":
                    work[row] = pivot
                elif output == "resistance":
                    np.subtract(2.0 * pivot, lowest, out=work[row])
                else:
                    np.subtract(2.0 * pivot, highest, out=work[row])
        for profile in self._profiles:
            self._volume_profile(profile, end, work)

    def _volume_profile(self, profile: _Profile, end: int, work: FloatArray) -> None:
        """`volume_profiles` over the buffer windows. The typical price and the NaN-free volume of each
        bar are kept in the buffer, and one `bincount` over the time-major window sums each bin in
        time order - the same sequential sums as `np.add.at` in the reference."""
        buffer, period, bins, size = self._buffer, profile.period, profile.bins, self.size
        start = end - period
        lowest = np.minimum.reduce(buffer[LOW, start:end], axis=0)
        highest = np.maximum.reduce(buffer[HIGH, start:end], axis=0)
        total = np.add.reduce(buffer[VOLUME, start:end], axis=0)
        span = highest - lowest
        index = buffer[TYPICAL, start:end] - lowest
        index /= span
        index *= bins
        np.floor(index, out=index)
        np.clip(index, 0.0, bins - 1, out=index)
        if not (span > 0.0).all():
            # An incomplete or flat window (0/0): its bars go to bin 0, like the reference; it reads as NULL.
            np.nan_to_num(index, copy=False)
        index += profile.offsets
        filled: FloatArray = np.bincount(index.astype(np.intp).ravel(), buffer[VOLUME_FILLED, start:end].ravel(),
                                         minlength=size * bins).astype(np.float64, copy=False).reshape(size, bins)
        self._value_area(profile, filled, total, lowest, highest, work)

    def _value_area(self, profile: _Profile, filled: FloatArray, total: FloatArray, lowest: FloatArray,
                    highest: FloatArray, work: FloatArray) -> None:
        bins = profile.bins
        span = highest - lowest
        order = np.argsort(-filled, axis=1, kind="stable")
        covered = filled.ravel()[order + profile.row_starts]
        np.cumsum(covered, axis=1, out=covered)
        valid = (highest > lowest) & (total > 0.0)
        total *= profile.value_area
        last_taken = np.argmax(covered >= total[:, None], axis=1)
        taken = profile.bin_range <= last_taken[:, None]
        first = np.where(taken, order, bins).min(axis=1)
        last = np.where(taken, order, -1).max(axis=1)
        width = span / bins
        base = np.where(valid, lowest, np.nan)
        for row, output in profile.rows:
            if output == "poc":
                np.add(base, (order[:, 0] + 0.5) * width, out=work[row])
            elif output == "va_low":
                np.add(base, first * width, out=work[row])
            else:
                np.add(base, (last + 1) * width, out=work[row])

    # -- state ----------------------------------------------------------------------------------------

    def state(self) -> dict[str, npt.NDArray[np.generic]]:
        """Every array the engine needs to resume, by name (np.savez-friendly); buffers oldest first."""
        arrays: dict[str, npt.NDArray[np.generic]] = {
            "bar_count": self.bar_count.copy(), "last_bar_at": self.last_bar_at.copy(),
            "spec_hash": np.array(self.spec.spec_hash()), "keys": np.array(self.keys),
        }
        end = self._position + 1
        for series, name in enumerate(SERIES):
            arrays[f"buffer.{name}"] = self._buffer[series, end - self.window:end].T.copy()
        for key, (bank, position) in self._bank_rows.items():
            arrays[f"recursive.{key}.count"] = bank.count[position].copy()
            arrays[f"recursive.{key}.value"] = bank.value[position].copy()
        for key, mtf in self.multi_timeframe.items():
            arrays.update({f"mtf.{key}.{name}": value for name, value in mtf.state().items()})
        return arrays

    def load_state(self, arrays: Mapping[str, npt.NDArray[np.generic]]) -> None:
        if str(arrays["spec_hash"]) != self.spec.spec_hash():
            raise ConfigError(f"state spec_hash={arrays['spec_hash']!s} does not match the engine's "
                              f"{self.spec.spec_hash()}")
        if tuple(str(key) for key in arrays["keys"]) != self.keys:
            raise ConfigError(f"state keys={list(arrays['keys'])} differ from the engine's {list(self.keys)}")
        self.bar_count = np.asarray(arrays["bar_count"], dtype=np.int64).copy()
        self.last_bar_at = np.asarray(arrays["last_bar_at"], dtype=np.int64).copy()
        self._last_max = int(self.last_bar_at.max()) if self.size else int(np.iinfo(np.int64).min)
        window = self.window
        buffer = np.full((8, self._rows, self.size), np.nan)
        for series, name in enumerate(SERIES):
            buffer[series, :window] = np.asarray(arrays[f"buffer.{name}"], dtype=np.float64).T
        buffer[TYPICAL] = (buffer[HIGH] + buffer[LOW] + buffer[CLOSE]) / 3.0
        buffer[VOLUME_FILLED] = np.nan_to_num(buffer[VOLUME])
        self._buffer, self._position = buffer, window - 1
        for key, (bank, position) in self._bank_rows.items():
            bank.count[position] = np.asarray(arrays[f"recursive.{key}.count"], dtype=np.int64)
            bank.value[position] = np.asarray(arrays[f"recursive.{key}.value"], dtype=np.float64)
        for bank in (self._ema_bank, self._wilder_bank, self._signal_bank):
            bank.refresh()
        for key, mtf in self.multi_timeframe.items():
            mtf.load_state({name.split(".", 2)[2]: value for name, value in arrays.items()
                            if name.startswith(f"mtf.{key}.")})
        self._all_ready = False


class _MultiTimeframe:
    """Wilder RSI on completed coarser bars: a coarse bar is fed once a row closes at or after its end,
    or once a row from a later coarse bucket arrives (the same as-of rule as the dbt model). While every
    instrument shares the bucket (the usual case: one scalar stamp per step) the bookkeeping is scalar."""

    def __init__(self, size: int, bucket_ns: int, period: int, *, active: bool) -> None:
        self.bucket_ns = bucket_ns
        self.active = active
        self.bucket = np.full(size, -1, dtype=np.int64)
        self.bucket_close = np.full(size, np.nan)
        self.pending = np.zeros(size, dtype=bool)
        self.previous_close = np.full(size, np.nan)
        self.bank = _Bank(size, [period, period], wilder=True)  # rows: gain, loss
        self.changes = np.zeros((2, size))
        self.everyone = np.ones(size, dtype=bool)
        self.uniform = False
        self.value = np.full(size, np.nan)
        self.refresh()

    def refresh(self) -> None:
        size = self.bucket.shape[0]
        self.uniform = size > 0 and bool((self.bucket == self.bucket[0]).all()) \
            and bool((self.pending == self.pending[0]).all())
        self.bank.refresh()
        with np.errstate(divide="ignore", invalid="ignore"):
            self._output()

    def _output(self) -> None:
        if not self.active:
            self.value = np.full(self.bucket.shape, np.nan)
            return
        rates = self.bank.output()
        _rsi(rates[0], rates[1], self.value)

    def _feed(self, mask: BoolArray, all_bars: bool) -> None:
        change = self.bucket_close - self.previous_close
        np.maximum(change, 0.0, out=self.changes[0])
        np.maximum(-change, 0.0, out=self.changes[1])
        self.bank.update(self.changes, mask, all_bars, finite=False)
        if all_bars:
            self.previous_close[:] = self.bucket_close
            self.pending.fill(False)
        else:
            self.previous_close = np.where(mask, self.bucket_close, self.previous_close)
            self.pending &= ~mask
        self._output()

    def update(self, stamp: int | None, stamps: IntArray, close: FloatArray, has_bar: BoolArray, all_bars: bool,
               timeframe_ns: int) -> None:
        if not self.active:
            return
        if stamp is not None and all_bars and self.uniform:
            bucket = stamp - stamp % self.bucket_ns
            if self.pending[0] and bucket != self.bucket[0]:
                self._feed(self.everyone, True)
            self.bucket.fill(bucket)
            self.bucket_close[:] = close
            self.pending.fill(True)
            if stamp + timeframe_ns >= bucket + self.bucket_ns:
                self._feed(self.everyone, True)
            return
        buckets = stamps - np.mod(stamps, self.bucket_ns)
        first = has_bar & self.pending & (buckets != self.bucket)
        if first.any():
            self._feed(first, False)
        self.bucket = np.where(has_bar, buckets, self.bucket)
        self.bucket_close = np.where(has_bar, close, self.bucket_close)
        self.pending |= has_bar
        second = has_bar & (stamps + timeframe_ns >= buckets + self.bucket_ns)
        if second.any():
            self._feed(second, False)
        self.refresh()

    def output(self) -> FloatArray:
        return self.value

    def state(self) -> dict[str, npt.NDArray[np.generic]]:
        bank = self.bank
        return {"bucket": self.bucket.copy(), "bucket_close": self.bucket_close.copy(),
                "pending": self.pending.copy(), "previous_close": self.previous_close.copy(),
                "gain.count": bank.count[0].copy(), "gain.value": bank.value[0].copy(),
                "loss.count": bank.count[1].copy(), "loss.value": bank.value[1].copy()}

    def load_state(self, arrays: Mapping[str, npt.NDArray[np.generic]]) -> None:
        self.bucket = np.asarray(arrays["bucket"], dtype=np.int64).copy()
        self.bucket_close = np.asarray(arrays["bucket_close"], dtype=np.float64).copy()
        self.pending = np.asarray(arrays["pending"], dtype=bool).copy()
        self.previous_close = np.asarray(arrays["previous_close"], dtype=np.float64).copy()
        self.bank.count = np.stack([np.asarray(arrays["gain.count"], dtype=np.int64),
                                    np.asarray(arrays["loss.count"], dtype=np.int64)])
        self.bank.value = np.stack([np.asarray(arrays["gain.value"], dtype=np.float64),
                                    np.asarray(arrays["loss.value"], dtype=np.float64)])
        self.refresh()


_ONLINE = frozenset({
    "return", "log_return", "sma", "ema", "rsi_wilder", "macd", "bollinger", "atr_wilder", "realised_vol",
    "volume_zscore", "volume_profile", "pivots", "correlation", "book_imbalance", "book_spread",
})


def volume_profile(high: FloatArray, low: FloatArray, close: FloatArray, volume: FloatArray, bins: int,
                   value_area: float) -> dict[str, float]:
    """Volume by typical-price bin over the window's [lowest low, highest high]: the point of control is
    the centre of the fullest bin (lowest on ties); the value area spans the fullest bins, taken in
    order of volume (then price), until they hold `value_area` of the volume. Mirrors
    `volume_profile()` in sql/011_volume_profile.sql operation for operation."""
    lowest, highest = float(np.min(low)), float(np.max(high))
    total = 0.0
    for amount in volume:
        total += float(amount)
    if not highest > lowest or not total > 0.0:
        return {"poc": math.nan, "va_low": math.nan, "va_high": math.nan}
    width = (highest - lowest) / bins
    filled = [0.0] * bins
    for h, lo, c, amount in zip(high, low, close, volume, strict=True):
        typical = (float(h) + float(lo) + float(c)) / 3.0
        index = max(0, min(math.floor((typical - lowest) / (highest - lowest) * bins), bins - 1))
        filled[index] += float(amount)
    order = sorted(range(bins), key=lambda index: (-filled[index], index))
    poc = order[0]
    covered, first, last = 0.0, poc, poc
    for index in order:
        covered += filled[index]
        first, last = min(first, index), max(last, index)
        if covered >= value_area * total:
            break
    return {"poc": lowest + (poc + 0.5) * width, "va_low": lowest + first * width,
            "va_high": lowest + (last + 1) * width}


def volume_profiles(high: FloatArray, low: FloatArray, close: FloatArray, volume: FloatArray, bins: int,
                    value_area: float) -> dict[str, FloatArray]:
    """`volume_profile` for every instrument at once (rows of the window arrays)."""
    lowest, highest = low.min(axis=1), high.max(axis=1)
    total = volume.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        typical = (high + low + close) / 3.0
        span = (highest - lowest)[:, None]
        index = np.clip(np.floor((typical - lowest[:, None]) / span * bins), 0, bins - 1)
    valid = (highest > lowest) & (total > 0.0)
    index = np.where(np.isfinite(index), index, 0).astype(np.int64)
    filled = np.zeros((high.shape[0], bins))
    rows = np.repeat(np.arange(high.shape[0]), high.shape[1])
    np.add.at(filled, (rows, index.ravel()), np.nan_to_num(volume).ravel())
    order = np.argsort(-filled, axis=1, kind="stable")
    covered = np.cumsum(np.take_along_axis(filled, order, axis=1), axis=1)
    last_taken = np.argmax(covered >= (value_area * total)[:, None], axis=1)
    taken = np.arange(bins)[None, :] <= last_taken[:, None]
    first = np.where(taken, order, bins).min(axis=1)
    last = np.where(taken, order, -1).max(axis=1)
    width = (highest - lowest) / bins
    nan = np.full(lowest.shape, np.nan)
    return {"poc": np.where(valid, lowest + (order[:, 0] + 0.5) * width, nan),
            "va_low": np.where(valid, lowest + first * width, nan),
            "va_high": np.where(valid, lowest + (last + 1) * width, nan)}


def replay(engine: OnlineFeatureEngine, bar_at_ns: npt.NDArray[np.int64], opens: FloatArray, highs: FloatArray,
           lows: FloatArray, closes: FloatArray, volumes: FloatArray) -> FloatArray:
    """Step the engine through aligned (time x instrument) arrays; returns (time, instrument, feature)."""
    out = np.empty((len(bar_at_ns), engine.size, len(engine.spec.features)))
    for row, stamp in enumerate(bar_at_ns):
        out[row] = engine.step(int(stamp), opens[row], highs[row], lows[row], closes[row], volumes[row])
    return out


def feature_names(spec: FeatureSpec = DEFAULT_SPEC) -> tuple[str, ...]:
    return spec.names


__all__ = ["DEFAULT_SPEC", "BookTop", "OnlineFeatureEngine", "feature_names", "replay", "volume_profile",
           "volume_profiles"]
