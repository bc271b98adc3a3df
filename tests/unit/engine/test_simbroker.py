from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from tradeloom.domain import IntentPurpose, OrderIntent, OrderState, OrderType, Side
from tradeloom.engine import BrokerConfig, CostConfig, SimulatedBroker

KEYS = ("X:A",)


def bar(o: float, h: float, lo: float, c: float, v: float = 1e6) -> tuple[np.ndarray, ...]:
    return tuple(np.array([x]) for x in (o, h, lo, c, v))


def intent(order_id: str, side: Side, qty: int, kind: OrderType = OrderType.MARKET,
           purpose: IntentPurpose = IntentPurpose.ENTRY, limit: str | None = None, stop: str | None = None,
           parent: str | None = None) -> OrderIntent:
    return OrderIntent(order_id, "X:A", side, qty, kind, purpose, None if limit is None else Decimal(limit),
                       None if stop is None else Decimal(stop), parent_client_order_id=parent)


def broker(**kwargs: object) -> SimulatedBroker:
    return SimulatedBroker(BrokerConfig(**kwargs), KEYS, 100_000.0)  # type: ignore[arg-type]


def test_market_order_fills_at_next_open_with_commission() -> None:
    b = broker(costs=CostConfig(commission_rate=0.001))
    b.submit(intent("e", Side.BUY, 10))
    fills = b.on_bar(1, *bar(100.0, 101.0, 99.0, 100.5))
    assert [f.price for f in fills] == [100.0]
    assert b.cash == pytest.approx(100_000.0 - 1000.0 - 1.0)
    assert b.positions.tolist() == [10]


def test_stop_gapped_through_fills_at_open_not_stop() -> None:
    b = broker()
    b.submit(intent("e", Side.BUY, 10))
    b.on_bar(1, *bar(100.0, 100.0, 100.0, 100.0))
    b.submit(intent("s", Side.SELL, 10, OrderType.STOP, IntentPurpose.STOP_LOSS, stop="95"))
    fills = b.on_bar(2, *bar(90.0, 92.0, 89.0, 91.0))
    assert fills[0].price == 90.0  # the open, below the stop


def test_stop_within_bar_fills_at_stop() -> None:
    b = broker()
    b.submit(intent("e", Side.BUY, 10))
    b.on_bar(1, *bar(100.0, 100.0, 100.0, 100.0))
    b.submit(intent("s", Side.SELL, 10, OrderType.STOP, IntentPurpose.STOP_LOSS, stop="95"))
    assert b.on_bar(2, *bar(99.0, 99.5, 96.0, 97.0)) == []
    fills = b.on_bar(3, *bar(97.0, 98.0, 94.0, 95.5))
    assert fills[0].price == 95.0


def test_limit_buy_fills_at_limit_or_better_open() -> None:
    b = broker()
    b.submit(intent("l1", Side.BUY, 1, OrderType.LIMIT, limit="98"))
    b.submit(intent("l2", Side.BUY, 1, OrderType.LIMIT, limit="101"))
    fills = b.on_bar(1, *bar(100.0, 100.5, 97.0, 99.0))
    assert sorted(f.price for f in fills) == [98.0, 100.0]


def test_stop_limit_triggers_then_respects_limit() -> None:
    b = broker()
    b.submit(intent("sl", Side.BUY, 1, OrderType.STOP_LIMIT, limit="103", stop="102"))
    fills = b.on_bar(1, *bar(100.0, 104.0, 99.0, 103.5))
    assert [f.price for f in fills] == [102.0]
    gap = broker()
    gap.submit(intent("sl", Side.BUY, 1, OrderType.STOP_LIMIT, limit="103", stop="102"))
    assert gap.on_bar(1, *bar(105.0, 106.0, 104.0, 105.0)) == []  # gapped above the limit: rests
    assert gap.order_state("sl") == OrderState.ACKNOWLEDGED


def test_bracket_children_wake_with_parent_and_stop_wins_same_bar() -> None:
    b = broker()
    b.submit(intent("e", Side.BUY, 10))
    b.submit(intent("s", Side.SELL, 10, OrderType.STOP, IntentPurpose.STOP_LOSS, stop="95", parent="e"))
    b.submit(intent("t", Side.SELL, 10, OrderType.LIMIT, IntentPurpose.TAKE_PROFIT, limit="110", parent="e"))
    assert b.pending_quantities().tolist() == [10]
    fills = b.on_bar(1, *bar(100.0, 111.0, 94.0, 100.0))
    assert [(f.fill.client_order_id, f.price) for f in fills] == [("e", 100.0), ("s", 95.0)]
    assert b.positions.tolist() == [0]
    assert b.order_state("t") == OrderState.CANCELLED


def test_participation_cap_gives_partial_fills() -> None:
    b = broker(participation_cap=0.1)
    b.submit(intent("e", Side.BUY, 250))
    filled = [sum(f.fill.quantity for f in b.on_bar(t, *bar(10.0, 10.0, 10.0, 10.0, 1000.0))) for t in range(3)]
    assert filled == [100, 100, 50]
    assert b.order_state("e") == OrderState.FILLED


