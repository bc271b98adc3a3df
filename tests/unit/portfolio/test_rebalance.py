"""The portfolio step: deterministic, risk rules bind, reductions before increases."""

from __future__ import annotations

import numpy as np
import pytest

from tradeloom.domain import IntentPurpose, Side
from tradeloom.engine import EngineState, RiskConfig, Universe
from tradeloom.portfolio.config import RebalanceConfig
from tradeloom.portfolio.constraints import WeightConstraints, violations
from tradeloom.portfolio.rebalance import RebalanceInputs, portfolio_step

KEYS = ("X:A", "X:B", "X:C")
UNIVERSE = Universe.simple(KEYS)
CLOSE = np.array([100.0, 50.0, 20.0])
OPEN_RISK = RiskConfig(max_position_fraction=None, max_gross_exposure=None, max_net_exposure=None,
                       max_positions=None, daily_loss_limit=None, max_drawdown=None)


def _inputs(weights: np.ndarray | None, positions: list[int] | None = None, cash: float = 100_000.0,
            bar: int = 1) -> RebalanceInputs:
    held = np.array(positions or [0, 0, 0], dtype=np.int64)
    return RebalanceInputs(UNIVERSE, bar, CLOSE.copy(), held, cash, np.zeros(3, dtype=np.int64), weights)


def test_portfolio_step_same_inputs_identical_intents_and_state() -> None:
    config = RebalanceConfig(risk=OPEN_RISK)
    state = EngineState.initial(3, 100_000.0)
    weights = np.array([0.5, 0.3, 0.2])
    first = portfolio_step(config, state, _inputs(weights))
    second = portfolio_step(config, state, _inputs(weights.copy()))
    assert first.intents == second.intents
    assert first.state.to_dict() == second.state.to_dict()
    np.testing.assert_array_equal(first.approved, second.approved)
    # The argument state is not mutated.
    assert state.bars_seen == 0


def test_portfolio_step_open_limits_buys_target_quantities() -> None:
    config = RebalanceConfig(risk=OPEN_RISK, cash_buffer=0.0)
    result = portfolio_step(config, EngineState.initial(3, 100_000.0), _inputs(np.array([0.5, 0.3, 0.2])))
    # 50% of 100k at 100 = 500 shares; 30k / 50 = 600; 20k / 20 = 1000.
    assert [(i.instrument_key, i.side, i.quantity) for i in result.intents] == [
        ("X:A", Side.BUY, 500), ("X:B", Side.BUY, 600), ("X:C", Side.BUY, 1000)]


def test_portfolio_step_rotation_sends_reductions_before_increases() -> None:
    config = RebalanceConfig(risk=RiskConfig(max_gross_exposure=1.0, max_position_fraction=None,
                                             daily_loss_limit=None, max_drawdown=None), cash_buffer=0.0)
    # Fully invested in A; rotate into B. The gross limit only fits B once A's sale is counted.
    result = portfolio_step(config, EngineState.initial(3, 100_000.0),
                            _inputs(np.array([0.0, 1.0, 0.0]), positions=[1000, 0, 0], cash=0.0))
    assert [i.purpose for i in result.intents] == [IntentPurpose.EXIT, IntentPurpose.ENTRY]
    assert result.intents[0].quantity == 1000 and result.intents[1].quantity == 2000


def test_portfolio_step_huge_weights_capped_by_position_and_gross_limits() -> None:
    risk = RiskConfig(max_position_fraction=0.3, max_gross_exposure=0.8, daily_loss_limit=None, max_drawdown=None)
    config = RebalanceConfig(risk=risk, cash_buffer=0.0)
    result = portfolio_step(config, EngineState.initial(3, 100_000.0), _inputs(np.array([50.0, 50.0, 50.0])))
    notional = result.approved * CLOSE
    assert (notional <= 0.3 * 100_000 + 1e-9).all()
    assert notional.sum() <= 0.8 * 100_000 + 1e-9
    assert any(event.rule == "position_cap" for event in result.events)
    assert any(event.rule == "gross_exposure" for event in result.events)


def test_portfolio_step_drawdown_halt_flattens_and_blocks() -> None:
    config = RebalanceConfig(risk=RiskConfig(max_drawdown=0.1, daily_loss_limit=None))
    state = EngineState.initial(3, 100_000.0)
    state.equity_peak = 150_000.0  # equity 100k is a 33% drawdown
    result = portfolio_step(config, state, _inputs(np.array([0.2, 0.2, 0.2]), positions=[100, 0, 0],
                                                   cash=90_000.0))
    assert result.state.halted_for_drawdown
    assert [(i.instrument_key, i.side, i.purpose) for i in result.intents] == [
        ("X:A", Side.SELL, IntentPurpose.EXIT)]
    np.testing.assert_array_equal(result.approved, [0, 0, 0])


def test_portfolio_step_correlated_addition_blocked_by_correlation_limit() -> None:
    config = RebalanceConfig(risk=OPEN_RISK.model_copy(update={"max_correlation": 0.8}), cash_buffer=0.0)
    state = EngineState.initial(3, 100_000.0)
    rng = np.random.default_rng(0)
    common = rng.normal(0, 0.01, 60)
    state.returns[:60] = np.column_stack([common, common + rng.normal(0, 0.001, 60), rng.normal(0, 0.01, 60)])
    state.returns_count = 60
    state.last_close = CLOSE.copy()
    result = portfolio_step(config, state, _inputs(np.array([0.3, 0.3, 0.3]), positions=[300, 0, 0],
                                                   cash=70_000.0))
    bought = {i.instrument_key for i in result.intents if i.side is Side.BUY}
    assert "X:B" not in bought and "X:C" in bought
    assert any(e.rule == "correlation_filter" and e.instrument_key == "X:B" for e in result.events)


