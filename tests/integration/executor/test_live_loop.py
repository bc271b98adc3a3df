"""The live loop: ticks from a feed (entering through the port) -> bars -> engine -> paper broker."""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import numpy as np
import pytest

from executor.oms import Lineage, ManagedOrder
from executor.service import ExecutorService
from executor.settings import ExecutorSettings, TradingMode
from tests.integration.executor.conftest import DAY2, DAY3, KEYS
from tradeloom.adapters.db import Database
from tradeloom.adapters.store import BarMatrix as BarMatrixLike
from tradeloom.adapters.store import load_bar_matrix
from tradeloom.broker import OrderCallback, Tick, TickCallback
from tradeloom.domain import Instrument, IntentPurpose, OrderIntent, OrderState, OrderType, Side, Timeframe
from tradeloom.features.online import OnlineFeatureEngine

NS = 1_000_000_000
OPEN = DAY2.replace(hour=3, minute=45)  # 09:15 IST


class ScriptedFeed:
    """A market data feed the test drives: it hands the service's callbacks to the test."""

    def __init__(self) -> None:
        self.on_tick: TickCallback | None = None
        self.stopped = False

    def instruments(self) -> list[Instrument]:
        return []

    def historical_bars(self, instrument_key: str, timeframe: Timeframe, start: datetime, end: datetime) -> None:
        raise NotImplementedError

    def stream(self, instrument_keys: Sequence[str], on_order: OrderCallback | None = None,
               on_tick: TickCallback | None = None) -> None:
        self.on_tick = on_tick

    def stop_stream(self) -> None:
        self.stopped = True


def test_live_ticks_become_bars_decisions_and_stored_bars_and_a_silent_feed_stops_entries(
    market: Database, executor_settings: Callable[..., ExecutorSettings]
) -> None:
    with market.transaction() as conn:
        bars = load_bar_matrix(conn, Timeframe.MINUTE, KEYS, int(OPEN.timestamp() * NS),
                               int(OPEN.timestamp() * NS) + 40 * 60 * NS)
    with market.transaction(market.settings.owner_role) as conn, conn.cursor() as cur:
        cur.execute("delete from bars_1m where bar_at >= %s", (OPEN,))  # the feed brings these minutes live
    feed = ScriptedFeed()
    service = ExecutorService(executor_settings("live", trading_mode=TradingMode.PAPER, stale_feed_seconds=90),
                              feed=feed)
    service.start()
    service.feed.stream(service.keys, on_tick=service._inbox.put)  # what run_live does before looping
    assert feed.on_tick is not None
    traded = 0
    for t, stamp in enumerate(bars.bar_at_ns[:30]):
        for i, key in enumerate(KEYS):  # open, high, low, close as four ticks inside the minute
            for offset, price in ((1, bars.open[t, i]), (20, bars.high[t, i]), (40, bars.low[t, i]),
                                  (59, bars.close[t, i])):
                feed.on_tick(Tick(key, float(price), 1, int(bars.volume[t, i] * offset / 59), int(stamp) + offset * NS))
        traded += service.live_cycle(int(stamp) + 62 * NS)
    assert traded == 30  # each minute closes once its grace period has passed
    assert service.trader.bars_done == 30
    service.journal.flush()
    with market.transaction() as conn, conn.cursor() as cur:
        cur.execute("select count(*), min(source) from bars_1m where bar_at >= %s", (OPEN,))
        stored, source = cur.fetchone()  # type: ignore[misc]
        cur.execute("select count(*) from decisions where strategy = 'live'")
        decisions = cur.fetchone()[0]  # type: ignore[index]
    assert stored == 30 * len(KEYS) and source == "live:paper"
    assert decisions == 30
    # The feed goes silent: after `stale_feed_seconds` no new entries, and the event is journaled.
    silent_at = int(bars.bar_at_ns[29]) + 62 * NS + 200 * NS
    service.live_cycle(silent_at)
    assert service.trader.entries_paused
    service.journal.flush()
    with market.transaction() as conn, conn.cursor() as cur:
        cur.execute("select count(*) from executor_events where kind = 'feed_stale'")
        assert cur.fetchone()[0] >= 1  # type: ignore[index]
    np.testing.assert_equal(len(service.bars.rejected), 0)
    # A new day: finished orders decided more than a day ago leave memory; the next morning nothing qualifies
    # yet. A round trip finished before today's open (as a restart would have loaded it) is among them.
    before_open = Lineage("live", "paper", int(OPEN.timestamp() * NS) - 10 * 60 * NS)
    untraded = next(key for key in KEYS if all(o.intent.instrument_key != key for o in service.orders.orders.values()))
    service.orders.adopt([
        ManagedOrder(OrderIntent(f"OLD-{purpose.value}", untraded, side, 1, OrderType.MARKET, purpose), before_open,
                     "paper", OrderState.FILLED, f"B-{purpose.value}", 1)
        for purpose, side in ((IntentPurpose.ENTRY, Side.BUY), (IntentPurpose.EXIT, Side.SELL))
    ])
    held = dict(service.orders.orders)
    next_morning = int(OPEN.timestamp() * NS) + 86_400 * NS - 30 * 60 * NS
    service.live_cycle(next_morning)
    assert service.orders.orders.keys() == held.keys()
    service.live_cycle(next_morning + 86_400 * NS)
    kept = service.orders.orders
    busy = {order.intent.instrument_key for order in held.values() if order.is_open}
    assert all(order_id in kept for order_id, order in held.items() if order.is_open)
    assert not [order_id for order_id, order in held.items() if order.intent.instrument_key not in busy
                and order_id in kept]  # an instrument with nothing open keeps nothing of the earlier day
    assert "OLD-entry" not in kept and "OLD-exit" not in kept
    assert all(service.orders.known(order_id) for order_id in held)  # retired ids are never sent again
    service.close()


