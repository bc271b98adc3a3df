from __future__ import annotations

import numpy as np

from tradeloom.domain import IntentPurpose, OrderType, ProductType
from tradeloom.engine import (
    EngineConfig,
    EngineInputs,
    EngineState,
    RiskConfig,
    SignalConfig,
    SizingConfig,
    StopConfig,
    Universe,
    step,
)
from tradeloom.engine.baselines import one_hot

N = 3
UNIVERSE = Universe.simple(["X:A", "X:B", "X:C"])


def inputs(close: list[float], direction: list[int], positions: list[int] | None = None, cash: float = 100_000.0,
           bar: int = 1, **kwargs: object) -> EngineInputs:
    c = np.array(close, dtype=np.float64)
    return EngineInputs(
        universe=UNIVERSE, bar_at_ns=bar, open=c, high=c, low=c, close=c, volume=np.full(N, 1e6),
        probabilities=one_hot(np.array(direction, dtype=np.int8)),
        positions=np.array(positions or [0] * N, dtype=np.int64), cash=cash, pending=np.zeros(N, dtype=np.int64),
        **kwargs,  # type: ignore[arg-type]
    )


CONFIG = EngineConfig(signal=SignalConfig(enter_threshold=0.5, exit_threshold=0.5),
                      sizing=SizingConfig(method="fixed_notional", notional_fraction=0.1))


def test_step_entry_emits_market_order_with_bracket_stop() -> None:
    result = step(CONFIG, EngineState.initial(N, 100_000.0), inputs([100.0, 50.0, 20.0], [1, 0, 0]))
    kinds = [(i.instrument_key, i.order_type, i.purpose, i.quantity) for i in result.intents]
    assert kinds == [("X:A", OrderType.MARKET, IntentPurpose.ENTRY, 100),
                     ("X:A", OrderType.STOP, IntentPurpose.STOP_LOSS, 100)]
    entry, stop = result.intents
    assert stop.parent_client_order_id == entry.client_order_id
    assert float(stop.stop_price) == 95.0  # type: ignore[arg-type]


def test_step_same_inputs_give_same_intents_and_ids() -> None:
    state = EngineState.initial(N, 100_000.0)
    a = step(CONFIG, state, inputs([100.0, 50.0, 20.0], [1, 1, 0]))
    b = step(CONFIG, state, inputs([100.0, 50.0, 20.0], [1, 1, 0]))
    assert a.intents == b.intents and len(a.intents) == 4


def test_step_state_round_trip_through_dict_continues_identically() -> None:
    first = step(CONFIG, EngineState.initial(N, 100_000.0), inputs([100.0, 50.0, 20.0], [1, 0, 0]))
    restored = EngineState.from_dict(first.state.to_dict())
    later = inputs([90.0, 50.0, 20.0], [-1, 0, 0], positions=[100, 0, 0], cash=90_000.0, bar=2)
    assert step(CONFIG, first.state, later).intents == step(CONFIG, restored, later).intents


def test_step_daily_loss_flattens_and_halts_for_the_day() -> None:
    config = CONFIG.model_copy(update={"risk": RiskConfig(daily_loss_limit=0.02, max_drawdown=None)})
    state = step(config, EngineState.initial(N, 100_000.0),
                 inputs([100.0, 50.0, 20.0], [0, 0, 0], positions=[100, 0, 0], cash=90_000.0, session_day=1)).state
    crash = step(config, state, inputs([70.0, 50.0, 20.0], [0, 1, 0], positions=[100, 0, 0], cash=90_000.0,
                                       bar=2, session_day=1))
    assert [(i.instrument_key, i.purpose) for i in crash.intents] == [("X:A", IntentPurpose.EXIT)]
    rules = {(e.rule, e.action) for e in crash.record.events}
    assert ("daily_loss_halt", "halt") in rules and ("halt", "blocked") in rules
    next_day = step(config, crash.state, inputs([70.0, 50.0, 20.0], [0, 1, 0], cash=97_000.0, bar=3, session_day=2))
    assert any(i.purpose is IntentPurpose.ENTRY for i in next_day.intents)


