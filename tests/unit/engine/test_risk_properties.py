"""Property tests: for random price paths and random signals no limit is ever breached."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.backtest import MarketData, run_backtest
from tradeloom.domain import IntentPurpose, OrderType
from tradeloom.engine import (
    BrokerConfig,
    CostConfig,
    EngineConfig,
    RiskConfig,
    SignalConfig,
    SimulatedBroker,
    SizingConfig,
    StepResult,
    StopConfig,
    Universe,
)
from tradeloom.engine.baselines import one_hot

N, T = 3, 60
RISK = RiskConfig(max_position_fraction=0.3, max_gross_exposure=0.8, max_net_exposure=0.8, max_positions=2,
                  daily_loss_limit=0.02, max_drawdown=0.05)
CONFIG = EngineConfig(signal=SignalConfig(enter_threshold=0.5, exit_threshold=0.5), risk=RISK,
                      stops=StopConfig(stop_loss_pct=0.03, trailing=True),
                      sizing=SizingConfig(method="kelly", kelly_cap=1.0, kelly_payoff=3.0))


@st.composite
def market(draw: st.DrawFn) -> tuple[MarketData, np.ndarray]:
    seed = draw(st.integers(0, 2**32 - 1))
    vol = draw(st.floats(0.005, 0.08))
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, vol, (T, N)), axis=0))
    open_ = close * np.exp(rng.normal(0, vol / 2, (T, N)))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, vol / 2, (T, N))))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, vol / 2, (T, N))))
    direction = rng.integers(-1, 2, (T, N)).astype(np.int8)
    probabilities = one_hot(direction) * 0.6 + 0.4 * rng.dirichlet(np.ones(3), (T, N))
    stamps = np.arange(T, dtype=np.int64) * 3_600_000_000_000  # hourly: several bars per session day
    data = MarketData(Universe.simple(["X:A", "X:B", "X:C"]), stamps, open_, high, low, close,
                      np.full((T, N), 1e6), session_day=np.arange(T, dtype=np.int64) // 6)
    return data, probabilities


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(market())
def test_backtest_random_paths_never_breach_limits(case: tuple[MarketData, np.ndarray]) -> None:
    data, probabilities = case
    halted_day: set[int] = set()
    drawdown_halted = [False]

    def check(t: int, broker: SimulatedBroker, result: StepResult) -> None:
        close = data.close[t]
        equity = result.record.equity
        assert broker.cash >= -1e-9  # no margin: cash never goes negative
        entries = result.record.entry_quantity
        notional = np.abs(entries) * close
        assert np.all(notional <= RISK.max_position_fraction * equity + 1e-6)
        book = broker.positions + broker.pending_quantities()
        if entries.any():
            assert float(np.sum(np.abs(book) * close)) <= RISK.max_gross_exposure * equity + 1e-6
            assert abs(float(np.sum(book * close))) <= RISK.max_net_exposure * equity + 1e-6
            assert np.count_nonzero(book) <= RISK.max_positions
        day = int(data.session_day[t])  # type: ignore[index]
        events = {(e.rule, e.action) for e in result.record.events}
        if ("daily_loss_halt", "halt") in events:
            halted_day.add(day)
        if ("drawdown_halt", "halt") in events:
            drawdown_halted[0] = True
        if day in halted_day or drawdown_halted[0]:
            assert not entries.any()
        # Every open position is protected by a working stop for its full size, or is being exited.
        working = broker.open_orders()
        for i in np.flatnonzero(broker.positions):
            held = int(broker.positions[i])
            stop = sum(o.remaining for o in working if o.index == i and o.active
                       and o.intent.order_type is OrderType.STOP and o.intent.purpose is IntentPurpose.STOP_LOSS)
            exiting = any(o.index == i and o.intent.purpose in (IntentPurpose.EXIT, IntentPurpose.SQUARE_OFF)
                          for o in working)
            assert exiting or stop >= abs(held), (t, i, held, stop)

    result = run_backtest(data, probabilities, engine_config=CONFIG, cash=100_000.0,
                          broker_config=BrokerConfig(costs=CostConfig(commission_rate=0.0005)), observer=check)
    assert np.all(np.isfinite(result.equity))


@settings(max_examples=15, deadline=None)
@given(market())
def test_backtest_same_inputs_same_orders(case: tuple[MarketData, np.ndarray]) -> None:
    data, probabilities = case
    runs = [run_backtest(data, probabilities, engine_config=CONFIG, keep_records=True) for _ in range(2)]
    assert runs[0].intents_by_bar == runs[1].intents_by_bar
    np.testing.assert_array_equal(runs[0].equity, runs[1].equity)
