from __future__ import annotations

import math

from executor.bars import MINUTE_NS, NS, BarBuilder
from tradeloom.broker import DepthLevel, Tick

T0 = 1_704_080_700 * NS - (1_704_080_700 * NS) % MINUTE_NS  # a minute boundary
KEYS = ("NSE:A", "NSE:B")


def _tick(price: float, at: int, volume: int, key: str = "NSE:A", **kwargs: object) -> Tick:
    return Tick(key, price, 1, volume, at, **kwargs)  # type: ignore[arg-type]


def test_bar_builder_builds_ohlcv_and_closes_after_grace() -> None:
    builder = BarBuilder(KEYS, grace_s=2)
    for offset, price, volume in ((1, 100.0, 10), (20, 103.0, 15), (40, 99.0, 30), (59, 101.0, 31)):
        builder.on_tick(_tick(price, T0 + offset * NS, volume), now_ns=T0 + offset * NS)
    assert builder.close_due(T0 + 61 * NS) == []  # inside the grace period
    (bars,) = builder.close_due(T0 + 63 * NS)
    assert bars.bar_at_ns == T0
    assert (bars.open[0], bars.high[0], bars.low[0], bars.close[0]) == (100.0, 103.0, 99.0, 101.0)
    assert bars.volume[0] == 1 + 5 + 15 + 1
    assert math.isnan(bars.close[1])


def test_bar_builder_late_tick_for_a_closed_minute_is_dropped_and_counted() -> None:
    builder = BarBuilder(KEYS, grace_s=1)
    builder.on_tick(_tick(100.0, T0 + NS, 1), now_ns=T0 + NS)
    (bars,) = builder.close_due(T0 + 62 * NS)
    builder.on_tick(_tick(500.0, T0 + 30 * NS, 2), now_ns=T0 + 63 * NS)
    assert builder.rejected["late_tick"] == 1
    assert bars.close[0] == 100.0
    assert builder.close_due(T0 + 200 * NS) == []


def test_bar_builder_refuses_bad_ticks_with_reasons() -> None:
    builder = BarBuilder(KEYS)
    now = T0 + 10 * NS
    good = _tick(100.0, now, 1)
    builder.on_tick(good, now)
    builder.on_tick(good, now)  # exact repeat
    builder.on_tick(_tick(float("nan"), now, 2), now)
    builder.on_tick(_tick(0.0, now, 2), now)
    builder.on_tick(_tick(-5.0, now, 2), now)
    builder.on_tick(_tick(100.0, now + 3600 * NS, 2), now)
    builder.on_tick(_tick(100.0, now, 3, bids=(DepthLevel(101.0, 1, 1),), asks=(DepthLevel(100.5, 1, 1),)), now)
    builder.on_tick(_tick(100.0, now, 3, key="NSE:ZZZ"), now)
    assert dict(builder.rejected) == {
        "duplicate_tick": 1, "non_finite_price": 1, "non_positive_price": 2, "future_timestamp": 1,
        "crossed_book": 1, "unknown_instrument": 1,
    }
    (bars,) = builder.close_due(T0 + 70 * NS)
    assert bars.close[0] == 100.0


def test_bar_builder_stale_feed_detected() -> None:
    builder = BarBuilder(KEYS)
    builder.on_tick(_tick(100.0, T0, 1), now_ns=T0)
    assert not builder.feed_is_stale(T0 + 10 * NS, 30)
    assert builder.feed_is_stale(T0 + 31 * NS, 30)
