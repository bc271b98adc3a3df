"""`step(consume=True, explain=False)` (the backtester's mode) decides exactly as the default step."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.backtest import MarketData, run_backtest
from tests.unit.engine.test_risk_properties import CONFIG, market
from tradeloom.engine import (
    BrokerConfig,
    CostConfig,
    EngineConfig,
    EngineInputs,
    EngineState,
    SimulatedBroker,
    StepResult,
    StopConfig,
    step,
)

BROKER = BrokerConfig(costs=CostConfig(commission_rate=0.0005))
CONFIGS = st.sampled_from([
    CONFIG,
    CONFIG.model_copy(update={"stops": StopConfig(stop_loss_pct=0.02, take_profit_pct=0.03)}),
    CONFIG.model_copy(update={"stops": StopConfig(stop_loss_pct=None)}),
])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(market(), CONFIGS)
def test_step_in_place_without_events_random_paths_same_decisions(case: tuple[MarketData, np.ndarray],
                                                                   config: EngineConfig) -> None:
    data, probabilities = case
    n = len(data.universe)
    brokers = [SimulatedBroker(BROKER, data.universe.keys, 50_000.0) for _ in range(2)]
    states = [EngineState.for_config(CONFIG, n, 50_000.0) for _ in range(2)]
    for t in range(len(data)):
        results: list[StepResult] = []
        for mode, (broker, state) in enumerate(zip(brokers, states, strict=True)):
            broker.on_bar(int(data.bar_at_ns[t]), data.open[t], data.high[t], data.low[t], data.close[t],
                          data.volume[t])
            inputs = EngineInputs(
                universe=data.universe, bar_at_ns=int(data.bar_at_ns[t]), open=data.open[t], high=data.high[t],
                low=data.low[t], close=data.close[t], volume=data.volume[t], probabilities=probabilities[t],
                positions=broker.positions.copy(), cash=broker.cash, pending=broker.pending_quantities(),
                session_day=int(data.session_day[t]) if data.session_day is not None else 0,
            )
            before = state.to_dict()
            result = step(config, state, inputs, consume=mode == 1, explain=mode == 0)
            if mode == 0:
                assert state.to_dict() == before  # the default step never writes into its argument
                assert result.state is not state
            else:
                assert result.state is state  # updated in place
                assert result.record.events == ()
            for order_id in result.cancels:
                broker.cancel(order_id)
            for intent in result.intents:
                broker.submit(intent)
            results.append(result)
            states[mode] = result.state
        default, in_place = results
        assert in_place.intents == default.intents
        assert in_place.cancels == default.cancels
        assert in_place.state.to_dict() == default.state.to_dict()
        assert np.array_equal(in_place.record.entry_quantity, default.record.entry_quantity)
        assert np.array_equal(in_place.record.exit_quantity, default.record.exit_quantity)
    assert brokers[0].to_dict() == brokers[1].to_dict()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(market())
def test_run_backtest_records_kept_or_not_same_fills_and_equity(case: tuple[MarketData, np.ndarray]) -> None:
    data, probabilities = case
    fast = run_backtest(data, probabilities, engine_config=CONFIG, broker_config=BROKER, cash=50_000.0)
    kept = run_backtest(data, probabilities, engine_config=CONFIG, broker_config=BROKER, cash=50_000.0,
                        keep_records=True, observer=lambda t, broker, result: None)
    assert fast.fills == kept.fills
    assert np.array_equal(fast.equity, kept.equity)
    assert np.array_equal(fast.positions, kept.positions)
    assert fast.records == [] and len(kept.records) == len(data)
    assert any(record.events for record in kept.records) or not kept.fills  # kept records carry the reasons