def test_sigusr1_engages_the_kill_switch_at_the_loops_next_pass_not_inside_the_handler(
    market: Database, executor_settings: Callable[..., ExecutorSettings]
) -> None:
    feed = ScriptedFeed()
    service = ExecutorService(executor_settings("kill", trading_mode=TradingMode.PAPER), feed=feed)
    service.start()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    try:
        service._install_signals()
        os.kill(os.getpid(), signal.SIGUSR1)  # delivered here: Python runs the handler before the next line
        assert service.kill_requested.is_set()
        assert not service.trader.kill_switch  # the handler only asked; an order in flight is not judged
        service.live_cycle(int(OPEN.timestamp() * NS))
        assert service.trader.kill_switch
        service.journal.flush()
        with market.transaction() as conn, conn.cursor() as cur:
            cur.execute("select count(*) from executor_events where kind = 'kill_switch' and actor = 'signal'"
                        " and detail->>'reason' = 'SIGUSR1'")
            assert cur.fetchone()[0] == 1  # type: ignore[index]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        service.close()



def test_live_start_warms_the_features_from_stored_bars_back_adjusted_for_a_split(
    market: Database, executor_settings: Callable[..., ExecutorSettings]
) -> None:
    """Before the first live decision the online features hold the last `warmup_bars` stored bars (the whole
    previous session, across the overnight gap), back-adjusted: a 2-for-1 split effective today does not look
    like a 50% crash at the first live bar."""
    split_key = KEYS[0]
    with market.transaction(market.settings.owner_role) as conn, conn.cursor() as cur:
        cur.execute("update bars_1m set open = open / 2, high = high / 2, low = low / 2, close = close / 2"
                    " where instrument_id = (select instrument_id from instruments where exchange || ':' || symbol"
                    " = %s) and bar_at >= %s", (split_key, DAY2))
        cur.execute("insert into corporate_actions (instrument_id, ex_at, action, split_ratio)"
                    " select instrument_id, %s, 'split', 2 from instruments where exchange || ':' || symbol = %s",
                    (DAY2, split_key))
    open_ns = int(OPEN.timestamp() * NS)
    with market.transaction() as conn:
        history = load_bar_matrix(conn, Timeframe.MINUTE, KEYS, open_ns - 86_400 * NS, open_ns + 60 * NS)
    previous_session = history.bar_at_ns < open_ns
    service = ExecutorService(executor_settings("warm", trading_mode=TradingMode.PAPER, warmup_bars=200),
                              feed=ScriptedFeed())
    service.start()
    assert service.warm_up_from_database(open_ns) == 200
    assert service.warm_up_from_database(open_ns) == 0  # once per process
    assert int(service.features.last_bar_at.max()) == int(history.bar_at_ns[previous_session][-1])
    reference = OnlineFeatureEngine(tuple(KEYS), "1m")
    for t in np.flatnonzero(previous_session)[-200:]:
        reference.step(int(history.bar_at_ns[t]), history.open[t], history.high[t], history.low[t],
                       history.close[t], history.volume[t])
    first = int(np.flatnonzero(~previous_session)[0])
    bar = (int(history.bar_at_ns[first]), history.open[first], history.high[first], history.low[first],
           history.close[first], history.volume[first])
    live, expected = service.features.step(*bar), reference.step(*bar)
    np.testing.assert_array_equal(live, expected)
    ret_1 = live[:, service.features.spec.names.index("ret_1")]
    assert np.all(np.abs(ret_1) < 0.05), ret_1  # not the -50% of unadjusted prices across the split
    service.close()
    # `run_live` itself warms up before it streams.
    live_run = ExecutorService(executor_settings("warm-run", trading_mode=TradingMode.PAPER, warmup_bars=200),
                               feed=ScriptedFeed())
    live_run.start()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    try:
        ticks = itertools.count(open_ns, NS)  # a clock a second further on each call: one pass, then stop
        live_run.run_live(clock=lambda: next(ticks), max_seconds=0.5)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        live_run.close()
    assert int(live_run.features.bar_count.max()) == 200


