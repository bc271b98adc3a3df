"""Prometheus metrics on 127.0.0.1 (positions, PnL, orders by state, step latency, feed lag, bad ticks)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from tradeloom.domain import OrderState

if TYPE_CHECKING:
    from executor.journal import Journal
    from executor.oms import OrderManager
    from executor.trader import Trader


class Metrics:
    def __init__(self, port: int | None) -> None:
        self.registry = CollectorRegistry()
        self.step_seconds = Histogram("tradeloom_step_seconds", "bar close -> intents handed to the broker",
                                      registry=self.registry,
                                      buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5))
        self.orders = Gauge("tradeloom_orders", "orders by state", ["state"], registry=self.registry)
        self.positions = Gauge("tradeloom_position", "signed position", ["instrument"], registry=self.registry)
        self.equity = Gauge("tradeloom_equity", "account equity", registry=self.registry)
        self.day_pnl = Gauge("tradeloom_day_pnl", "equity change since the session day began", registry=self.registry)
        self.kill_switch = Gauge("tradeloom_kill_switch", "1 when the kill switch is engaged", registry=self.registry)
        self.journal_pending = Gauge("tradeloom_journal_pending", "records waiting for the database",
                                     registry=self.registry)
        self.feed_lag = Gauge("tradeloom_feed_lag_seconds", "seconds since the last good tick", registry=self.registry)
        self.bad_ticks = Counter("tradeloom_bad_ticks", "ticks refused, by reason", ["reason"], registry=self.registry)
        self.duplicates_refused = Gauge("tradeloom_duplicate_orders_refused", "known client ids not re-sent",
                                        registry=self.registry)
        if port is not None:
            start_http_server(port, addr="127.0.0.1", registry=self.registry)

    def observe_step(self, seconds: float) -> None:
        self.step_seconds.observe(seconds)

    def update(self, orders: OrderManager, trader: Trader, journal: Journal) -> None:
        """Gauges from the order manager and the trader's last step; a state with no orders reads 0 (not the
        count it last had), and a position is the one the last decision saw."""
        counts = dict.fromkeys((state.value for state in OrderState), 0)
        for order in orders.orders.values():
            counts[order.state.value] += 1
        for state, count in counts.items():
            self.orders.labels(state=state).set(count)
        engine = trader.state
        for key, quantity in zip(trader.universe.keys, engine.last_position.tolist(), strict=True):
            self.positions.labels(instrument=key).set(quantity)
        self.equity.set(engine.last_equity)
        self.day_pnl.set(engine.last_equity - engine.day_start_equity)
        self.journal_pending.set(journal.pending)
        self.duplicates_refused.set(orders.duplicates_refused)
