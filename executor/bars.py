"""Ticks -> one-minute bars, with the bad-data and late-tick rules.

Rules (documented for operators):
- A tick is rejected (and counted by reason) when its price is NaN, zero or negative, its exchange time is
  more than `future_tolerance_s` ahead of the local clock, its book is crossed (best bid >= best ask), or it
  repeats the previous tick of the instrument exactly (duplicate).
- A bar for minute M closes when the clock passes M+60s+grace. A tick stamped inside a minute that has
  already closed is *late*: it is dropped and counted (a closed bar is never rewritten, so the engine
  never sees history change under it). A tick older than the newest tick of its instrument but inside
  the still-open minute is applied to volume only (out of order: it does not move open/close).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tradeloom.broker import Tick

NS = 1_000_000_000
MINUTE_NS = 60 * NS


@dataclass
class _Building:
    minute_ns: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    last_exchange_ns: int


@dataclass(frozen=True)
class ClosedBars:
    bar_at_ns: int
    open: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    close: npt.NDArray[np.float64]
    volume: npt.NDArray[np.float64]


class BarBuilder:
    def __init__(self, keys: tuple[str, ...], *, grace_s: float = 2.0, future_tolerance_s: float = 5.0) -> None:
        self.keys = keys
        self._index = {key: i for i, key in enumerate(keys)}
        self.grace_ns = int(grace_s * NS)
        self.future_ns = int(future_tolerance_s * NS)
        self._building: dict[str, _Building] = {}
        self._last_tick: dict[str, Tick] = {}
        self._last_volume: dict[str, int] = {}
        self._closed_until_ns = 0  # minutes before this are closed
        self.rejected: Counter[str] = Counter()
        self.last_tick_wall_ns = 0

    def on_tick(self, tick: Tick, now_ns: int) -> None:
        reason = self._problem(tick, now_ns)
        if reason:
            self.rejected[reason] += 1
            return
        self.last_tick_wall_ns = now_ns
        stamp = tick.exchange_at_ns or now_ns
        minute = stamp - stamp % MINUTE_NS
        if minute < self._closed_until_ns:
            self.rejected["late_tick"] += 1
            return
        previous_volume = self._last_volume.get(tick.instrument_key)
        traded = float(max(tick.volume - previous_volume, 0)) if previous_volume is not None else float(
            tick.last_quantity)
        self._last_volume[tick.instrument_key] = max(tick.volume, previous_volume or 0)
        self._last_tick[tick.instrument_key] = tick
        bar = self._building.get(tick.instrument_key)
        price = tick.last_price
        if bar is None or bar.minute_ns != minute:
            if bar is not None and minute < bar.minute_ns:
                self.rejected["late_tick"] += 1
                return
            self._building[tick.instrument_key] = _Building(minute, price, price, price, price, traded, stamp)
            return
        bar.volume += traded
        if stamp < bar.last_exchange_ns:
            self.rejected["out_of_order_tick"] += 1
            return
        bar.high, bar.low, bar.close, bar.last_exchange_ns = max(bar.high, price), min(bar.low, price), price, stamp

    def _problem(self, tick: Tick, now_ns: int) -> str:
        if tick.instrument_key not in self._index:
            return "unknown_instrument"
        if not np.isfinite(tick.last_price):
            return "non_finite_price"
        if tick.last_price <= 0:
            return "non_positive_price"
        if tick.exchange_at_ns and tick.exchange_at_ns > now_ns + self.future_ns:
            return "future_timestamp"
        if tick.bids and tick.asks and tick.bids[0].price > 0 and tick.asks[0].price > 0 \
                and tick.bids[0].price >= tick.asks[0].price:
            return "crossed_book"
        if self._last_tick.get(tick.instrument_key) == tick:
            return "duplicate_tick"
        return ""

    def close_due(self, now_ns: int) -> list[ClosedBars]:
        """Bars of every minute that ended more than `grace` ago, oldest first, one slice per minute."""
        due_until = now_ns - self.grace_ns
        due_until -= due_until % MINUTE_NS  # minutes strictly before this are complete
        minutes = sorted({bar.minute_ns for bar in self._building.values() if bar.minute_ns + MINUTE_NS <= due_until})
        out: list[ClosedBars] = []
        for minute in minutes:
            n = len(self.keys)
            arrays = [np.full(n, np.nan) for _ in range(5)]
            for key, bar in list(self._building.items()):
                if bar.minute_ns == minute:
                    i = self._index[key]
                    for array, value in zip(arrays, (bar.open, bar.high, bar.low, bar.close, bar.volume), strict=True):
                        array[i] = value
                    del self._building[key]
            out.append(ClosedBars(minute, *arrays))
        self._closed_until_ns = max(self._closed_until_ns, due_until)
        return out

    def feed_is_stale(self, now_ns: int, stale_after_s: float) -> bool:
        return self.last_tick_wall_ns > 0 and now_ns - self.last_tick_wall_ns > stale_after_s * NS