def test_step_kill_switch_flattens_everything_and_blocks_entries() -> None:
    result = step(CONFIG, EngineState.initial(N, 100_000.0),
                  inputs([100.0, 50.0, 20.0], [1, 1, 1], positions=[0, 10, 0], cash=99_500.0, kill_switch=True))
    assert [(i.instrument_key, i.purpose, i.quantity) for i in result.intents] == [("X:B", IntentPurpose.EXIT, 10)]


def test_step_max_positions_keeps_most_confident() -> None:
    config = CONFIG.model_copy(update={"risk": RiskConfig(max_positions=1)})
    p = np.array([[0.0, 0.4, 0.6], [0.0, 0.1, 0.9], [0.0, 0.3, 0.7]])
    base = inputs([100.0, 50.0, 20.0], [0, 0, 0])
    result = step(config, EngineState.initial(N, 100_000.0),
                  EngineInputs(**{**vars(base), "probabilities": p}))
    assert {i.instrument_key for i in result.intents} == {"X:B"}
    blocked = {(e.instrument_key, e.rule) for e in result.record.events if e.action == "blocked"}
    assert blocked == {("X:A", "max_positions"), ("X:C", "max_positions")}


def test_step_volatility_filter_blocks_entry_and_says_why() -> None:
    config = CONFIG.model_copy(update={"risk": RiskConfig(max_realised_vol=0.02)})
    result = step(config, EngineState.initial(N, 100_000.0),
                  inputs([100.0, 50.0, 20.0], [1, 1, 0], features={"realised_vol": np.array([0.05, 0.01, 0.0])}))
    assert {i.instrument_key for i in result.intents} == {"X:B"}
    assert any(e.rule == "volatility_filter" and e.instrument_key == "X:A" for e in result.record.events)


def test_step_intraday_square_off_before_close() -> None:
    config = CONFIG.model_copy(update={"product": ProductType.INTRADAY,
                                       "risk": RiskConfig(square_off_minutes_before_close=15)})
    result = step(config, EngineState.initial(N, 100_000.0),
                  inputs([100.0, 50.0, 20.0], [1, 0, 1], positions=[10, 0, 0], cash=99_000.0,
                         minutes_to_close=np.array([10.0, 10.0, 10.0])))
    assert [(i.instrument_key, i.purpose) for i in result.intents] == [("X:A", IntentPurpose.SQUARE_OFF)]


def test_step_trailing_stop_ratchets_up_only() -> None:
    config = CONFIG.model_copy(update={"stops": StopConfig(stop_loss_pct=0.1, trailing=True)})
    state = step(config, EngineState.initial(N, 100_000.0), inputs([100.0, 50.0, 20.0], [1, 0, 0])).state
    up = step(config, state, inputs([120.0, 50.0, 20.0], [0, 0, 0], positions=[100, 0, 0], cash=90_000.0, bar=2))
    stops = [i for i in up.intents if i.purpose is IntentPurpose.STOP_LOSS]
    assert len(stops) == 1 and float(stops[0].stop_price) == 108.0  # type: ignore[arg-type]
    assert up.cancels == [state.stop_order_id[0]]
    down = step(config, up.state, inputs([110.0, 50.0, 20.0], [0, 0, 0], positions=[100, 0, 0], cash=90_000.0,
                                         bar=3))
    assert down.intents == [] and down.cancels == []


def test_step_var_limit_blocks_entry_into_volatile_book() -> None:
    config = CONFIG.model_copy(update={"risk": RiskConfig(var_limit=0.001, history_bars=20),
                                       "sizing": SizingConfig(method="fixed_notional", notional_fraction=0.2)})
    rng = np.random.default_rng(3)
    state = EngineState.initial(N, 100_000.0, history=20)
    price = np.array([100.0, 50.0, 20.0])
    for bar in range(25):
        price = price * (1 + rng.normal(0, 0.03, N))
        state = step(config, state, inputs(price.tolist(), [0, 0, 0], bar=bar)).state
    result = step(config, state, inputs(price.tolist(), [1, 0, 0], bar=99))
    assert result.intents == []
    assert any(e.rule == "var_limit" for e in result.record.events)