def _feed_minute(feed: ScriptedFeed, bars: BarMatrixLike, t: int) -> int:
    """Four ticks (open, high, low, close) of minute `t` for every instrument; returns the close-due time."""
    assert feed.on_tick is not None
    stamp = int(bars.bar_at_ns[t])
    for i, key in enumerate(KEYS):
        for offset, price in ((1, bars.open[t, i]), (20, bars.high[t, i]), (40, bars.low[t, i]),
                              (59, bars.close[t, i])):
            feed.on_tick(Tick(key, float(price), 1, int(bars.volume[t, i] * offset / 59), stamp + offset * NS))
    return stamp + 62 * NS


def test_a_split_taking_effect_while_live_rewarms_the_features_and_pauses_entries_until_it_can(
    market: Database, executor_settings: Callable[..., ExecutorSettings]
) -> None:
    """The service runs through the night into a 2-for-1 split's ex-date: its features hold yesterday's raw
    prices, so the first post-split bar would read as a 50% crash. It re-warms from the store, back-adjusted
    (as a fresh start would), and while the store is unreachable it keeps entries paused instead."""
    split_key, day3_open = KEYS[0], DAY3.replace(hour=3, minute=45)
    with market.transaction(market.settings.owner_role) as conn, conn.cursor() as cur:
        cur.execute("update bars_1m set open = open / 2, high = high / 2, low = low / 2, close = close / 2"
                    " where instrument_id = (select instrument_id from instruments where exchange || ':' || symbol"
                    " = %s) and bar_at >= %s", (split_key, DAY3))
    live_from = day3_open - timedelta(hours=17, minutes=45 + 20)  # DAY2's last 20 minutes (close 15:30 IST)
    with market.transaction() as conn:
        bars = load_bar_matrix(conn, Timeframe.MINUTE, KEYS, int(live_from.timestamp() * NS),
                               int(day3_open.timestamp() * NS) + 5 * 60 * NS, adjust_splits=False)
    day2_rows = int((bars.bar_at_ns < int(DAY3.timestamp() * NS)).sum())
    assert day2_rows == 20 and len(bars.bar_at_ns) == 25
    with market.transaction(market.settings.owner_role) as conn, conn.cursor() as cur:
        cur.execute("delete from bars_1m where bar_at >= %s", (live_from,))  # the feed brings these live
        cur.execute("insert into corporate_actions (instrument_id, ex_at, action, split_ratio)"
                    " select instrument_id, %s, 'split', 2 from instruments where exchange || ':' || symbol = %s",
                    (DAY3, split_key))
    feed = ScriptedFeed()
    service = ExecutorService(executor_settings("split-live", trading_mode=TradingMode.PAPER, warmup_bars=200,
                                                stale_feed_seconds=10**6), feed=feed)
    service.start()
    service.warm_up_from_database(int(bars.bar_at_ns[0]))
    service.feed.stream(service.keys, on_tick=service._inbox.put)
    for t in range(day2_rows):
        assert service.live_cycle(_feed_minute(feed, bars, t)) == 1
    before = float(service.trader.state.last_close[0])
    # The first post-split bar while the store is unreachable: no re-warm, entries paused.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(service.journal, "flush", lambda: False)
        assert service.live_cycle(_feed_minute(feed, bars, day2_rows)) == 1
        assert service.trader.entries_paused
    assert service.trader.state.last_close[0] == pytest.approx(float(bars.close[day2_rows, 0]))
    # The store is back: the next bar re-warms from it (the last 200 stored bars, back-adjusted) first.
    assert service.live_cycle(_feed_minute(feed, bars, day2_rows + 1)) == 1
    assert not service.trader.entries_paused
    nxt = day2_rows + 2
    until = int(bars.bar_at_ns[nxt])
    with market.transaction() as conn:
        history = load_bar_matrix(conn, Timeframe.MINUTE, KEYS, until - 3 * 86_400 * NS, until)
    reference = OnlineFeatureEngine(tuple(KEYS), "1m")
    # The 200 warm-up bars, then the bar the service traded after re-warming (as stored live).
    for t in range(len(history.bar_at_ns) - 201, len(history.bar_at_ns)):
        reference.step(int(history.bar_at_ns[t]), history.open[t], history.high[t], history.low[t],
                       history.close[t], history.volume[t])
    bar = (int(bars.bar_at_ns[nxt]), bars.open[nxt], bars.high[nxt], bars.low[nxt], bars.close[nxt],
           bars.volume[nxt])
    expected = reference.step(*bar)
    np.testing.assert_array_equal(service.features.step(*bar), expected)
    assert service.trader.features is service.features
    ret_1 = expected[:, service.features.spec.names.index("ret_1")]
    assert np.all(np.abs(ret_1) < 0.05), ret_1
    assert before > 1.5 * float(service.trader.state.last_close[0])  # the engine's last close is post-split
    service.journal.flush()
    with market.transaction() as conn, conn.cursor() as cur:
        cur.execute("select detail from executor_events where kind = 'split_rewarm'")
        events = [row[0] for row in cur.fetchall()]
    assert len(events) == 1 and events[0]["bars"] == 200
    service.close()