def test_buy_beyond_cash_is_rejected_and_cash_never_negative() -> None:
    b = broker()
    b.submit(intent("big", Side.BUY, 2000))
    assert b.on_bar(1, *bar(100.0, 100.0, 100.0, 100.0)) == []
    assert b.order_state("big") == OrderState.REJECTED and b.cash == 100_000.0
    reducing = broker(insufficient_cash="reduce", costs=CostConfig(commission_rate=0.001))
    reducing.submit(intent("big", Side.BUY, 2000))
    reducing.on_bar(1, *bar(100.0, 100.0, 100.0, 100.0))
    assert reducing.positions.tolist() == [999] and reducing.cash >= 0


def test_submit_same_client_order_id_twice_places_once() -> None:
    b = broker()
    b.submit(intent("e", Side.BUY, 10))
    b.submit(intent("e", Side.BUY, 10))
    b.on_bar(1, *bar(10.0, 10.0, 10.0, 10.0))
    assert b.positions.tolist() == [10]


def test_to_dict_from_dict_round_trip_continues_identically() -> None:
    a = broker(costs=CostConfig(commission_rate=0.001))
    a.submit(intent("e", Side.BUY, 10))
    a.submit(intent("s", Side.SELL, 10, OrderType.STOP, IntentPurpose.STOP_LOSS, stop="95", parent="e"))
    b = SimulatedBroker.from_dict(a.to_dict())
    for t, prices in enumerate([(100.0, 101.0, 99.0, 100.0), (98.0, 98.0, 94.0, 96.0)]):
        fa, fb = a.on_bar(t, *bar(*prices)), b.on_bar(t, *bar(*prices))
        assert [(f.fill.client_order_id, f.price, f.fill.quantity) for f in fa] == \
            [(f.fill.client_order_id, f.price, f.fill.quantity) for f in fb]
    assert a.cash == b.cash and a.positions.tolist() == b.positions.tolist()


def test_liquidate_closes_at_the_price_paying_the_exit_and_cancels_working_orders() -> None:
    b = broker(costs=CostConfig(commission_rate=0.001, spread_bps=10.0))
    b.submit(intent("e", Side.BUY, 10))
    b.on_bar(1, *bar(100.0, 101.0, 99.0, 100.0))
    b.submit(intent("s", Side.SELL, 10, OrderType.STOP, IntentPurpose.STOP_LOSS, stop="90"))
    cash_before = b.cash
    (fill,) = b.liquidate(2, np.array([110.0]))
    assert fill.side is Side.SELL and fill.quantity == 10 and fill.purpose is IntentPurpose.EXIT
    assert fill.price == pytest.approx(110.0 * (1 - 5.0 / 10_000))  # half the spread, adverse
    assert b.cash == pytest.approx(cash_before + 10 * fill.price - fill.fees) and fill.fees > 0
    assert b.positions.tolist() == [0] and b.open_orders() == []
    assert b.order_state("s") is OrderState.CANCELLED
    assert b.liquidate(3, np.array([111.0])) == []  # nothing left to close


def test_a_walk_forward_fold_ends_flat_net_of_its_exit_and_counts_the_round_trip() -> None:
    from pipelines.backtest import MarketData, run_backtest
    from tradeloom.engine import EngineConfig, SignalConfig, SizingConfig, StopConfig, Universe
    from tradeloom.engine.baselines import one_hot

    price = np.linspace(100.0, 110.0, 6).reshape(6, 1)
    data = MarketData(Universe.simple(["X:A"]), np.arange(6, dtype=np.int64) * 86_400 * 10**9, price, price, price,
                      price, np.full((6, 1), 1e6))
    probabilities = one_hot(np.ones(6, dtype=np.int8)).reshape(6, 1, 3)  # buy and hold
    config = EngineConfig(signal=SignalConfig(enter_threshold=0.5, exit_threshold=0.5),
                          stops=StopConfig(stop_loss_pct=None),
                          sizing=SizingConfig(method="fixed_quantity", quantity=10))
    costs = BrokerConfig(costs=CostConfig(commission_rate=0.001))
    held = run_backtest(data, probabilities, engine_config=config, broker_config=costs)
    closed = run_backtest(data, probabilities, engine_config=config, broker_config=costs, liquidate_at_end=True)
    assert held.metrics.trades == 0 and closed.metrics.trades == 1
    exit_fee = 10 * 110.0 * 0.001
    assert closed.equity[-1] == pytest.approx(held.equity[-1] - exit_fee)
    np.testing.assert_array_equal(closed.equity[:-1], held.equity[:-1])
    assert closed.metrics.costs_paid == pytest.approx(held.metrics.costs_paid + exit_fee)
    assert closed.trades[0].exit_price == pytest.approx(110.0)
