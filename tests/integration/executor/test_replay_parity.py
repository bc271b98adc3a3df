"""Backtest = live: a replayed day through the executor (paper broker) gives the backtester's orders."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import psycopg2

from executor.service import ExecutorService
from executor.settings import ExecutorSettings
from executor.trader import FEATURE_ALIASES, SmaCrossScorer
from pipelines.backtest import MarketData, run_backtest
from tests.integration.executor.conftest import DAY1, DAY2, DAY3, KEYS
from tradeloom.adapters.db import Database
from tradeloom.adapters.store import load_bar_matrix, load_instruments
from tradeloom.calendars import session_context
from tradeloom.domain import Timeframe
from tradeloom.engine.state import Universe
from tradeloom.features.online import OnlineFeatureEngine

NS = 1_000_000_000


def _journal_orders(db: Database, strategy: str) -> list[tuple[str, str, int, int, str]]:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("select client_order_id, instrument_key, side, quantity, purpose from orders where strategy = %s"
                    " order by client_order_id", (strategy,))
        return [tuple(row) for row in cur.fetchall()]  # type: ignore[misc]


def _journal_fills(db: Database, strategy: str) -> list[tuple[str, int, float]]:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("select f.client_order_id, f.quantity, f.price::float8 from fills f join orders o"
                    " using (client_order_id) where o.strategy = %s order by 1, 3", (strategy,))
        return [tuple(row) for row in cur.fetchall()]  # type: ignore[misc]


def _fills_by_time(db: Database, strategy: str) -> list[tuple[object, ...]]:
    """Fills as (time, instrument, side, quantity, price): comparable across strategies (whose client ids differ)."""
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("select f.filled_at, f.instrument_key, f.side, f.quantity, f.price::float8 from fills f"
                    " join orders o using (client_order_id) where o.strategy = %s order by 1, 2, 3", (strategy,))
        return [tuple(row) for row in cur.fetchall()]


def _backtest_day(db: Database, settings: ExecutorSettings) -> tuple[list[tuple[str, str, int, int, str]],
                                                                      list[tuple[str, int, float]]]:
    """The same day through the backtester: features and baseline scores computed bar by bar from the warm-up."""
    with db.transaction() as conn:
        instruments = load_instruments(conn, KEYS)
        bars = load_bar_matrix(conn, Timeframe.MINUTE, KEYS, int(DAY1.timestamp() * NS), int(DAY3.timestamp() * NS))
    engine = OnlineFeatureEngine(tuple(KEYS), "1m")
    scorer = SmaCrossScorer(len(KEYS))
    features, probabilities = [], []
    for t in range(len(bars.bar_at_ns)):
        row = engine.step(int(bars.bar_at_ns[t]), bars.open[t], bars.high[t], bars.low[t], bars.close[t],
                          bars.volume[t])
        features.append(row)
        probabilities.append(scorer.score(row, bars.close[t]))
    day = bars.bar_at_ns >= int(DAY2.timestamp() * NS)
    matrix = np.asarray(features)[day]
    names = engine.spec.names
    feature_arrays = {name: matrix[:, :, column] for column, name in enumerate(names)}
    for alias, name in FEATURE_ALIASES.items():
        feature_arrays[alias] = feature_arrays[name]
    context = [session_context(instruments, int(stamp), 60) for stamp in bars.bar_at_ns[day]]
    data = MarketData(
        Universe.of(instruments), bars.bar_at_ns[day], bars.open[day], bars.high[day], bars.low[day],
        bars.close[day], bars.volume[day], feature_arrays,
        np.array([c[0] for c in context], dtype=np.int64), np.array([c[1] for c in context]),
    )
    result = run_backtest(data, np.asarray(probabilities)[day], engine_config=settings.engine,
                          broker_config=settings.paper, cash=settings.cash, keep_records=True)
    intents = {}
    for record_ids in result.intents_by_bar:
        for client_id in record_ids:
            intents[client_id] = True
    fills = sorted((f.fill.client_order_id, f.fill.quantity, round(f.price, 8)) for f in result.fills)
    orders = sorted(intents)
    return [(client_id,) for client_id in orders], fills  # type: ignore[list-item]


def test_replayed_day_through_executor_matches_backtester(
    market: Database, executor_settings: Callable[..., ExecutorSettings]
) -> None:
    settings = executor_settings("parity")
    service = ExecutorService(settings)
    service.start()
    summary = service.run_replay(DAY2, DAY3)
    service.close()
    assert summary.bars == 375
    executor_orders = _journal_orders(market, "parity")
    executor_fills = _journal_fills(market, "parity")
    backtest_orders, backtest_fills = _backtest_day(market, settings)
    assert len(executor_orders) >= 10, "the baseline should trade on a synthetic day"
    assert [row[0] for row in executor_orders] == [row[0] for row in backtest_orders]
    assert [(c, q, round(p, 6)) for c, q, p in executor_fills] == [(c, q, round(p, 6)) for c, q, p in backtest_fills]


def test_restart_mid_session_sends_nothing_twice_and_ends_like_one_run(
    market: Database, executor_settings: Callable[..., ExecutorSettings]
) -> None:
    whole = ExecutorService(executor_settings("whole"))
    whole.start()
    whole.run_replay(DAY2, DAY3)
    whole.close()

    first = ExecutorService(executor_settings("split"))
    first.start()
    halfway = DAY2.replace(hour=7)  # mid-session (IST 12:30)
    first.run_replay(DAY2, halfway)
    first.journal.flush()
    del first  # a crash: no close(), no final flush beyond what each bar did
    second = ExecutorService(executor_settings("split"))
    report = second.start()
    second.run_replay(DAY2, DAY3)
    second.close()

    assert report["foreign_orders"] == 0
    whole_orders = [row[0] for row in _journal_orders(market, "whole")]
    split_orders = [row[0] for row in _journal_orders(market, "split")]
    assert len(split_orders) == len(set(split_orders))
    assert len(split_orders) == len(whole_orders) > 0
    assert _fills_by_time(market, "split") == _fills_by_time(market, "whole")


def test_database_outage_pauses_entries_and_loses_nothing(
    market: Database, executor_settings: Callable[..., ExecutorSettings]
) -> None:
    service = ExecutorService(executor_settings("outage"))
    service.start()
    real_connect = service.journal._connect
    outage = {"down": False}

    def flaky() -> psycopg2.extensions.connection:
        if outage["down"]:
            raise psycopg2.OperationalError("connection refused (simulated outage)")
        return real_connect()

    service.journal._connect = flaky
    service.journal._drop_connection()
    service.run_replay(DAY2, DAY2.replace(hour=5))
    before = len(service.orders.orders)
    outage["down"] = True
    service.journal._drop_connection()
    service.run_replay(DAY2, DAY2.replace(hour=6))
    entries_during = [o for o in service.orders.orders.values()
                      if o.intent.purpose.value == "entry" and o.lineage.bar_at_ns is not None
                      and o.lineage.bar_at_ns >= int(DAY2.replace(hour=5).timestamp() * NS)]
    assert not service.journal.db_healthy
    assert service.journal.pending > 0
    assert entries_during == []
    outage["down"] = False
    assert service.journal.flush()
    service.close()
    with market.transaction() as conn, conn.cursor() as cur:
        cur.execute("select count(*) from decisions where strategy = 'outage'")
        decisions = cur.fetchone()[0]  # type: ignore[index]
        cur.execute("select count(*) from orders where strategy = 'outage'")
        orders = cur.fetchone()[0]  # type: ignore[index]
    assert decisions == 135  # 03:45 (09:15 IST) to 06:00 UTC: one decision per minute bar, none lost
    assert orders == len(service.orders.orders) >= before
