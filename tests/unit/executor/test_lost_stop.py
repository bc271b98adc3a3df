"""A held position whose protective stop the broker drops (cancelled, rejected, expired) gets a new one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from executor.journal import Journal
from executor.oms import OrderManager
from executor.trader import BarSlice, Trader
from tradeloom.adapters.brokers.paper import PaperBroker
from tradeloom.domain import IntentPurpose, OrderState
from tradeloom.engine.config import EngineConfig, RiskConfig, SignalConfig, SizingConfig, StopConfig
from tradeloom.engine.state import Universe
from tradeloom.features.online import OnlineFeatureEngine
from tradeloom.synthetic import synthetic_instruments


class BuyFirst:
    """Scores "up" for the first instrument and "flat" for the others, on every bar."""

    name, version = "scripted", "1"

    def __init__(self, size: int) -> None:
        self.size = size

    def score(self, features: np.ndarray, close: np.ndarray) -> np.ndarray:
        out = np.tile([0.0, 1.0, 0.0], (self.size, 1))
        out[0] = [0.0, 0.1, 0.9]
        return out


def _no_database() -> None:
    raise RuntimeError("no database in this test")


@pytest.mark.parametrize("how", ["cancelled", "rejected"])
def test_a_dropped_stop_is_placed_again_at_the_next_bar(tmp_path: Path, how: str) -> None:
    instruments = synthetic_instruments(2)
    keys = tuple(i.key for i in instruments)
    broker = PaperBroker(keys, cash=1_000_000.0)
    journal = Journal(tmp_path, _no_database, strategy="lost", mode="replay")  # type: ignore[arg-type]
    orders = OrderManager(broker, journal)
    config = EngineConfig(strategy="lost", signal=SignalConfig(enter_threshold=0.5),
                          stops=StopConfig(stop_loss_pct=0.05),
                          sizing=SizingConfig(method="fixed_quantity", quantity=3),
                          risk=RiskConfig(daily_loss_limit=None, max_drawdown=None))
    trader = Trader(universe=Universe.of(instruments), config=config, broker=broker, orders=orders, journal=journal,
                    features=OnlineFeatureEngine(keys, "1m"), scorer=BuyFirst(len(keys)), mode="replay",
                    cash=1_000_000.0)
    price = np.array([100.0, 50.0])

    def bar(t: int) -> BarSlice:
        return BarSlice(1_700_000_000_000_000_000 + t * 60_000_000_000, price, price * 1.001, price * 0.999,
                        price, np.full(2, 10_000.0), session_day=1)

    def open_stops() -> list[str]:
        return [o.client_order_id for o in orders.open_orders()
                if o.intent.purpose is IntentPurpose.STOP_LOSS and o.intent.instrument_key == keys[0]]

    def step(t: int) -> None:  # what the service's loop does: the paper broker pushes no updates in replay
        trader.on_bar_close(bar(t))
        orders.poll()

    step(0)  # decides the entry with its stop
    step(1)  # the entry fills at this bar's open; the stop is working
    assert orders.pending_quantity(keys[0], frozenset({IntentPurpose.ENTRY})) == 0
    assert [p.quantity for p in broker.positions() if p.instrument_key == keys[0]] == [3]
    [first] = open_stops()
    dropped = orders.orders[first]
    if how == "cancelled":  # e.g. the exchange cancelled it at a circuit limit
        orders.on_update(broker.cancel(str(dropped.broker_order_id)))
    else:
        orders._set(dropped, OrderState.REJECTED, message="RMS: stop price outside the band")
    assert dropped.state.value == how and not open_stops()

    step(2)
    [second] = open_stops()
    assert second != first
    assert orders.orders[second].intent.quantity == 3
    assert trader.state.stop_order_id[0] == second
    journal.sync()
    assert "protective_stop_lost" in journal.path.read_text(encoding="utf-8")