def test_portfolio_step_no_target_holds_positions() -> None:
    result = portfolio_step(RebalanceConfig(risk=OPEN_RISK), EngineState.initial(3, 100_000.0),
                            _inputs(None, positions=[10, 20, 30]))
    assert result.intents == []
    np.testing.assert_array_equal(result.approved, [10, 20, 30])


def test_violations_over_cap_and_wrong_sum_reported() -> None:
    found = violations(np.array([0.7, 0.2]), WeightConstraints(max_weight=0.5))
    assert len(found) == 2 and "max_weight" in found[0]
    assert violations(np.array([0.5, 0.5]), WeightConstraints(max_weight=0.5)) == []


def test_rebalance_client_order_ids_stable_across_bars() -> None:
    config = RebalanceConfig(risk=OPEN_RISK)
    state = EngineState.initial(3, 100_000.0)
    a = portfolio_step(config, state, _inputs(np.array([0.3, 0.3, 0.3]), bar=5))
    b = portfolio_step(config, state, _inputs(np.array([0.3, 0.3, 0.3]), bar=6))
    assert {i.client_order_id for i in a.intents}.isdisjoint({i.client_order_id for i in b.intents})
    assert a.intents[0].client_order_id == portfolio_step(config, state, _inputs(
        np.array([0.3, 0.3, 0.3]), bar=5)).intents[0].client_order_id


@pytest.mark.parametrize("weights", [np.array([-1.0, 0.0, 0.0])])
def test_portfolio_step_short_target_sells_down_to_negative(weights: np.ndarray) -> None:
    result = portfolio_step(RebalanceConfig(risk=OPEN_RISK, cash_buffer=0.0), EngineState.initial(3, 100_000.0),
                            _inputs(weights, positions=[100, 0, 0], cash=90_000.0))
    assert [(i.side, i.quantity, i.purpose) for i in result.intents] == [
        (Side.SELL, 100, IntentPurpose.EXIT), (Side.SELL, 1000, IntentPurpose.ENTRY)]


def test_portfolio_step_on_a_state_without_a_returns_ring_trades_the_same() -> None:
    # A state that `step` started (no rule read returns) reaching the portfolio step, e.g. after a hot reload
    # from a direction model to a sizing policy: no ring to write, the same orders as with one.
    config = RebalanceConfig(risk=OPEN_RISK, cash_buffer=0.0)
    weights = np.array([0.5, 0.3, 0.2])
    results = []
    for history in (0, 250):
        state = EngineState.initial(3, 100_000.0, history)
        first = portfolio_step(config, state, _inputs(weights, bar=1))
        results.append(portfolio_step(config, first.state, _inputs(weights * 0.5, [500, 600, 1000], 50_000.0, bar=2)))
    assert results[0].intents == results[1].intents
    assert results[0].state.returns.shape == (0, 3) and results[1].state.returns_count == 1


def test_cash_a_working_buy_will_spend_is_not_spent_again() -> None:
    """Cash 100k with a working buy of 900 A at 100 (90k): B's new buy gets the 10k left, not 100k again."""
    universe = Universe.simple(("X:A", "X:B"))
    risk = RiskConfig(max_position_fraction=1.0, max_gross_exposure=2.0, max_net_exposure=2.0, max_positions=None,
                      daily_loss_limit=None, max_drawdown=None)
    config = RebalanceConfig(risk=risk, cash_buffer=0.0, min_trade_fraction=0.0, rebalance_every=1)
    close = np.array([100.0, 100.0])
    result = portfolio_step(config, EngineState.initial(2, 100_000.0, 10), RebalanceInputs(
        universe, 1, close, np.array([0, 0]), 100_000.0, np.array([900, 0]), np.array([0.9, 0.9])))
    buys = sum(intent.quantity * 100.0 for intent in result.intents if intent.side is Side.BUY)
    assert 0 < buys <= 10_000.0, [(i.instrument_key, i.side, i.quantity) for i in result.intents]


def test_flipping_a_dust_position_exits_it_in_full_and_lands_on_the_target() -> None:
    """Held +1 share (below the dust threshold), target short half the equity: the book ends at -500."""
    risk = RiskConfig(max_position_fraction=0.5, max_positions=None, daily_loss_limit=None, max_drawdown=None)
    config = RebalanceConfig(risk=risk, cash_buffer=0.0, min_trade_fraction=0.002, rebalance_every=1)
    result = portfolio_step(config, EngineState.initial(1, 100_000.0, 10), RebalanceInputs(
        Universe.simple(("X:A",)), 1, np.array([100.0]), np.array([1]), 99_900.0, np.array([0]), np.array([-0.5])))
    after = 1 + sum(int(intent.side) * intent.quantity for intent in result.intents)
    assert after == -500, [(intent.side, intent.quantity, intent.purpose) for intent in result.intents]
