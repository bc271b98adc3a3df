"""The online feature engine: stepped once per bar close over the cross-section of instruments.

State is a handful of numpy arrays per indicator (shape: instruments, or instruments x window), so a
step costs the same whatever the history length. Instruments without a bar in a step (NaN close) keep
their state untouched: each instrument's series is its own bars, exactly as in the dbt `features` model,
which groups rows by (instrument_id, timeframe) and orders them by bar_at.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tradeloom.errors import ConfigError, InvariantViolation
from tradeloom.features.spec import DEFAULT_SPEC, TIMEFRAME_SECONDS, Feature, FeatureSpec

FloatArray = npt.NDArray[np.float64]
NS = 1_000_000_000


@dataclass(frozen=True)
class BookTop:
    """Latest depth snapshot inside the bar per instrument (NaN where none): best bid/ask and the summed
    sizes over the five levels each side."""

    best_bid: FloatArray
    best_ask: FloatArray
    bid_size: FloatArray
    ask_size: FloatArray


class _Recursive:
    """EMA (alpha = 2/(n+1)) or Wilder mean (alpha = 1/n), seeded with the SMA of the first n inputs:
    the same arithmetic as the `ema` and `wilder_mean` aggregates in sql/010_indicator_aggregates.sql."""

    def __init__(self, size: int, period: int, wilder: bool) -> None:
        self.period = period
        self.wilder = wilder
        self.alpha = 1.0 / period if wilder else 2.0 / (period + 1)
        self.count = np.zeros(size, dtype=np.int64)
        self.value = np.zeros(size)

    def update(self, x: FloatArray, mask: npt.NDArray[np.bool_]) -> None:
        take = mask & np.isfinite(x)
        count = self.count + take
        seeding = take & (count <= self.period)
        running = take & (count > self.period)
        value = self.value
        value[seeding] += x[seeding]
        done = seeding & (count == self.period)
        value[done] /= self.period
        if running.any():
            old = value[running]
            if self.wilder:
                value[running] = (old * (self.period - 1) + x[running]) / self.period
            else:
                value[running] = old + self.alpha * (x[running] - old)
        self.count = count

    def output(self) -> FloatArray:
        return np.where(self.count >= self.period, self.value, np.nan)


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
        self.buffers = {name: np.full((size, self.window), np.nan)
                        for name in ("high", "low", "close", "volume", "log_return", "reference_log_return")}
        self.recursive: dict[str, _Recursive] = {}
        self.reference_index = np.full(size, -1, dtype=np.int64)
        index = {key: position for position, key in enumerate(self.keys)}
        for position, key in enumerate(self.keys):
            reference = spec.reference_for(key.split(":", 1)[0])
            if reference is not None and reference in index:
                self.reference_index[position] = index[reference]
        self.multi_timeframe: dict[str, _MultiTimeframe] = {}
        for feature in spec.features:
            self._register(feature)

    # -- construction ---------------------------------------------------------------------------------

    def _recursive(self, key: str, period: int, wilder: bool) -> None:
        self.recursive.setdefault(key, _Recursive(self.size, period, wilder))

    def _register(self, feature: Feature) -> None:
        if feature.timeframe is not None and feature.timeframe != self.timeframe:
            if feature.indicator != "rsi_wilder":
                raise ConfigError(f"feature {feature.name!r}: only rsi_wilder runs on a coarser timeframe")
            self.multi_timeframe[feature.name] = _MultiTimeframe(
                self.size, TIMEFRAME_SECONDS[feature.timeframe] * NS, feature.int_param("period"),
                active=TIMEFRAME_SECONDS[self.timeframe] <= TIMEFRAME_SECONDS[feature.timeframe],
            )
            return
        kind = feature.indicator
        if kind == "ema":
            self._recursive(f"ema_{feature.int_param('period')}", feature.int_param("period"), wilder=False)
        elif kind == "rsi_wilder":
            period = feature.int_param("period")
            self._recursive(f"gain_{period}", period, wilder=True)
            self._recursive(f"loss_{period}", period, wilder=True)
        elif kind == "atr_wilder":
            self._recursive(f"tr_{feature.int_param('period')}", feature.int_param("period"), wilder=True)
        elif kind == "macd":
            fast, slow, signal = (feature.int_param(key) for key in ("fast", "slow", "signal"))
            self._recursive(f"ema_{fast}", fast, wilder=False)
            self._recursive(f"ema_{slow}", slow, wilder=False)
            self._recursive(f"macd_signal_{fast}_{slow}_{signal}", signal, wilder=False)

    # -- stepping -------------------------------------------------------------------------------------

    def step(
        self, bar_at_ns: int | npt.NDArray[np.int64], open_: FloatArray, high: FloatArray, low: FloatArray,
        close: FloatArray, volume: FloatArray, book: BookTop | None = None,
    ) -> FloatArray:
        """Advance by one closed bar per instrument (NaN close = no bar) and return the features as an
        array (instruments x features) in `spec.names` order; rows without a bar are NaN."""
        has_bar = np.isfinite(close)
        stamps = np.broadcast_to(np.asarray(bar_at_ns, dtype=np.int64), (self.size,))
        if np.any(stamps[has_bar] <= self.last_bar_at[has_bar]):
            raise InvariantViolation(
                f"bar_at must increase per instrument; got {stamps[has_bar].tolist()} after "
                f"{self.last_bar_at[has_bar].tolist()}"
            )
        self.last_bar_at = np.where(has_bar, stamps, self.last_bar_at)
        previous_close = self.buffers["close"][:, -1].copy()
        log_return = np.log(close / previous_close)
        reference_log_return = np.full(self.size, np.nan)
        linked = self.reference_index >= 0
        reference_log_return[linked] = log_return[self.reference_index[linked]]
        for name, value in (("high", high), ("low", low), ("close", close), ("volume", volume),
                            ("log_return", log_return), ("reference_log_return", reference_log_return)):
            buffer = self.buffers[name]
            if has_bar.all():
                buffer[:, :-1] = buffer[:, 1:]
                buffer[:, -1] = value
            else:
                shifted = np.roll(buffer[has_bar], -1, axis=1)
                shifted[:, -1] = value[has_bar]
                buffer[has_bar] = shifted
        self.bar_count += has_bar
        true_range = np.maximum(high - low, np.maximum(np.abs(high - previous_close), np.abs(low - previous_close)))
        change = close - previous_close
        inputs = {"close": close, "true_range": true_range, "gain": np.maximum(change, 0.0),
                  "loss": np.maximum(-change, 0.0)}
        for key, state in self.recursive.items():
            if key.startswith("macd_signal_"):
                continue
            source = key.split("_", 1)[0]
            state.update(inputs["close" if source == "ema" else "true_range" if source == "tr" else source],
                         has_bar)
        for key, state in self.recursive.items():
            if key.startswith("macd_signal_"):
                _, _, fast, slow, _ = key.split("_")
                line = self.recursive[f"ema_{fast}"].output() - self.recursive[f"ema_{slow}"].output()
                state.update(line, has_bar)
        for mtf in self.multi_timeframe.values():
            mtf.update(stamps, close, has_bar, self.timeframe_ns)
        out = np.empty((self.size, len(self.spec.features)))
        self._profiles: dict[tuple[int, int, float], dict[str, FloatArray]] = {}
        self._stats: dict[tuple[str, int], tuple[FloatArray, FloatArray]] = {}
        with np.errstate(divide="ignore", invalid="ignore"):
            for column, feature in enumerate(self.spec.features):
                out[:, column] = self._feature(feature, close, volume, book)
        out[~has_bar] = np.nan
        return out

    def _mean_deviation(self, name: str, period: int) -> tuple[FloatArray, FloatArray]:
        """Mean and population deviation of the last `period` values (two-pass), cached per step."""
        key = (name, period)
        if key not in self._stats:
            window = self._window(name, period)
            middle = window.mean(axis=1)
            self._stats[key] = middle, np.sqrt(((window - middle[:, None]) ** 2).mean(axis=1))
        return self._stats[key]

    def _window(self, name: str, length: int) -> FloatArray:
        return self.buffers[name][:, self.window - length:]

    def _ready(self, bars: int) -> npt.NDArray[np.bool_]:
        return self.bar_count >= bars

    def _feature(self, feature: Feature, close: FloatArray, volume: FloatArray, book: BookTop | None) -> FloatArray:
        kind = feature.indicator
        nan = np.full(self.size, np.nan)
        if feature.name in self.multi_timeframe:
            return self.multi_timeframe[feature.name].output()
        if kind in ("return", "log_return"):
            lag = feature.int_param("lag")
            ratio = close / self._window("close", lag + 1)[:, 0]
            value = ratio - 1.0 if kind == "return" else np.log(ratio)
            return np.where(self._ready(lag + 1), value, np.nan)
        if kind == "sma":
            period = feature.int_param("period")
            return np.where(self._ready(period), self._mean_deviation("close", period)[0], np.nan)
        if kind == "ema":
            return self.recursive[f"ema_{feature.int_param('period')}"].output()
        if kind == "rsi_wilder":
            period = feature.int_param("period")
            gain = self.recursive[f"gain_{period}"].output()
            loss = self.recursive[f"loss_{period}"].output()
            total = gain + loss
            return np.where(total != 0.0, 100.0 * (gain / total), np.where(np.isfinite(total), 0.0, np.nan))
        if kind == "atr_wilder":
            return self.recursive[f"tr_{feature.int_param('period')}"].output()
        if kind == "macd":
            fast, slow, signal = (feature.int_param(key) for key in ("fast", "slow", "signal"))
            line = self.recursive[f"ema_{fast}"].output() - self.recursive[f"ema_{slow}"].output()
            signal_line = self.recursive[f"macd_signal_{fast}_{slow}_{signal}"].output()
            output = str(feature.param("output"))
            return line if output == "line" else signal_line if output == "signal" else line - signal_line
        if kind == "bollinger":
            period = feature.int_param("period")
            middle, deviation = self._mean_deviation("close", period)
            upper = middle + feature.float_param("width") * deviation
            lower = middle - feature.float_param("width") * deviation
            output = str(feature.param("output"))
            value = upper if output == "upper" else lower if output == "lower" else (close - lower) / (upper - lower)
            return np.where(self._ready(period) & np.isfinite(value), value, np.nan)
        if kind in ("realised_vol", "volume_zscore"):
            period = feature.int_param("period")
            middle, deviation = self._mean_deviation("log_return" if kind == "realised_vol" else "volume", period)
            if kind == "realised_vol":
                return np.where(self._ready(period + 1), deviation, np.nan)
            value = (volume - middle) / np.where(deviation == 0.0, np.nan, deviation)
            return np.where(self._ready(period), value, np.nan)
        if kind == "pivots":
            period = feature.int_param("period")
            highest = self._window("high", period).max(axis=1)
            lowest = self._window("low", period).min(axis=1)
            pivot = (highest + lowest + close) / 3.0
            output = str(feature.param("output"))
            value = pivot if output == "pivot" else 2.0 * pivot - lowest if output == "resistance" \
                else 2.0 * pivot - highest
            return np.where(self._ready(period), value, np.nan)
        if kind == "correlation":
            period = feature.int_param("period")
            x = self._window("log_return", period)
            y = self._window("reference_log_return", period)
            dx = x - x.mean(axis=1)[:, None]
            dy = y - y.mean(axis=1)[:, None]
            sxx = (dx * dx).sum(axis=1)
            syy = (dy * dy).sum(axis=1)
            value = (dx * dy).sum(axis=1) / np.sqrt(sxx * syy)
            complete = np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1) & (sxx > 0) & (syy > 0)
            return np.where(complete, value, np.nan)
        if kind == "volume_profile":
            return self._volume_profile(feature)
        if kind == "book_imbalance":
            if book is None:
                return nan
            return (book.bid_size - book.ask_size) / (book.bid_size + book.ask_size)
        if kind == "book_spread":
            if book is None:
                return nan
            return (book.best_ask - book.best_bid) / ((book.best_ask + book.best_bid) / 2.0)
        raise ConfigError(f"feature {feature.name!r}: indicator {kind!r} has no online implementation")

    def _volume_profile(self, feature: Feature) -> FloatArray:
        period, bins = feature.int_param("period"), feature.int_param("bins")
        key = (period, bins, feature.float_param("value_area"))
        if key not in self._profiles:
            self._profiles[key] = volume_profiles(
                self._window("high", period), self._window("low", period), self._window("close", period),
                self._window("volume", period), bins, feature.float_param("value_area"),
            )
        value = self._profiles[key][str(feature.param("output"))]
        return np.where(self._ready(period), value, np.nan)

    # -- state ----------------------------------------------------------------------------------------

    def state(self) -> dict[str, npt.NDArray[np.generic]]:
        """Every array the engine needs to resume, by name (np.savez-friendly)."""
        arrays: dict[str, npt.NDArray[np.generic]] = {
            "bar_count": self.bar_count.copy(), "last_bar_at": self.last_bar_at.copy(),
            "spec_hash": np.array(self.spec.spec_hash()), "keys": np.array(self.keys),
        }
        arrays.update({f"buffer.{name}": buffer.copy() for name, buffer in self.buffers.items()})
        for key, recursive in self.recursive.items():
            arrays[f"recursive.{key}.count"] = recursive.count.copy()
            arrays[f"recursive.{key}.value"] = recursive.value.copy()
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
        for name in self.buffers:
            self.buffers[name] = np.asarray(arrays[f"buffer.{name}"], dtype=np.float64).copy()
        for key, recursive in self.recursive.items():
            recursive.count = np.asarray(arrays[f"recursive.{key}.count"], dtype=np.int64).copy()
            recursive.value = np.asarray(arrays[f"recursive.{key}.value"], dtype=np.float64).copy()
        for key, mtf in self.multi_timeframe.items():
            mtf.load_state({name.split(".", 2)[2]: value for name, value in arrays.items()
                            if name.startswith(f"mtf.{key}.")})


class _MultiTimeframe:
    """Wilder RSI on completed coarser bars: a coarse bar is fed once a row closes at or after its end,
    or once a row from a later coarse bucket arrives (the same as-of rule as the dbt model)."""

    def __init__(self, size: int, bucket_ns: int, period: int, *, active: bool) -> None:
        self.bucket_ns = bucket_ns
        self.active = active
        self.bucket = np.full(size, -1, dtype=np.int64)
        self.bucket_close = np.full(size, np.nan)
        self.pending = np.zeros(size, dtype=bool)
        self.previous_close = np.full(size, np.nan)
        self.gain = _Recursive(size, period, wilder=True)
        self.loss = _Recursive(size, period, wilder=True)

    def _feed(self, mask: npt.NDArray[np.bool_]) -> None:
        change = self.bucket_close - self.previous_close
        self.gain.update(np.maximum(change, 0.0), mask)
        self.loss.update(np.maximum(-change, 0.0), mask)
        self.previous_close = np.where(mask, self.bucket_close, self.previous_close)
        self.pending &= ~mask

    def update(self, stamps: npt.NDArray[np.int64], close: FloatArray, has_bar: npt.NDArray[np.bool_],
               timeframe_ns: int) -> None:
        if not self.active:
            return
        bucket = stamps - np.mod(stamps, self.bucket_ns)
        self._feed(has_bar & self.pending & (bucket != self.bucket))
        self.bucket = np.where(has_bar, bucket, self.bucket)
        self.bucket_close = np.where(has_bar, close, self.bucket_close)
        self.pending |= has_bar
        self._feed(has_bar & (stamps + timeframe_ns >= bucket + self.bucket_ns))

    def output(self) -> FloatArray:
        if not self.active:
            return np.full(self.bucket.shape, np.nan)
        gain, loss = self.gain.output(), self.loss.output()
        total = gain + loss
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(total != 0.0, 100.0 * (gain / total), np.where(np.isfinite(total), 0.0, np.nan))

    def state(self) -> dict[str, npt.NDArray[np.generic]]:
        return {"bucket": self.bucket.copy(), "bucket_close": self.bucket_close.copy(),
                "pending": self.pending.copy(), "previous_close": self.previous_close.copy(),
                "gain.count": self.gain.count.copy(), "gain.value": self.gain.value.copy(),
                "loss.count": self.loss.count.copy(), "loss.value": self.loss.value.copy()}

    def load_state(self, arrays: Mapping[str, npt.NDArray[np.generic]]) -> None:
        self.bucket = np.asarray(arrays["bucket"], dtype=np.int64).copy()
        self.bucket_close = np.asarray(arrays["bucket_close"], dtype=np.float64).copy()
        self.pending = np.asarray(arrays["pending"], dtype=bool).copy()
        self.previous_close = np.asarray(arrays["previous_close"], dtype=np.float64).copy()
        self.gain.count = np.asarray(arrays["gain.count"], dtype=np.int64).copy()
        self.gain.value = np.asarray(arrays["gain.value"], dtype=np.float64).copy()
        self.loss.count = np.asarray(arrays["loss.count"], dtype=np.int64).copy()
        self.loss.value = np.asarray(arrays["loss.value"], dtype=np.float64).copy()


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