def test_step_correlation_filter_blocks_twin_of_held_position() -> None:
    config = CONFIG.model_copy(update={"risk": RiskConfig(max_correlation=0.8, history_bars=30)})
    rng = np.random.default_rng(9)
    state = EngineState.for_config(config, N, 100_000.0)
    price = np.array([100.0, 50.0, 20.0])
    for bar in range(30):
        shock = rng.normal(0, 0.01, N)
        shock[1] = shock[0]  # B moves exactly with A; C on its own
        price = price * (1 + shock)
        state = step(config, state, inputs(price.tolist(), [0, 0, 0], bar=bar)).state
    result = step(config, state, inputs(price.tolist(), [0, 1, 1], positions=[100, 0, 0], cash=90_000.0, bar=99))
    entered = {i.instrument_key for i in result.intents if i.purpose is IntentPurpose.ENTRY}
    assert entered == {"X:C"}
    assert any(e.rule == "correlation_filter" and e.instrument_key == "X:B" for e in result.record.events)


def test_step_twap_entry_slices_over_bars() -> None:
    from tradeloom.engine import ExecutionConfig

    config = CONFIG.model_copy(update={"execution": ExecutionConfig(algo="twap", slices=4)})
    first = step(config, EngineState.initial(N, 100_000.0), inputs([100.0, 50.0, 20.0], [1, 0, 0]))
    sizes = [i.quantity for i in first.intents if i.purpose is IntentPurpose.ENTRY]
    state = first.state
    for bar in range(2, 5):
        later = step(config, state, inputs([100.0, 50.0, 20.0], [1, 0, 0], positions=[sum(sizes), 0, 0],
                                           cash=100_000.0 - 100 * sum(sizes), bar=bar))
        sizes += [i.quantity for i in later.intents if i.purpose is IntentPurpose.ENTRY]
        state = later.state
    assert sizes == [25, 25, 25, 25]


def test_an_exit_cancels_twap_children_the_participation_cap_left_working() -> None:
    """Children a capped broker fills 20 a bar must not keep buying after the exit is decided (bar 2)."""
    from pipelines.backtest import MarketData, run_backtest
    from tradeloom.engine import BrokerConfig, ExecutionConfig

    config = EngineConfig(signal=SignalConfig(enter_threshold=0.5, exit_threshold=0.5),
                          stops=StopConfig(stop_loss_pct=None),
                          sizing=SizingConfig(method="fixed_quantity", quantity=300),
                          execution=ExecutionConfig(algo="twap", slices=3))
    price = np.full((10, 1), 100.0)
    data = MarketData(Universe.simple(["X:A"]), np.arange(10, dtype=np.int64) * 86_400 * 10**9, price, price, price,
                      price, np.full((10, 1), 200.0))
    direction = np.array([1, 0] + [-1] * 8, dtype=np.int8)
    result = run_backtest(data, one_hot(direction).reshape(10, 1, 3), engine_config=config,
                          broker_config=BrokerConfig(participation_cap=0.1), keep_records=True)
    held = result.positions[:, 0].tolist()
    assert max(held[2:]) == held[2] == 40  # nothing bought after the exit decision
    assert held[-1] == 0
    exit_bar = next(t for t, record in enumerate(result.records) if record.exit_quantity.any())
    assert exit_bar == 2
    after_exit = [fill for fill in result.fills if fill.filled_at_ns > 2 * 86_400 * 10**9]
    assert after_exit and all(fill.purpose is not IntentPurpose.ENTRY for fill in after_exit)


def test_a_sliced_parent_keeps_its_children_through_a_state_round_trip() -> None:
    from tradeloom.engine import ExecutionConfig

    config = CONFIG.model_copy(update={"execution": ExecutionConfig(algo="twap", slices=2)})
    first = step(config, EngineState.initial(N, 100_000.0), inputs([100.0, 50.0, 20.0], [1, 0, 0]))
    child = next(i.client_order_id for i in first.intents if i.purpose is IntentPurpose.ENTRY)
    restored = EngineState.from_dict(first.state.to_dict())
    assert restored.parents[0].children == (child,)
    exit_now = inputs([100.0, 50.0, 20.0], [-1, 0, 0], positions=[25, 0, 0], bar=2)
    assert child in step(config, restored, exit_now).cancels
    assert first.state.parents[0].children == (child,)  # the step left its input state alone
